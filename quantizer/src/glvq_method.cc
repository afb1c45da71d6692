// GLVQ as a whole-model method (LCD.md "GLVQ"): the calibration text is run
// through the full-precision model once to collect H = E[x x^T] of every
// decoder linear's input (CollectCalibrationStats with gram_for), then every
// weight is quantized by QuantizeGlvq (lcd/quantizer/glvq.h) into the
// lattice format. Contract of the options in lcd/quantizer/quantize_model.h.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/calibration.h"
#include "lcd/quantizer/glvq.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/tokenizer.h"
#include "src/model_method.h"

namespace lcd::quantizer::internal {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

absl::StatusOr<std::vector<float>> ToF32(const runtime::TensorView& t) {
  kernels::DType dt;
  switch (t.dtype) {
    case runtime::StDType::kF32: dt = kernels::DType::kF32; break;
    case runtime::StDType::kF16: dt = kernels::DType::kF16; break;
    case runtime::StDType::kBF16: dt = kernels::DType::kBF16; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(std::string(t.name), ": only F32, F16 and BF16 weights can be quantized"));
  }
  if (t.shape.size() != 2) return absl::InvalidArgumentError(absl::StrCat(std::string(t.name), " is not a 2-D matrix"));
  std::vector<float> out(static_cast<size_t>(t.num_elements()));
  kernels::ConvertToF32(t.data, dt, out.size(), out.data());
  return out;
}

}  // namespace

absl::StatusOr<ModelMethodResult> RunGlvq(const QuantizeModelOptions& o, const std::vector<std::string>& weights) {
  auto progress = [&](const char* phase, double fraction, const std::string& line) {
    if (o.log) o.log(line);
    if (o.progress) o.progress(phase, fraction, line);
  };
  const Clock::time_point start = Clock::now();
  ModelMethodResult res;
  const std::set<std::string> wanted(weights.begin(), weights.end());

  // H = E[x x^T] of every quantized weight's input.
  CalibrationStats stats;
  {
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Tokenizer> tokenizer, runtime::LoadTokenizer(o.model_dir));
    LCD_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, TokenizeTextFile(o.calib_path, *tokenizer, o.calib_tokens));
    runtime::ModelOptions mopts;
    mopts.num_threads = o.threads;
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> model, runtime::Model::Load(o.model_dir, mopts));
    CalibrationOptions copts;
    copts.window = o.calib_window;
    copts.bos = tokenizer->bos_id();
    copts.gram_for = [&](std::string_view name) { return wanted.count(std::string(name)) > 0; };
    copts.progress = [&](int64_t done, int64_t total) {
      progress("calibrate", 0.1 * kModelMethodProgressEnd * static_cast<double>(done) / std::max<int64_t>(total, 1),
               absl::StrFormat("[glvq] calibration window %d/%d, elapsed %.1fs", done, total, Seconds(start)));
    };
    LCD_ASSIGN_OR_RETURN(stats, CollectCalibrationStats(*model, tokens, copts));
    LCD_ASSIGN_OR_RETURN(std::string sha, runtime::Sha256File(o.calib_path));
    res.calibration = absl::StrCat("file:", std::filesystem::path(o.calib_path).filename().string(), " sha256:", sha,
                                   " tokens:", stats.text_tokens);
  }

  GlvqOptions go;
  go.bits = o.bits;
  go.group_size = o.group_size;
  go.dim = o.glvq_dim;
  go.steps = o.glvq_steps;
  go.reround_every = o.glvq_reround_every;
  go.lr = o.glvq_lr;
  go.lambda = o.glvq_lambda;
  go.allocate_bits = o.glvq_allocate_bits;

  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Checkpoint> ckpt, runtime::Checkpoint::Open(o.model_dir));
  kernels::ThreadPool pool(o.threads);
  const Clock::time_point qstart = Clock::now();
  double init_sum = 0, final_sum = 0;
  int64_t up = 0, down = 0, groups = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string& name = weights[i];
    LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt->Get(name));
    LCD_ASSIGN_OR_RETURN(std::vector<float> w, ToF32(t));
    const int64_t rows = t.shape[0], cols = t.shape[1];
    const InputGram* h = stats.FindGram(name);
    if (h == nullptr || h->cols != cols) {
      return absl::InternalError(absl::StrCat("glvq: calibration has no E[x x^T] of width ", cols, " for ", name));
    }
    GlvqReport rep;
    absl::StatusOr<QuantizedMatrix> q = QuantizeGlvq(w.data(), rows, cols, h->xtx.data(), go, &rep, &pool);
    if (!q.ok()) return absl::Status(q.status().code(), absl::StrCat(name, ": ", q.status().message()));
    const int64_t ng = q->layout.groups();
    init_sum += rep.loss_init / static_cast<double>(ng);
    final_sum += rep.loss_final / static_cast<double>(ng);
    up += rep.groups_up;
    down += rep.groups_down;
    groups += ng;
    res.matrices.emplace(name, *std::move(q));
    const double elapsed = Seconds(qstart);
    const double eta = elapsed / static_cast<double>(i + 1) * static_cast<double>(weights.size() - i - 1);
    progress("quantize",
             kModelMethodProgressEnd * (0.1 + 0.9 * static_cast<double>(i + 1) / static_cast<double>(weights.size())),
             absl::StrFormat("[glvq] tensor %d/%d %s [%d x %d] d=%d: output error %.4f -> %.4f (mean per group), "
                             "widths +1/-1: %d/%d of %d groups, elapsed %.1fs, ETA %.1fs",
                             i + 1, weights.size(), name, rows, cols, go.dim, rep.loss_init / ng, rep.loss_final / ng,
                             rep.groups_up, rep.groups_down, ng, elapsed, eta));
  }
  res.params["glvq_dim"] = std::to_string(go.dim);
  res.params["glvq_steps"] = std::to_string(go.steps);
  res.params["glvq_reround_every"] = std::to_string(go.reround_every);
  res.params["glvq_lr"] = absl::StrFormat("%g", go.lr);
  res.params["glvq_lambda"] = absl::StrFormat("%g", go.lambda);
  res.params["glvq_allocate_bits"] = go.allocate_bits ? "1" : "0";
  const double n = static_cast<double>(std::max<size_t>(weights.size(), 1));
  res.quality["glvq_output_error_init"] = init_sum / n;
  res.quality["glvq_output_error_final"] = final_sum / n;
  res.quality["glvq_groups_up"] = static_cast<double>(up);
  res.quality["glvq_groups_down"] = static_cast<double>(down);
  res.quality["glvq_groups"] = static_cast<double>(groups);
  res.quality["glvq_seconds"] = Seconds(start);
  return res;
}

}  // namespace lcd::quantizer::internal
