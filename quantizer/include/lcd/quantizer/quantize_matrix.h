// Post-training quantizers for one weight matrix: the per-(row, group)
// baselines of LCD.md ("Baselines"; k-means is step 3, "Density-based
// centroid initialisation"), producing the canonical layout of
// lcd/kernels/quant_linear.h that ArtifactWriter stores.
//
// Shapes: w is fp32 row-major [rows][cols] (rows = out_features); a group is
// `group_size` consecutive columns of one row, the last group of a row is
// short when group_size does not divide cols. The result owns its arrays:
// codes [rows][CodeRowBytes()] (LSB-first bit stream per row, padding bits
// zero), params fp16 [rows][groups][P].
//
// Errors (absl::Status, never exceptions): InvalidArgument naming the fault
// for a null or non-finite w, rows/cols < 1, group_size < 1, bits outside the
// method's range, negative or non-finite importance, and weights whose
// parameters would overflow fp16.
//
// Determinism: the result is a pure function of the inputs; it does not
// depend on `pool` or on its thread count (rows are independent and each row
// is computed by one thread).
//
// Thread safety: the functions share no state; `pool` follows ThreadPool's
// rule (one ParallelFor at a time per pool), so callers using the same pool
// from several threads must serialise.
#ifndef LCD_QUANTIZER_QUANTIZE_MATRIX_H_
#define LCD_QUANTIZER_QUANTIZE_MATRIX_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/artifact_writer.h"

namespace lcd::quantizer {

inline constexpr int kRtnMinBits = 1;
inline constexpr int kRtnMaxBits = 8;     // kAffine's range.
inline constexpr int kKmeansMinBits = 1;
inline constexpr int kKmeansMaxBits = 4;  // kCodebook's range (P = 2^b fp16 centroids).

// Round-to-nearest, asymmetric uniform, kAffine format (P = 2: scale, zero):
//   lo = min(0, min w), hi = max(0, max w)   over the group
//   scale = fp16((hi - lo) / (2^b - 1)), replaced by the smallest positive
//           fp16 (2^-24) when it rounds to 0 (an all-zero group), so nothing
//           divides by zero
//   zero  = clamp(round(-lo / scale), 0, 2^b - 1)     (an integer, exact in fp16)
//   q     = clamp(round(w / scale) + zero, 0, 2^b - 1)
//   decode: w' = scale * (q - zero)
// round() is std::round (ties away from zero). Including 0 in [lo, hi] is
// GPTQ/AutoGPTQ's convention: the zero point is then always a code, and a
// group of one sign (a constant group included) keeps its full range instead
// of being cut at 0 by the clamp. Codes are computed from the stored fp16
// scale, so the stored decode is the one that was optimised. bits in [1, 8].
absl::StatusOr<QuantizedMatrix> QuantizeRtn(const float* w, int64_t rows, int64_t cols, int bits,
                                            int64_t group_size, kernels::ThreadPool* pool = nullptr);

// Weighted k-means (Lloyd) per (row, group) into the kCodebook format with
// K = 2^b fp16 centroids, minimising sum_c importance[c] * (w_c - p[q_c])^2.
//   importance: [cols] non-negative weights of the input columns (E[x_j^2]
//     from calibration), or nullptr for uniform weights. A group whose
//     importance is all zero is clustered with uniform weights.
//   Seeds: (1) LCD.md's: the group's values sorted, cut into K bins of
//     equal importance mass (an element goes to the bin holding the midpoint
//     of its mass), each centroid its bin's weighted mean; (2) the same with
//     equal-count bins (only when importance is given); (3) K levels evenly
//     spaced over [min, max] (RTN's grid). Lloyd runs from each and the
//     lowest weighted objective wins (ties keep the earlier seed): from (1)
//     alone Lloyd lands in poor local optima when a few columns or outliers
//     carry the mass (up to 8x the weighted error at 3 bits on Gaussian
//     weights with 1% outliers; 5-30% more weight error on stories260K;
//     docs/QUALITY.md has the ablation, including its perplexity).
//     max_iters = 0 returns seed (1) itself, fp16-rounded.
//   Lloyd: at most max_iters (>= 0) rounds of nearest-centroid assignment
//     (ties to the lower centroid) and weighted-mean update; stops early when
//     no assignment changes. A centroid whose cluster has no mass keeps its
//     value, except an empty cluster (no elements), which is moved onto the
//     element with the largest weighted error (lowest column on ties): the
//     objective never rises, so the result is never worse than seed (1)
//     beyond the fp16 rounding of the centroids.
//   Output: centroids rounded to fp16 and sorted ascending; every code is
//     then re-chosen as a nearest fp16 centroid of its weight.
// bits in [1, 4].
absl::StatusOr<QuantizedMatrix> QuantizeKmeans(const float* w, int64_t rows, int64_t cols, int bits,
                                               int64_t group_size, const float* importance,
                                               int max_iters = 20, kernels::ThreadPool* pool = nullptr);

// sum_{r,c} importance[c] * (w[r][c] - decode(q)[r][c])^2 in double, with
// importance nullptr meaning 1 everywhere. Decodes kAffine, kCodebook and
// kBinaryCoded from the documented formulas (fp16 params widened to fp32,
// arithmetic in fp32). InvalidArgument when q's layout is not [rows][cols] or
// its arrays are the wrong size; Unimplemented for any other format.
absl::StatusOr<double> WeightedSquaredError(const float* w, int64_t rows, int64_t cols,
                                            const QuantizedMatrix& q, const float* importance = nullptr);

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_QUANTIZE_MATRIX_H_
