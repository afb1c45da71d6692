// Round-to-nearest into the affine format (formulas in quantize_matrix.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "src/quant_common.h"

namespace lcd::quantizer {
namespace {

constexpr uint16_t kFp16SmallestSubnormal = 0x0001;  // 2^-24
constexpr uint16_t kFp16Inf = 0x7C00;

// Quantizes one group of n weights; returns false when its scale overflows
// fp16 (|weights| beyond what the format can describe).
bool QuantizeGroup(const float* w, int64_t n, int bits, int64_t col0, uint8_t* code_row,
                   uint16_t* params) {
  const int maxq = (1 << bits) - 1;
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  uint16_t scale16 = kernels::FloatToFp16((hi - lo) / static_cast<float>(maxq));
  if ((scale16 & 0x7FFF) >= kFp16Inf) return false;
  if (scale16 == 0) scale16 = kFp16SmallestSubnormal;
  const float scale = kernels::Fp16ToFloat(scale16);
  const float zero = std::clamp(std::round(-lo / scale), 0.0f, static_cast<float>(maxq));
  params[0] = scale16;
  params[1] = kernels::FloatToFp16(zero);  // An integer <= 255: exact.
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::clamp(std::round(w[i] / scale) + zero, 0.0f, static_cast<float>(maxq));
    internal::PutCode(code_row, col0 + i, bits, static_cast<uint32_t>(q));
  }
  return true;
}

}  // namespace

absl::StatusOr<QuantizedMatrix> QuantizeRtn(const float* w, int64_t rows, int64_t cols, int bits,
                                            int64_t group_size, kernels::ThreadPool* pool) {
  LCD_RETURN_IF_ERROR(
      internal::ValidateMatrixArgs("rtn", w, rows, cols, bits, kRtnMinBits, kRtnMaxBits, group_size));
  QuantizedMatrix q = internal::AllocateQuantized(kernels::QuantFormat::kAffine, bits, rows, cols, group_size);
  const int64_t groups = q.layout.groups();
  const int64_t row_bytes = q.layout.CodeRowBytes();
  std::vector<uint8_t> overflow(static_cast<size_t>(rows), 0);
  kernels::ParallelFor(pool, rows, /*min_chunk=*/4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * group_size;
        const int64_t n = std::min(group_size, cols - c0);
        if (!QuantizeGroup(w + r * cols + c0, n, bits, c0, q.codes.data() + r * row_bytes,
                           q.params.data() + (r * groups + g) * 2)) {
          overflow[r] = 1;
        }
      }
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    if (overflow[r]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rtn: row ", r, " has a group whose range needs a scale beyond fp16 (max 65504)"));
    }
  }
  return q;
}

}  // namespace lcd::quantizer
