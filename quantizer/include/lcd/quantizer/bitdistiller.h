// BitDistiller's quantizers and its asymmetric clipping search (LCD.md
// "BitDistiller"; Du et al., ACL 2024, code DD-DuDa/BitDistiller), as
// post-training quantizers into the canonical layout of
// lcd/kernels/quant_linear.h. The QAT twin that recomputes them every
// forward is lcd/quantizer/train/bitdistiller_loop.h; both use the group
// functions below, so a trained model decodes exactly as it is stored.
//
// Formats (a group = group_size consecutive columns of one row, the last one
// short when group_size does not divide cols; lo, hi = min and max of the
// group's weights, 0 NOT included):
//   kInt (INT-b asymmetric, stored as kAffine, P = 2 fp16 [scale, zero]):
//     scale = fp16(max(hi - lo, 1e-5) / (2^b - 1))   (the smallest positive
//             fp16, 2^-24, if that rounds to 0)
//     zero  = clamp(-round(lo / scale), 0, 2^b - 1)  (an integer)
//     q     = clamp(round(w / scale) + zero, 0, 2^b - 1)
//     decode: w' = scale * (q - zero)
//   kNf3 (NF3 asymmetric, stored as kCodebook at 3 bits, P = 8 fp16 levels):
//     the normalised levels kNf3Levels (ascending; index 3 is 0), negative
//     ones scaled by |lo|, positive ones by |hi|: level[k] =
//     fp16(kNf3Levels[k] * (k < 3 ? |lo| : |hi|)). A weight w >= 0 takes,
//     of the levels 3..7, the one whose normalised value is nearest to
//     w / |hi| (0 when hi == 0); w < 0 takes, of 0..3, the one nearest to
//     w / |lo|; a tie goes to the higher level (the reference's thresholds,
//     kNf3Thresholds, compared with >=).
// round() is std::round (ties away from zero, the reference's STE Round);
// scales and ratios are computed in fp32 from the fp16-rounded scale for
// kInt (so the stored decode is the one that was searched and trained).
//
// Asymmetric clipping (the reference's auto_2clip_layer): per (row, group),
// for a = 0, .05, ..., .45 (outer) and b = 0, .05, ..., .45 (inner) — the
// full 10 x 10 grid, as the reference runs it — the group is clamped to
// [lo * (1 - b), hi * (1 - a)] (min(max(w, lo'), hi'), so a one-signed group
// whose bounds cross ends at hi'), quantized in the format with the clamped
// group's own min/max, and scored by the output error on the calibration
// tokens, err = (w - w')^T H_gg (w - w') with H = E[x x^T] of the layer
// input (InputGram, all calibration tokens; the reference samples 512) and
// H_gg the group's diagonal block, w the unclipped weights; the first
// strictly smallest err wins. The latent weight is then clamped to the
// winner's range (the reference's apply_clip), and the quantizer recomputes
// lo/hi from the clamped group. Without H (q_proj and k_proj: "due to qk
// bmm, it is hard to clip precisely") a = b = 0.
//
// Errors: InvalidArgument for a null or non-finite w, rows/cols/group_size
// < 1, bits outside [2, 8] for kInt or != 3 for kNf3, an H whose width is
// not cols, and groups whose scale overflows fp16.
//
// Determinism and threads: rows are independent and each row is computed by
// one thread; results do not depend on the pool.
#ifndef LCD_QUANTIZER_BITDISTILLER_H_
#define LCD_QUANTIZER_BITDISTILLER_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/artifact_writer.h"
#include "lcd/quantizer/calibration.h"

namespace lcd::quantizer {

enum class BitDistillerFormat { kInt, kNf3 };

// The format for a bit width: NF3 at 3 bits (the paper's 3-bit choice),
// INT-b asymmetric otherwise (2 bits: the paper's INT2; 4 bits: our choice).
inline BitDistillerFormat BitDistillerFormatFor(int bits) {
  return bits == 3 ? BitDistillerFormat::kNf3 : BitDistillerFormat::kInt;
}

// The reference's NF3 levels and the midpoints between neighbours.
inline constexpr std::array<float, 8> kNf3Levels = {
    -1.0f, -0.5350227355957031f, -0.2469314038753510f, 0.0f,
    0.1833375245332718f, 0.3819939494132996f, 0.6229856610298157f, 1.0f};
inline constexpr std::array<float, 7> kNf3Thresholds = {
    -0.7675113677978516f, -0.39097706973552704f, -0.1234657019376755f, 0.0916687622666359f,
    0.2826657369732857f, 0.5024898052215576f, 0.8114928305149078f};

// Parameters per group: 2 (kInt) or 8 (kNf3).
inline int BitDistillerParamsPerGroup(BitDistillerFormat f) { return f == BitDistillerFormat::kNf3 ? 8 : 2; }

// One group of n weights (already clipped): codes[n] and its fp16 params.
// Returns false when a parameter overflows fp16 (a range beyond 65504).
bool BitDistillerQuantizeGroup(BitDistillerFormat f, int bits, const float* w, int64_t n, uint8_t* codes,
                               uint16_t* params);
// The decoded value of `code` under the fp16 params (exactly as the kernels'
// scalar reference decodes it).
float BitDistillerDecodeCode(BitDistillerFormat f, const uint16_t* params, uint8_t code);

// The clipping search's outcome for one matrix: per (row, group) the chosen
// shrink steps (a = a_step * 0.05 on the max, b = b_step * 0.05 on the min),
// the range [lo, hi] the latent weight is clamped to, and the error of the
// winner and of no clipping (a = b = 0), in H's units.
struct BitDistillerClip {
  int64_t rows = 0, groups = 0;
  std::vector<uint8_t> a_step, b_step;  // [rows][groups]
  std::vector<float> lo, hi;            // [rows][groups]
  std::vector<double> err, err_noclip;  // [rows][groups]; 0 when H was not given.
};

// The search described above over w [rows][cols]. gram == nullptr: no
// search (a = b = 0, lo/hi the group's own min/max).
absl::StatusOr<BitDistillerClip> BitDistillerClipSearch(const float* w, int64_t rows, int64_t cols, int bits,
                                                        int64_t group_size, const InputGram* gram,
                                                        kernels::ThreadPool* pool = nullptr);

// w[r][c] = min(max(w[r][c], lo), hi) with the (row, group)'s range.
void ApplyBitDistillerClip(const BitDistillerClip& clip, float* w, int64_t cols, int64_t group_size);

// w (already clipped) into kAffine (kInt) or kCodebook (kNf3) with the
// group's own min/max, as documented above.
absl::StatusOr<QuantizedMatrix> QuantizeBitDistiller(const float* w, int64_t rows, int64_t cols, int bits,
                                                     int64_t group_size, kernels::ThreadPool* pool = nullptr);

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_BITDISTILLER_H_
