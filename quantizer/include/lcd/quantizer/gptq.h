// GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers", 2023) for one weight matrix, into the
// kAffine format of lcd/kernels/quant_linear.h with QuantizeRtn's grid
// (quantize_matrix.h), so the artifact stores exactly what was optimised.
//
// Objective: for W [rows][cols] (rows = out_features) and the second moment
// of its input H = E[x x^T] [cols][cols], choose the quantized Ŵ that keeps
// the layer output error tr((W - Ŵ) H (W - Ŵ)^T) small, one column at a
// time, feeding each column's rounding error back into the columns not yet
// quantized through the inverse Hessian. Rows are independent: every row
// runs the same column loop with the same H.
//
// Hessian preparation (PrepareGptqHessian, shared by the weights that read
// one input, e.g. q/k/v and gate/up), as in the reference implementation:
//   1. dead columns: H_jj == 0 (the input is always 0 there) gets H_jj = 1;
//      QuantizeGptq zeroes W[:, j] for them (the stored weight is then 0).
//   2. act_order: the processing order `perm` sorts the columns by
//      descending H_jj (stable: ties keep the lower column first); without
//      it perm is the identity. H is permuted to Hp = H[perm][perm].
//   3. dampening: Hp += percdamp * mean(diag Hp) * I.
//   4. U: the upper Cholesky factor of Hp^-1 (U^T U = Hp^-1), in double.
//      Computed as J L^-1 J with L the lower Cholesky factor of J Hp J (J
//      reverses the index order), which equals the reference's
//      cholesky(cholesky_inverse(cholesky(Hp)), upper=True) (the Cholesky
//      factor is unique) with one factorisation fewer.
//   The scale of H does not matter (the reference uses 2 X X^T / n).
//
// The column loop (QuantizeGptq), per row, over processing positions p in
// order, with the row held in double:
//   q_p   = the code of w_p on its group's grid (below)
//   e_p   = (w_p - decode(q_p)) / U_pp
//   w_j  -= e_p * U_pj                           for every j > p
// implemented with the reference's lazy batch updates: inside a block of at
// most block_size columns the update is applied to the block's columns at
// once, to the columns after the block once per block (the same arithmetic
// up to summation order).
//
// Grid of a group and code of a weight: QuantizeRtn's formulas in its fp32
// arithmetic, applied to the current (double) weights rounded to fp32:
//   lo = min(0, min w), hi = max(0, max w)
//   scale = fp16((hi - lo) / (2^b - 1)), 2^-24 when it rounds to 0
//   zero  = clamp(round(-lo / scale), 0, 2^b - 1)
//   q     = clamp(round(w / scale) + zero, 0, 2^b - 1)
// round() ties away from zero. The error fed back is w - scale * (q - zero)
// with the double w (the decode is exact in double). With no feedback (H
// diagonal) GPTQ is therefore QuantizeRtn bit for bit. A group is group_size consecutive columns of
// the ORIGINAL order (the artifact's layout), the last one short when
// group_size does not divide cols. Which weights define it:
//   * without act_order, the error-updated weights of the group's columns at
//     the moment the loop reaches its first column (all errors of the
//     columns before it applied). Blocks are cut at every group start as well
//     as every block_size columns so that this holds exactly; the reference
//     instead reads stale in-block values when group_size is smaller than
//     (and not aligned with) its 128-column block: a decision, documented.
//   * with act_order (the loop visits a group's columns out of order), every
//     group's grid is computed before the loop from the original weights
//     (dead columns zeroed): AutoGPTQ's "static groups". The alternative
//     (grids in the order columns are visited, g_idx) cannot be stored by the
//     kAffine format, whose groups are consecutive columns.
//
// Errors (absl::Status, never exceptions): InvalidArgument for null or
// non-finite w or h, rows/cols < 1, group_size < 1, bits outside [1, 8], a
// Hessian of another width, percdamp negative or non-finite, block_size < 1,
// a negative diagonal entry of H, H + damping not positive definite (the
// message names the column and says to raise the dampening), and a group
// whose scale overflows fp16.
//
// Determinism: the result is a pure function of the inputs, independent of
// `pool` and its thread count (each row's arithmetic is the same whichever
// thread runs it and whichever rows share its chunk).
//
// Thread safety: the functions share no state; `pool` follows ThreadPool's
// rule. A GptqHessian is immutable once prepared and may be shared.
#ifndef LCD_QUANTIZER_GPTQ_H_
#define LCD_QUANTIZER_GPTQ_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/artifact_writer.h"
#include "lcd/quantizer/calibration.h"

namespace lcd::quantizer {

inline constexpr int kGptqMinBits = 1;
inline constexpr int kGptqMaxBits = 8;  // kAffine's range.

struct GptqOptions {
  double percdamp = 0.01;     // Dampening, as a fraction of the mean diagonal of H.
  bool act_order = false;     // Visit columns by descending H_jj (static groups).
  int64_t block_size = 128;   // Columns per lazy batch update.
};

// The inverse-Hessian factor of one input, ready for QuantizeGptq.
struct GptqHessian {
  int64_t cols = 0;
  bool act_order = false;
  int64_t block_size = 128;
  double damp = 0.0;               // The value added to the diagonal.
  std::vector<int32_t> perm;       // perm[p] = original column processed at position p.
  std::vector<uint8_t> dead;       // [cols], original order: 1 where H_jj == 0.
  std::vector<double> u;           // U [cols][cols] row-major, upper, processing order.
};

// Steps 1-4 above for a full symmetric h [cols][cols] (row-major, double).
absl::StatusOr<GptqHessian> PrepareGptqHessian(const double* h, int64_t cols, const GptqOptions& options);

// GPTQ of w [rows][cols] (fp32, row-major) at `bits` with groups of
// group_size columns, into kAffine.
absl::StatusOr<QuantizedMatrix> QuantizeGptq(const float* w, int64_t rows, int64_t cols, int bits,
                                             int64_t group_size, const GptqHessian& hessian,
                                             kernels::ThreadPool* pool = nullptr);

// The same, preparing the Hessian from a calibration matrix.
absl::StatusOr<QuantizedMatrix> QuantizeGptq(const float* w, int64_t rows, int64_t cols, int bits,
                                             int64_t group_size, const InputGram& gram, const GptqOptions& options,
                                             kernels::ThreadPool* pool = nullptr);

// The layer output error tr((W - Ŵ) H (W - Ŵ)^T) in double, Ŵ decoded from q
// (kAffine or kCodebook, fp16 params widened, decode in fp32) and h [cols][cols]
// full symmetric. InvalidArgument when q's layout is not [rows][cols].
absl::StatusOr<double> LayerOutputError(const float* w, int64_t rows, int64_t cols, const QuantizedMatrix& q,
                                        const double* h);

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_GPTQ_H_
