// Reconstruction error of a quantized matrix against its source weights.
// Decodes from the documented formulas (quant_linear.h) rather than through
// the kernels' DequantizeRows, so it stays an independent check of them.
#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lcd/kernels/dtype.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "src/quant_common.h"

namespace lcd::quantizer {

absl::StatusOr<double> WeightedSquaredError(const float* w, int64_t rows, int64_t cols, const QuantizedMatrix& q,
                                            const float* importance) {
  const kernels::QuantLayout& l = q.layout;
  if (l.rows != rows || l.cols != cols) {
    return absl::InvalidArgumentError(absl::StrCat("error metric: quantized matrix is ", l.rows, "x", l.cols,
                                                   ", weights are ", rows, "x", cols));
  }
  int64_t p = 0;
  switch (l.format) {
    case kernels::QuantFormat::kAffine:
      p = 2;
      break;
    case kernels::QuantFormat::kCodebook:
      p = int64_t{1} << l.bits;
      break;
    case kernels::QuantFormat::kBinaryCoded:
      p = l.bits + 1;
      break;
    case kernels::QuantFormat::kLattice: {
      // Not per code: decoded through the format's one definition.
      if (absl::Status s = kernels::ValidateQuantLayout(l); !s.ok()) return s;
      if (q.codes.size() != static_cast<size_t>(l.CodeBytes()) ||
          q.params.size() != static_cast<size_t>(rows * l.groups()) ||
          q.lattice.size() != static_cast<size_t>(l.LatticeParamCount())) {
        return absl::InvalidArgumentError("error metric: quantized matrix arrays do not match its layout");
      }
      std::vector<float> row(static_cast<size_t>(cols));
      double total = 0.0;
      for (int64_t r = 0; r < rows; ++r) {
        kernels::DequantizeRows(q.view(), r, r + 1, row.data());
        for (int64_t c = 0; c < cols; ++c) {
          const double d = static_cast<double>(w[r * cols + c]) - row[c];
          total += (importance ? importance[c] : 1.0) * d * d;
        }
      }
      return total;
    }
    default:
      return absl::UnimplementedError("error metric: only affine, codebook, binary-coded and lattice formats are decoded here");
  }
  if (l.bits < 1 || l.bits > 8 || l.group_size < 1 ||
      q.codes.size() != static_cast<size_t>(l.CodeBytes()) ||
      q.params.size() != static_cast<size_t>(rows * l.groups() * p)) {
    return absl::InvalidArgumentError("error metric: quantized matrix arrays do not match its layout");
  }
  const int64_t groups = l.groups();
  const int64_t row_bytes = l.CodeRowBytes();
  std::vector<float> gp(static_cast<size_t>(p));
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const uint16_t* params = q.params.data() + (r * groups + g) * p;
      for (int64_t k = 0; k < p; ++k) gp[k] = kernels::Fp16ToFloat(params[k]);
      const int64_t end = std::min(cols, (g + 1) * l.group_size);
      for (int64_t c = g * l.group_size; c < end; ++c) {
        const uint32_t code = internal::GetCode(q.codes.data() + r * row_bytes, c, l.bits);
        float decoded = 0.0f;
        if (l.format == kernels::QuantFormat::kAffine) {
          decoded = gp[0] * (static_cast<float>(code) - gp[1]);
        } else if (l.format == kernels::QuantFormat::kCodebook) {
          decoded = gp[code];
        } else {  // kBinaryCoded: sum_i p[i] * (2 bit_i - 1) + p[b].
          for (int i = 0; i < l.bits; ++i) decoded += gp[i] * static_cast<float>(2 * static_cast<int>((code >> i) & 1u) - 1);
          decoded += gp[l.bits];
        }
        const double d = static_cast<double>(w[r * cols + c]) - decoded;
        total += (importance ? importance[c] : 1.0) * d * d;
      }
    }
  }
  return total;
}

}  // namespace lcd::quantizer
