// R2Q (LCD.md "R2Q"; Chen et al., arXiv 2511.21736): 2 bits per weight as
// two residual 1-bit quantizers per (row, group), stored in the kBinaryCoded
// format of lcd/kernels/quant_linear.h with b = 2 planes and P = 3 fp16
// parameters per group: p = (alpha1, alpha2, beta = 0).
//
// Code convention (kBinaryCoded, b = 2): a weight's code q in [0, 4) holds
// B1 in bit 0 and B2 in bit 1, a bit 1 meaning +1 and 0 meaning -1:
//   w_hat = alpha1 * (2*bit0(q) - 1) + alpha2 * (2*bit1(q) - 1) + beta,
// beta = 0 always (the format's offset, unused by R2Q).
//
// The closed form per group of n weights w (R2qFitGroup, refit = 0):
//   alpha1 = mean |w|,  B1 = sign(w)
//   R = w - alpha1 * B1,  alpha2 = mean |R|,  B2 = sign(R)
// with sign(0) = +1 (our decision; the paper's equations were not readable):
// a zero weight, or a zero residual, takes the + code, so the four levels
// +-alpha1 +- alpha2 are reached by a rule that never leaves a weight
// without a code. The means are plain (unweighted), as the paper states them.
//
// Refinement (refit = N > 0; LCD.md's "permitted improvement"): N rounds of
//   (a) joint least-squares refit of (alpha1, alpha2) given (B1, B2):
//       minimise sum_j h_j (w_j - alpha1 B1_j - alpha2 B2_j)^2, i.e. the 2x2
//       normal equations [[H, C], [C, H]] (alpha1, alpha2) = (r1, r2) with
//       H = sum h_j, C = sum h_j B1_j B2_j, r_i = sum h_j w_j Bi_j; when
//       H - |C| <= 1e-9 H (B2 = +-B1 on every weighted column: only
//       alpha1 +- alpha2 is determined) the minimum-norm solution
//       alpha1 = r1 / (2H), alpha2 = sign(C) * alpha1;
//   (b) re-assignment of every weight to the nearest of the four levels
//       (R2qNearestCode).
// h_j = importance[column] (E[x_j^2] from calibration) or 1 without it; a
// group whose importance is all zero is fitted with h = 1. Each step
// minimises the weighted objective E = sum_j h_j (w_j - w_hat_j)^2 over its
// own variables, so E never rises from one round to the next (up to fp32
// rounding of the stored alphas; tests/python/test_r2q.py checks it).
//
// Arithmetic: the closed form and the normal equations in double, alphas
// stored as float; re-assignment compares levels and distances in float
// (the same R2qNearestCode the training loop uses).
#ifndef LCD_QUANTIZER_R2Q_H_
#define LCD_QUANTIZER_R2Q_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/artifact_writer.h"

namespace lcd::quantizer {

inline constexpr int kR2qBits = 2;    // Two 1-bit planes; the only width R2Q has.
inline constexpr int kR2qParams = 3;  // alpha1, alpha2, beta (= 0) per group.

// The value of code q (bit 0: B1, bit 1: B2) under (alpha1, alpha2), in
// fp32 exactly as kernels::DecodeCode computes kBinaryCoded with beta = 0.
inline float R2qLevel(int q, float alpha1, float alpha2) {
  return alpha1 * static_cast<float>(2 * (q & 1) - 1) + alpha2 * static_cast<float>(2 * ((q >> 1) & 1) - 1) + 0.0f;
}

// The code of the level +-alpha1 +-alpha2 nearest to w (|w - level| in
// fp32). Ties go to the larger level value (the rule sign(0) = +1 extended),
// and between codes of equal value (alpha2 = 0, or |alpha1| = |alpha2|) to
// the lower code. When alpha1 >= alpha2 >= 0 this picks the level the
// residual rule B1 = sign(w), B2 = sign(w - alpha1 B1), sign(0) = +1, picks
// (boundaries at -alpha1, 0, alpha1; up to fp32 rounding there).
uint8_t R2qNearestCode(float w, float alpha1, float alpha2);

// Fits one group of n >= 1 weights (the contract above). importance: n
// non-negative values or nullptr. Writes alpha[0..2) and codes[0..n).
// objective: nullptr or refit + 1 doubles, the weighted objective E after
// the closed form and after each refinement round.
void R2qFitGroup(const float* w, const float* importance, int64_t n, int refit, float* alpha, uint8_t* codes,
                 double* objective = nullptr);

// R2Q of a [rows][cols] fp32 matrix in groups of group_size columns (the
// last group of a row short when group_size does not divide cols) into the
// kBinaryCoded format (bits 2, P = 3). Alphas are rounded to fp16 for
// storage; with refit > 0 every code is then re-chosen as the nearest level
// of the stored (fp16) alphas, with refit = 0 the closed-form codes are kept
// as they are. importance: [cols] or nullptr (used only by the refit).
// Errors (InvalidArgument naming the fault): null or non-finite w,
// rows/cols/group_size < 1, refit < 0, negative or non-finite importance,
// an alpha that does not fit fp16. Deterministic for any pool.
absl::StatusOr<QuantizedMatrix> QuantizeR2q(const float* w, int64_t rows, int64_t cols, int64_t group_size,
                                            const float* importance, int refit,
                                            kernels::ThreadPool* pool = nullptr);

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_R2Q_H_
