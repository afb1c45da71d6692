// BitDistiller (LCD.md "BitDistiller"; Du et al., ACL 2024): asymmetric
// clipping search per (row, group) on E[x x^T] of the calibration tokens
// (q_proj and k_proj skipped), then self-distillation QAT with CAKLD on
// teacher-generated sequences, straight-through through the rounding
// (BitDistillerLoopQuantizer: the range follows the latent weights), AdamW
// at a constant learning rate (the reference's; kd_lr_schedule overrides);
// stored as kAffine (INT2 / INT4 asymmetric) or kCodebook (NF3 at 3 bits).
// A DistillPlan for the distillation driver (distill.h); the options'
// contract is in lcd/quantizer/quantize_model.h.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lcd/base/status_macros.h"
#include "lcd/quantizer/bitdistiller.h"
#include "lcd/quantizer/train/bitdistiller_loop.h"
#include "src/distill.h"
#include "src/model_method.h"

namespace lcd::quantizer::internal {
namespace {

namespace tr = train;

// The reference skips the query and key projections ("due to qk bmm, it is
// hard to clip precisely") and never quantizes lm_head.
bool Searched(std::string_view weight) {
  return weight.find("q_proj") == std::string_view::npos && weight.find("k_proj") == std::string_view::npos &&
         weight.find("lm_head") == std::string_view::npos;
}

}  // namespace

absl::StatusOr<ModelMethodResult> RunBitDistiller(const QuantizeModelOptions& o,
                                                  const std::vector<std::string>& weights) {
  DistillPlan plan;
  plan.tag = "bitdistiller";
  plan.init_name = o.bitdistiller_clip ? "asym-clip-search" : "minmax-init";
  plan.trained = o.bitdistiller_range_grad ? "latent weights (STE, range gradient)" : "latent weights (STE)";
  plan.lr_schedule = "constant";
  plan.settings = absl::StrCat("clip=", o.bitdistiller_clip, " range_grad=", o.bitdistiller_range_grad);
  if (o.bitdistiller_clip) plan.gram_for = [](std::string_view w) { return Searched(w); };
  plan.make = [&](const std::string&, int64_t rows,
                  int64_t cols) -> absl::StatusOr<std::unique_ptr<tr::LoopQuantizer>> {
    return std::make_unique<tr::BitDistillerLoopQuantizer>(rows, cols, o.group_size, o.bits,
                                                           o.bitdistiller_range_grad);
  };
  // Totals over the searched groups, for the figures.
  double err_sum = 0.0, noclip_sum = 0.0, a_sum = 0.0, b_sum = 0.0;
  int64_t cells = 0;
  plan.init = [&](const std::string& weight, float* w, float*, tr::LoopQuantizer& q, const CalibrationStats& stats,
                  kernels::ThreadPool* pool) -> absl::Status {
    const InputGram* gram = nullptr;
    if (o.bitdistiller_clip && Searched(weight)) {
      gram = stats.FindGram(weight);
      if (gram == nullptr) return absl::InternalError("calibration has no E[x x^T] for the clipping search");
    }
    LCD_ASSIGN_OR_RETURN(BitDistillerClip clip,
                         BitDistillerClipSearch(w, q.rows(), q.cols(), o.bits, o.group_size, gram, pool));
    ApplyBitDistillerClip(clip, w, q.cols(), o.group_size);
    q.Assign(w, nullptr, q.codes().data(), pool);
    if (gram != nullptr) {
      double e = 0.0, e0 = 0.0, a = 0.0, b = 0.0;
      for (size_t i = 0; i < clip.err.size(); ++i) {
        e += clip.err[i];
        e0 += clip.err_noclip[i];
        a += 0.05 * clip.a_step[i];
        b += 0.05 * clip.b_step[i];
      }
      err_sum += e;
      noclip_sum += e0;
      a_sum += a;
      b_sum += b;
      cells += static_cast<int64_t>(clip.err.size());
      if (o.log) {
        o.log(absl::StrFormat("[bitdistiller] %s: clip search, output error %.4g -> %.4g, mean a %.3f, b %.3f",
                              weight, e0, e, a / clip.err.size(), b / clip.err.size()));
      }
    }
    return absl::OkStatus();
  };
  plan.pack = [&](const std::string&, const float* w, const float*,
                  const tr::LoopQuantizer& q) -> absl::StatusOr<QuantizedMatrix> {
    return QuantizeBitDistiller(w, q.rows(), q.cols(), o.bits, o.group_size);
  };
  LCD_ASSIGN_OR_RETURN(ModelMethodResult res, RunDistillation(o, weights, plan));
  res.params["format"] = o.bits == 3 ? "nf3-asym (codebook)" : absl::StrCat("int", o.bits, "-asym (affine)");
  res.params["clip_search"] = o.bitdistiller_clip ? "a,b in {0,.05,...,.45}, q/k skipped" : "none";
  if (cells > 0) {
    res.quality["clip_err_reduction"] = noclip_sum > 0.0 ? 1.0 - err_sum / noclip_sum : 0.0;
    res.quality["clip_mean_a"] = a_sum / static_cast<double>(cells);
    res.quality["clip_mean_b"] = b_sum / static_cast<double>(cells);
  }
  return res;
}

}  // namespace lcd::quantizer::internal
