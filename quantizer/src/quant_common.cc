#include "src/quant_common.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "lcd/kernels/dtype.h"

namespace lcd::quantizer::internal {

absl::Status ValidateMatrixArgs(const char* method, const float* w, int64_t rows, int64_t cols,
                                int bits, int min_bits, int max_bits, int64_t group_size) {
  if (bits < min_bits || bits > max_bits) {
    return absl::InvalidArgumentError(
        absl::StrCat(method, ": bits must be in [", min_bits, ", ", max_bits, "], got ", bits));
  }
  if (group_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(method, ": group_size must be >= 1, got ", group_size));
  }
  if (rows < 1 || cols < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(method, ": matrix must be at least 1x1, got ", rows, "x", cols));
  }
  if (w == nullptr) return absl::InvalidArgumentError(absl::StrCat(method, ": weights are null"));
  // One pass up front, so a NaN can never turn into a silently wrong code.
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(w[i])) {
      return absl::InvalidArgumentError(absl::StrCat(method, ": non-finite weight at row ", i / cols,
                                                     ", column ", i % cols));
    }
  }
  return absl::OkStatus();
}

QuantizedMatrix AllocateQuantized(kernels::QuantFormat format, int bits, int64_t rows, int64_t cols,
                                  int64_t group_size) {
  QuantizedMatrix q;
  q.layout.format = format;
  q.layout.bits = bits;
  q.layout.rows = rows;
  q.layout.cols = cols;
  q.layout.group_size = group_size;
  const int64_t p = q.layout.ParamsPerGroup();
  q.codes.assign(static_cast<size_t>(q.layout.CodeBytes()), 0);
  q.params.assign(static_cast<size_t>(rows * q.layout.groups() * p), 0);
  return q;
}

absl::StatusOr<std::vector<float>> MatrixToF32(const runtime::TensorView& t) {
  kernels::DType dt;
  switch (t.dtype) {
    case runtime::StDType::kF32: dt = kernels::DType::kF32; break;
    case runtime::StDType::kF16: dt = kernels::DType::kF16; break;
    case runtime::StDType::kBF16: dt = kernels::DType::kBF16; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(std::string(t.name), " has dtype ",
                                                     std::string(runtime::StDTypeName(t.dtype)),
                                                     "; only F32, F16 and BF16 weights can be quantized"));
  }
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(t.name), " is not a 2-D matrix"));
  }
  std::vector<float> out(static_cast<size_t>(t.num_elements()));
  kernels::ConvertToF32(t.data, dt, out.size(), out.data());
  return out;
}

}  // namespace lcd::quantizer::internal
