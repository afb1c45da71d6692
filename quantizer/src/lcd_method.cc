// LCD (LCD.md "LCD (ours)", steps 1, 2, 3, 5 and 7): calibration sequences (a
// text file or teacher-generated), optional adaptive activation smoothing
// folded into the student (o.lcd_smooth, lcd/quantizer/smoothing.h; the
// init's importance then E[x_j^2]/s_j^2), optional per-token int8
// activations in the student and the artifact (o.act_bits 8), density-based
// centroid initialisation
// (QuantizeKmeans with E[x_j^2] importance), then knowledge distillation end
// to end with CAKLD, training centroids and latent weights of every
// codebook-quantized linear (CodebookLoopQuantizer), codes re-assigned to the
// nearest centroid every kd_reassign_every steps: a DistillPlan for the
// distillation driver (distill.h). The contract of the options is in
// lcd/quantizer/quantize_model.h.
#include "src/model_method.h"

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "lcd/quantizer/smoothing.h"
#include "lcd/quantizer/train/loop_quantizer.h"
#include "src/distill.h"
#include "src/quant_common.h"

namespace lcd::quantizer::internal {
namespace {

namespace tr = train;

// fp16 centroids and packed codes of a QuantizedMatrix (kCodebook) into the
// training layout: fp32 centroids [rows][groups][k], one code per weight.
void Unpack(const QuantizedMatrix& q, float* centroids, uint8_t* codes) {
  const kernels::QuantLayout& l = q.layout;
  for (size_t i = 0; i < q.params.size(); ++i) centroids[i] = kernels::Fp16ToFloat(q.params[i]);
  const int64_t row_bytes = l.CodeRowBytes();
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t c = 0; c < l.cols; ++c) {
      codes[r * l.cols + c] = static_cast<uint8_t>(GetCode(q.codes.data() + r * row_bytes, c, l.bits));
    }
  }
}

// The trained centroids (rounded to fp16) and codes back into a QuantizedMatrix.
absl::StatusOr<QuantizedMatrix> Pack(const std::string& name, const float* centroids, const uint8_t* codes,
                                     int bits, int64_t rows, int64_t cols, int64_t group_size) {
  QuantizedMatrix q = AllocateQuantized(kernels::QuantFormat::kCodebook, bits, rows, cols, group_size);
  for (size_t i = 0; i < q.params.size(); ++i) {
    if (!std::isfinite(centroids[i]) || std::abs(centroids[i]) > 65504.0f) {
      return absl::InternalError(absl::StrCat(name, ": trained centroid ", i, " is ", centroids[i],
                                              ", not representable in fp16"));
    }
    q.params[i] = kernels::FloatToFp16(centroids[i]);
  }
  const int64_t row_bytes = q.layout.CodeRowBytes();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) PutCode(q.codes.data() + r * row_bytes, c, bits, codes[r * cols + c]);
  }
  return q;
}

// A codebook matrix decoded to fp32 [rows][cols].
std::vector<float> Dequantize(const QuantizedMatrix& q) {
  const kernels::QuantLayout& l = q.layout;
  std::vector<float> centroids(q.params.size());
  std::vector<uint8_t> codes(static_cast<size_t>(l.rows * l.cols));
  Unpack(q, centroids.data(), codes.data());
  const int64_t groups = (l.cols + l.group_size - 1) / l.group_size, k = int64_t{1} << l.bits;
  std::vector<float> w(codes.size());
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t c = 0; c < l.cols; ++c) {
      w[r * l.cols + c] = centroids[(r * groups + c / l.group_size) * k + codes[r * l.cols + c]];
    }
  }
  return w;
}

}  // namespace

absl::StatusOr<ModelMethodResult> RunLcd(const QuantizeModelOptions& o, const std::vector<std::string>& weights) {
  DistillPlan plan;
  plan.tag = "lcd";
  plan.init_name = "kmeans-init";
  plan.trained = "centroids, latent weights";
  const int64_t k = int64_t{1} << o.bits;
  std::map<std::string, std::vector<float>> input_scales;  // Filled by the smoothing (plan.prepare).
  plan.make = [&](const std::string&, int64_t rows, int64_t cols) -> absl::StatusOr<std::unique_ptr<tr::LoopQuantizer>> {
    return std::make_unique<tr::CodebookLoopQuantizer>(tr::CodebookShape{rows, cols, o.group_size, k});
  };
  // LCD.md step 3: density-based init (importance-weighted k-means).
  plan.init = [&](const std::string& weight, float* w, float* centroids, tr::LoopQuantizer& q,
                  const CalibrationStats& stats, kernels::ThreadPool* pool) -> absl::Status {
    const std::vector<float>* imp = stats.Find(weight);
    if (imp == nullptr || static_cast<int64_t>(imp->size()) != q.cols()) {
      return absl::InternalError(absl::StrCat("calibration has no statistics of width ", q.cols()));
    }
    std::vector<float> smoothed_imp;
    if (auto it = input_scales.find(weight); it != input_scales.end()) {
      // The weight was smoothed (W diag s): its input is x / s.
      smoothed_imp.resize(imp->size());
      for (size_t j = 0; j < imp->size(); ++j) {
        smoothed_imp[j] = static_cast<float>(static_cast<double>((*imp)[j]) / (static_cast<double>(it->second[j]) * it->second[j]));
      }
      imp = &smoothed_imp;
    }
    LCD_ASSIGN_OR_RETURN(QuantizedMatrix m, QuantizeKmeans(w, q.rows(), q.cols(), o.bits, o.group_size, imp->data(),
                                                           o.kmeans_iters, pool));
    Unpack(m, centroids, q.codes().data());
    return absl::OkStatus();
  };
  // LCD.md step 7: fp16 centroids; the codes the last steps trained with.
  plan.finalize = [](const std::string&, float*, float* centroids, tr::LoopQuantizer& q) {
    const int64_t n = static_cast<const tr::CodebookLoopQuantizer&>(q).shape().num_centroids();
    for (int64_t i = 0; i < n; ++i) centroids[i] = kernels::Fp16ToFloat(kernels::FloatToFp16(centroids[i]));
  };
  plan.pack = [&](const std::string& weight, const float*, const float* centroids,
                  const tr::LoopQuantizer& q) -> absl::StatusOr<QuantizedMatrix> {
    return Pack(weight, centroids, q.codes().data(), o.bits, q.rows(), q.cols(), o.group_size);
  };
  // LCD.md step 2: adaptive activation smoothing, chosen on the k-means
  // init's output error (smoothing.h) and folded into the student.
  const std::vector<double> alphas = o.lcd_smooth_alphas.empty() ? DefaultSmoothingAlphas() : o.lcd_smooth_alphas;
  std::string grid;
  for (double a : alphas) absl::StrAppend(&grid, grid.empty() ? "" : ",", absl::StrFormat("%g", a));
  // (Empty for the defaults: checkpoints of earlier versions stay resumable.)
  if (o.lcd_smooth || o.act_bits != 0) {
    plan.settings = absl::StrCat("smooth=", o.lcd_smooth ? grid : "off", " act_bits=", o.act_bits);
  }
  plan.act_bits = o.act_bits;
  if (o.lcd_smooth) {
    plan.gram_for = [](std::string_view w) { return w != "lm_head.weight"; };
    plan.prepare = [&](tr::TrainModel& student, const CalibrationStats& stats,
                       ModelMethodResult& res) -> absl::StatusOr<std::vector<std::string>> {
      kernels::ThreadPool* pool = student.pool();
      DequantFn kmeans = [&](const float* w, int64_t rows, int64_t cols,
                             const float* importance) -> absl::StatusOr<std::vector<float>> {
        LCD_ASSIGN_OR_RETURN(QuantizedMatrix m,
                             QuantizeKmeans(w, rows, cols, o.bits, o.group_size, importance, o.kmeans_iters, pool));
        return Dequantize(m);
      };
      LCD_ASSIGN_OR_RETURN(SmoothingReport r, SmoothModel(student, stats, alphas, kmeans));
      input_scales = r.input_scales;
      std::string chosen;
      double off = 0.0, err = 0.0;
      for (size_t i = 0; i < r.inputs.size(); ++i) {
        const std::string a = r.alphas[i] < 0 ? "off" : absl::StrFormat("%g", r.alphas[i]);
        std::string name = r.inputs[i];
        if (name.starts_with("model.layers.")) name = name.substr(std::string_view("model.layers.").size());
        absl::StrAppend(&chosen, chosen.empty() ? "" : " ", name, "=", a);
        off += r.error_off[i];
        err += r.error[i];
        if (o.log) {
          o.log(absl::StrFormat("[lcd] smoothing %s: alpha %s, init output error %.4e -> %.4e", r.inputs[i], a,
                                r.error_off[i], r.error[i]));
        }
      }
      if (o.log) {
        o.log(absl::StrFormat("[lcd] smoothing: summed init output error %.4e -> %.4e (%.1f%%)", off, err,
                              off > 0 ? 100.0 * (err - off) / off : 0.0));
      }
      res.params["smooth_chosen"] = chosen;
      res.quality["smooth_init_error_off"] = off;
      res.quality["smooth_init_error"] = err;
      return r.changed_dense;
    };
  }
  LCD_ASSIGN_OR_RETURN(ModelMethodResult res, RunDistillation(o, weights, plan));
  res.params["kmeans_iters"] = std::to_string(o.kmeans_iters);
  res.params["smooth"] = o.lcd_smooth ? "on" : "off";
  if (o.lcd_smooth) res.params["smooth_alphas"] = grid;
  res.params["act_bits"] = std::to_string(o.act_bits);
  return res;
}

}  // namespace lcd::quantizer::internal
