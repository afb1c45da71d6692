// Scalar twin of QuantLinear: the canonical codes as stored, params widened
// to fp32 once at pack time, every weight decoded with DecodeCode and
// multiplied in fp32. Written for clarity; it is the oracle the AVX2 designs
// are tested against and the fallback on CPUs without AVX2.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/quant_linear_internal.h"

namespace lcd::kernels::reference {
namespace {

class ReferencePackedQuantMatrix final : public PackedQuantMatrix {
 public:
  explicit ReferencePackedQuantMatrix(const QuantMatrixView& w)
      : PackedQuantMatrix(w.layout),
        codes_(w.codes, w.codes + w.layout.CodeBytes()),
        params_(static_cast<size_t>(w.layout.ParamCount())) {
    for (size_t i = 0; i < params_.size(); ++i) params_[i] = Fp16ToFloat(w.params[i]);
  }

  uint64_t BytesRead() const override { return codes_.size() + params_.size() * sizeof(float); }
  std::string Describe() const override {
    return absl::StrCat("reference ", std::string(QuantFormatName(layout_.format)),
                        " b=", layout_.bits, " g=", layout_.group_size,
                        " canonical codes, fp32 params");
  }
  QuantKernel kernel() const override { return QuantKernel::kReference; }
  Isa isa() const override { return Isa::kReference; }

 protected:
  void Run(const QuantActivations& x, const float* bias, float* y,
           ThreadPool* pool) const override {
    const QuantLayout& l = layout_;
    const int64_t P = l.ParamsPerGroup();
    const int64_t row_bytes = l.CodeRowBytes();
    const int64_t m = x.m();
    ParallelFor(pool, l.rows, 8, [&](int64_t begin, int64_t end) {
      std::vector<float> w(static_cast<size_t>(l.cols));
      for (int64_t r = begin; r < end; ++r) {
        const uint8_t* code_row = codes_.data() + r * row_bytes;
        for (int64_t c = 0; c < l.cols; ++c) {
          const float* gp = params_.data() + (r * l.groups() + c / l.group_size) * P;
          w[c] = DecodeCode(l.format, l.bits, gp, ReadCodeBits(code_row, c * l.bits, l.bits));
        }
        for (int64_t t = 0; t < m; ++t) {
          const float* xt = x.x() + t * l.cols;
          float acc = 0.0f;
          for (int64_t c = 0; c < l.cols; ++c) acc += xt[c] * w[c];
          y[t * l.rows + r] = acc + (bias ? bias[r] : 0.0f);
        }
      }
    });
  }

 private:
  std::vector<uint8_t> codes_;
  std::vector<float> params_;
};

}  // namespace

std::unique_ptr<PackedQuantMatrix> PackQuantReference(const QuantMatrixView& w) {
  return std::make_unique<ReferencePackedQuantMatrix>(w);
}

}  // namespace lcd::kernels::reference
