// R2Q (LCD.md "R2Q"): every decoder linear as two residual 1-bit quantizers
// per (row, group), initialised by the closed form (lcd/quantizer/r2q.h;
// with r2q_refit > 0 refined by importance-weighted least squares on E[x_j^2]
// of the calibration sequences), then trained inside the distillation loop
// of distill.h (CAKLD against the full-precision model; alphas and latent
// weights train, signs straight-through, codes re-assigned to the nearest
// level every kd_reassign_every steps: R2qLoopQuantizer). kd_steps = 0 is the
// post-training R2Q. Stored as kBinaryCoded (alpha1, alpha2, beta = 0 in
// fp16). The contract of the options is in lcd/quantizer/quantize_model.h.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/quantizer/r2q.h"
#include "lcd/quantizer/train/r2q_loop_quantizer.h"
#include "src/distill.h"
#include "src/model_method.h"
#include "src/quant_common.h"

namespace lcd::quantizer::internal {
namespace {

namespace tr = train;

float RoundFp16(float x) { return kernels::Fp16ToFloat(kernels::FloatToFp16(x)); }

// alphas [rows][groups][2] (already fp16 values) and one code per weight
// into the kBinaryCoded artifact matrix.
absl::StatusOr<QuantizedMatrix> Pack(const float* alphas, const tr::R2qLoopQuantizer& q) {
  QuantizedMatrix m =
      AllocateQuantized(kernels::QuantFormat::kBinaryCoded, kR2qBits, q.rows(), q.cols(), q.group_size());
  const int64_t n = q.rows() * q.groups();
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 2; ++k) {
      const float a = alphas[i * 2 + k];
      if (!std::isfinite(a) || std::abs(a) > 65504.0f) {
        return absl::InternalError(absl::StrCat("trained alpha", k + 1, " of (row, group) ", i, " is ", a,
                                                ", not representable in fp16"));
      }
      m.params[i * kR2qParams + k] = kernels::FloatToFp16(a);
    }
    m.params[i * kR2qParams + 2] = kernels::FloatToFp16(0.0f);
  }
  const int64_t row_bytes = m.layout.CodeRowBytes();
  const std::vector<uint8_t>& codes = q.codes();
  for (int64_t r = 0; r < q.rows(); ++r) {
    for (int64_t c = 0; c < q.cols(); ++c) PutCode(m.codes.data() + r * row_bytes, c, kR2qBits, codes[r * q.cols() + c]);
  }
  return m;
}

}  // namespace

absl::StatusOr<ModelMethodResult> RunR2q(const QuantizeModelOptions& o, const std::vector<std::string>& weights) {
  DistillPlan plan;
  plan.tag = "r2q";
  plan.init_name = o.r2q_refit > 0 ? absl::StrCat("r2q-closed-form+refit", o.r2q_refit) : "r2q-closed-form";
  plan.trained = "alphas, latent weights";
  plan.settings = absl::StrCat("refit=", o.r2q_refit);
  plan.make = [&](const std::string&, int64_t rows,
                  int64_t cols) -> absl::StatusOr<std::unique_ptr<tr::LoopQuantizer>> {
    return std::make_unique<tr::R2qLoopQuantizer>(rows, cols, o.group_size);
  };
  // The closed form per (row, group); the refit weighs columns by E[x_j^2].
  plan.init = [&](const std::string& weight, float* w, float* alphas, tr::LoopQuantizer& q,
                  const CalibrationStats& stats, kernels::ThreadPool* pool) -> absl::Status {
    const float* imp = nullptr;
    if (o.r2q_refit > 0) {
      const std::vector<float>* s = stats.Find(weight);
      if (s == nullptr || static_cast<int64_t>(s->size()) != q.cols()) {
        return absl::InternalError(absl::StrCat("calibration has no statistics of width ", q.cols()));
      }
      imp = s->data();
    }
    const int64_t cols = q.cols(), gs = o.group_size, groups = (cols + gs - 1) / gs;
    uint8_t* codes = q.codes().data();
    for (int64_t i = 0; i < q.rows() * cols; ++i) {
      if (!std::isfinite(w[i])) return absl::InvalidArgumentError(absl::StrCat("non-finite weight at index ", i));
    }
    kernels::ParallelFor(pool, q.rows(), 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t c0 = g * gs, n = std::min(cols, c0 + gs) - c0;
          R2qFitGroup(w + r * cols + c0, imp ? imp + c0 : nullptr, n, o.r2q_refit, alphas + (r * groups + g) * 2,
                      codes + r * cols + c0);
        }
      }
    });
    return absl::OkStatus();
  };
  // fp16 alphas, as stored. Without training, a refined init's codes follow
  // the stored alphas (as QuantizeR2q does); after training, the codes the
  // last steps trained with are kept (as LCD keeps its codes).
  plan.finalize = [&](const std::string&, float* w, float* alphas, tr::LoopQuantizer& q) {
    const int64_t n = static_cast<const tr::R2qLoopQuantizer&>(q).groups() * q.rows() * 2;
    for (int64_t i = 0; i < n; ++i) alphas[i] = RoundFp16(alphas[i]);
    if (o.kd_steps == 0 && o.r2q_refit > 0) q.Assign(w, alphas, q.codes().data(), nullptr);
  };
  plan.pack = [&](const std::string&, const float*, const float* alphas,
                  const tr::LoopQuantizer& q) -> absl::StatusOr<QuantizedMatrix> {
    return Pack(alphas, static_cast<const tr::R2qLoopQuantizer&>(q));
  };
  LCD_ASSIGN_OR_RETURN(ModelMethodResult res, RunDistillation(o, weights, plan));
  res.params["r2q_refit"] = std::to_string(o.r2q_refit);
  res.params["r2q_sign_zero"] = "+1";
  res.params["r2q_assign"] = "nearest of +-alpha1 +-alpha2";
  return res;
}

}  // namespace lcd::quantizer::internal
