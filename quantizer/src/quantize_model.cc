// The offline quantization driver (contract in quantize_model.h).
#include "lcd/quantizer/quantize_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <utility>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/artifact_writer.h"
#include "lcd/quantizer/calibration.h"
#include "lcd/quantizer/methods.h"
#include "lcd/quantizer/perplexity.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/model_config.h"
#include "lcd/runtime/tokenizer.h"
#include "src/model_method.h"
#include "src/provenance.h"
#include "src/quant_common.h"

namespace lcd::quantizer {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kLinearSuffixes[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                           "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                           "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                           "mlp.down_proj.weight"};

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

absl::Status ValidateOptions(const QuantizeModelOptions& o) {
  const MethodInfo* method = FindMethod(o.method);
  if (method == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown method '", o.method, "' (", MethodNames(", "), ")"));
  }
  if (method->distills) {
    if (o.lm_head_bits != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(o.method, " keeps lm_head dense; --quantize-lm-head is for rtn/kmeans"));
    }
    if (o.kd_steps < 0 || o.kd_block_steps < 0 || o.kd_batch < 1 || o.kd_reassign_every < 0 || o.kd_samples < 2 ||
        !(o.kd_lr >= 0.0) || !(o.kd_block_lr >= 0.0) || !(o.kd_temperature > 0.0)) {
      return absl::InvalidArgumentError(absl::StrCat(o.method,
                                                     ": steps, block steps and reassign-every must be >= 0, batch >= 1, "
                                                     "samples >= 2, lr and block lr >= 0, temperature > 0"));
    }
  }
  if (o.kd_lr_scale != "none" && o.kd_lr_scale != "rms") {
    return absl::InvalidArgumentError(absl::StrCat("lr scale must be none or rms, got '", o.kd_lr_scale, "'"));
  }
  if (o.act_bits != 0 && o.act_bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("activation bits must be 8 (or 0: fp), got ", o.act_bits));
  }
  if ((o.act_bits != 0 || o.lcd_smooth) && o.method != "lcd") {
    return absl::InvalidArgumentError(absl::StrCat("--smooth and --act-bits are for --method lcd, not ", o.method));
  }
  for (double a : o.lcd_smooth_alphas) {
    if (!(a >= 0.0 && a <= 1.0)) return absl::InvalidArgumentError(absl::StrCat("smoothing alpha ", a, " is not in [0, 1]"));
  }
  if (o.method == "r2q") {
    if (o.bits != 2) return absl::InvalidArgumentError(absl::StrCat("r2q is 2 bits (two 1-bit planes), got --bits ", o.bits));
    if (o.r2q_refit < 0) return absl::InvalidArgumentError(absl::StrCat("r2q: refit rounds must be >= 0, got ", o.r2q_refit));
  }
  if (o.kd_merge_split_tau != 0.0 && (o.method != "lcd" || !o.kd_speculative || !(o.kd_merge_split_tau > 0.0) ||
                                      !(o.kd_merge_split_tau < 1.0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "merge-split-tau must be in (0, 1) and is for --method lcd --speculative (centroids judged by the KD loss), got ",
        o.kd_merge_split_tau, " with --method ", o.method, o.kd_speculative ? " --speculative" : ""));
  }
  if (o.kd_speculative_scope != "model" && o.kd_speculative_scope != "block") {
    return absl::InvalidArgumentError(
        absl::StrCat("speculative scope must be model or block, got '", o.kd_speculative_scope, "'"));
  }
  if (o.kd_speculative_scope == "block" && !o.kd_speculative) {
    return absl::InvalidArgumentError("speculative scope block is for --speculative (it says what one proposal is)");
  }
  if (o.method == "bitdistiller" && o.kd_speculative) {
    return absl::InvalidArgumentError(
        "bitdistiller: --speculative judges code re-assignments; bitdistiller's codes always follow the weights");
  }
  if (!o.kd_lr_schedule.empty() && o.kd_lr_schedule != "cosine" && o.kd_lr_schedule != "constant") {
    return absl::InvalidArgumentError(
        absl::StrCat("lr schedule must be cosine or constant, got '", o.kd_lr_schedule, "'"));
  }
  if (o.method == "glvq") {
    if (o.lm_head_bits != 0) return absl::InvalidArgumentError("glvq keeps lm_head dense; --quantize-lm-head is for rtn/kmeans");
    if (o.glvq_dim < 1 || o.glvq_dim > 32 || o.group_size % o.glvq_dim != 0) {
      return absl::InvalidArgumentError(absl::StrCat("glvq: --glvq-dim ", o.glvq_dim,
                                                     " must be in 1..32 and divide the group size ", o.group_size));
    }
    if (o.glvq_steps < 0 || o.glvq_reround_every < 0 || !(o.glvq_lr >= 0.0) || !(o.glvq_lambda >= 0.0)) {
      return absl::InvalidArgumentError("glvq: steps and reround-every must be >= 0, lr and lambda >= 0");
    }
  }
  if (o.bits < 2 || o.bits > 4) {
    return absl::InvalidArgumentError(absl::StrCat("bits must be 2, 3 or 4, got ", o.bits));
  }
  const int head_max = o.method == "rtn" || o.method == "gptq" ? kRtnMaxBits : kKmeansMaxBits;
  if (o.lm_head_bits != 0 && (o.lm_head_bits < 2 || o.lm_head_bits > head_max)) {
    return absl::InvalidArgumentError(absl::StrCat("lm_head bits for ", o.method, " must be in [2, ", head_max,
                                                   "] (or 0 to keep it dense), got ", o.lm_head_bits));
  }
  if (o.group_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("group size must be >= 1, got ", o.group_size));
  }
  if (o.kmeans_iters < 0) return absl::InvalidArgumentError("k-means iterations must be >= 0");
  if (!o.calib_path.empty() && o.method == "rtn") {
    return absl::InvalidArgumentError("calibration data is not used by --method rtn; rtn takes none");
  }
  if (method->needs_calibration_file && o.calib_path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.method, " needs calibration text: pass --calib FILE (e.g. a WikiText-2 train split)"));
  }
  if (o.method == "gptq") {
    if (!(o.gptq_percdamp >= 0.0 && o.gptq_percdamp <= 1.0) || o.gptq_block_size < 1) {
      return absl::InvalidArgumentError("gptq: dampening must be in [0, 1] and block size >= 1");
    }
  }
  if (o.calib_tokens < 0) return absl::InvalidArgumentError("calibration tokens must be >= 0");
  if (o.kd_teacher_cache_mb < 0) return absl::InvalidArgumentError("teacher-cache-mb must be >= 0");
  if (o.kd_eval_every < 0) return absl::InvalidArgumentError("eval-every must be >= 0");
  if (!(o.time_budget_s >= 0.0)) return absl::InvalidArgumentError("time-budget must be >= 0 seconds");
  if (o.kd_checkpoint_every < 1) return absl::InvalidArgumentError("checkpoint-every must be >= 1");
  if (o.model_dir.empty() || o.out_dir.empty()) return absl::InvalidArgumentError("model and out dirs are required");
  return absl::OkStatus();
}

// One tensor of the artifact: copied, or quantized from `source` at `bits`.
struct Item {
  std::string name;
  std::string source;
  int bits = 0;  // 0 = dense.
};

absl::StatusOr<runtime::ArtifactManifest> Run(const QuantizeModelOptions& o) {
  auto log = [&](const std::string& line) {
    if (o.log) o.log(line);
  };
  // Whole-job fractions: calibration up to 0.2 (when there is one), the
  // tensors up to 0.9, writing 0.95, evaluation the rest.
  const internal::ModelMethod model_method = internal::FindModelMethod(o.method);
  const double calib_end = model_method != nullptr  ? internal::kModelMethodProgressEnd
                           : o.calib_path.empty() ? 0.0
                                                  : 0.2;
  auto progress = [&](const char* phase, double fraction, const std::string& line) {
    log(line);
    if (o.progress) o.progress(phase, fraction, line);
  };
  const Clock::time_point start = Clock::now();
  LCD_ASSIGN_OR_RETURN(runtime::ModelConfig config, runtime::LoadModelConfig(o.model_dir));
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Checkpoint> ckpt, runtime::Checkpoint::Open(o.model_dir));

  // The plan: every stored tensor, in the checkpoint's order.
  std::vector<Item> items;
  int64_t linears = 0;
  for (const std::string& name : ckpt->TensorNames()) {
    Item it{name, name, 0};
    if (name.starts_with("model.layers.")) {
      for (const char* s : kLinearSuffixes) {
        if (name.ends_with(std::string(".") + s)) it.bits = o.bits;
      }
    } else if (name == "lm_head.weight") {
      it.bits = o.lm_head_bits;
    }
    linears += it.bits != 0 && name != "lm_head.weight";
    items.push_back(std::move(it));
  }
  for (int64_t l = 0; l < config.num_layers; ++l) {
    for (const char* s : kLinearSuffixes) {
      const std::string n = absl::StrCat("model.layers.", l, ".", s);
      if (!ckpt->Has(n)) return absl::InvalidArgumentError(absl::StrCat("unsupported model: ", n, " is missing"));
    }
  }
  if (linears != 7 * config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported model: ", linears, " decoder linear weights for ",
                                                   config.num_layers, " layers (expected 7 per layer)"));
  }
  if (o.lm_head_bits > 0 && !ckpt->Has("lm_head.weight")) {
    // Tied: the head gets its own quantized copy; the embedding lookup stays exact.
    items.push_back({"lm_head.weight", "model.embed_tokens.weight", o.lm_head_bits});
  }

  LCD_ASSIGN_OR_RETURN(std::unique_ptr<ArtifactWriter> writer, ArtifactWriter::Create(o.out_dir, o.model_dir));

  std::optional<internal::ModelMethodResult> whole;  // The result of a whole-model method.
  if (model_method != nullptr) {
    std::vector<std::string> weights;
    for (const Item& it : items) {
      if (it.bits != 0) weights.push_back(it.name);
    }
    LCD_ASSIGN_OR_RETURN(whole, model_method(o, weights));
    for (const std::string& w : weights) {
      if (whole->matrices.count(w) == 0) {
        return absl::InternalError(absl::StrCat("method ", o.method, " returned no matrix for ", w));
      }
    }
  }

  std::optional<CalibrationStats> stats;
  std::string calib_desc = whole ? whole->calibration : "none";
  if (!o.calib_path.empty() && o.method == "kmeans") {
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Tokenizer> tokenizer, runtime::LoadTokenizer(o.model_dir));
    LCD_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, TokenizeTextFile(o.calib_path, *tokenizer, o.calib_tokens));
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> model, runtime::Model::Load(o.model_dir, {o.threads}));
    CalibrationOptions copts;
    copts.window = o.calib_window;
    copts.bos = tokenizer->bos_id();
    copts.progress = [&](int64_t done, int64_t total) {
      progress("calibrate", calib_end * static_cast<double>(done) / static_cast<double>(std::max<int64_t>(total, 1)),
               absl::StrFormat("[quantize] calibration window %d/%d, elapsed %.1fs", done, total, Seconds(start)));
    };
    LCD_ASSIGN_OR_RETURN(stats, CollectCalibrationStats(*model, tokens, copts));
    LCD_ASSIGN_OR_RETURN(std::string sha, runtime::Sha256File(o.calib_path));
    calib_desc = internal::CalibrationFileProvenance(o.calib_path, sha, absl::StrCat("tokens:", stats->text_tokens));
  }

  kernels::ThreadPool pool(o.threads);
  int64_t total_weights = 0, done_weights = 0, done_tensors = 0, num_quant = 0;
  for (const Item& it : items) {
    if (it.bits == 0) continue;
    LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt->Get(it.source));
    total_weights += t.num_elements();
    ++num_quant;
  }
  const Clock::time_point qstart = Clock::now();
  for (const Item& it : items) {
    LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt->Get(it.source));
    if (it.bits == 0 && whole && whole->dense.count(it.name) != 0) {
      // Changed by the method (e.g. norm weights carrying activation smoothing): fp32.
      const std::vector<float>& v = whole->dense.at(it.name);
      if (static_cast<int64_t>(v.size()) != t.num_elements()) {
        return absl::InternalError(absl::StrCat("method ", o.method, " returned ", v.size(), " values for ", it.name));
      }
      LCD_RETURN_IF_ERROR(writer->AddDense(it.name, runtime::StDType::kF32, t.shape,
                                           std::string_view(reinterpret_cast<const char*>(v.data()),
                                                            v.size() * sizeof(float))));
      continue;
    }
    if (it.bits == 0) {
      const size_t bytes = static_cast<size_t>(t.num_elements()) * runtime::StDTypeSize(t.dtype);
      LCD_RETURN_IF_ERROR(writer->AddDense(it.name, t.dtype, t.shape,
                                           std::string_view(static_cast<const char*>(t.data), bytes)));
      continue;
    }
    LCD_ASSIGN_OR_RETURN(std::vector<float> w, internal::MatrixToF32(t));
    const int64_t rows = t.shape[0], cols = t.shape[1];
    const float* importance = nullptr;
    if (stats) {
      const std::vector<float>* s = stats->Find(it.name);
      if (s == nullptr || static_cast<int64_t>(s->size()) != cols) {
        return absl::InternalError(absl::StrCat("calibration has no statistics of width ", cols, " for ", it.name));
      }
      importance = s->data();
    }
    absl::StatusOr<QuantizedMatrix> q =
        o.method == "rtn"      ? QuantizeRtn(w.data(), rows, cols, it.bits, o.group_size, &pool)
        : o.method == "kmeans" ? QuantizeKmeans(w.data(), rows, cols, it.bits, o.group_size, importance,
                                                o.kmeans_iters, &pool)
                               : std::move(whole->matrices.at(it.name));
    if (!q.ok()) return absl::Status(q.status().code(), absl::StrCat(it.name, ": ", q.status().message()));
    LCD_ASSIGN_OR_RETURN(double err, WeightedSquaredError(w.data(), rows, cols, *q));
    double norm = 0.0;
    for (float x : w) norm += static_cast<double>(x) * x;
    LCD_RETURN_IF_ERROR(writer->AddQuantized(it.name, std::move(*q)));
    done_weights += rows * cols;
    ++done_tensors;
    const double elapsed = Seconds(qstart);
    const double eta = elapsed / static_cast<double>(done_weights) * static_cast<double>(total_weights - done_weights);
    progress("quantize",
             calib_end + (0.9 - calib_end) * static_cast<double>(done_weights) / static_cast<double>(total_weights),
             absl::StrFormat("[quantize] tensor %d/%d %s [%d x %d] %s b%d: rel err %.3e%s, elapsed %.1fs, ETA %.1fs",
                             done_tensors, num_quant, it.name, rows, cols, o.method, it.bits,
                             norm > 0 ? err / norm : 0.0,
                             o.lcd_smooth ? " (against the unsmoothed source weight)" : "", elapsed, eta));
  }

  runtime::ArtifactManifest m;
  m.method.name = o.method;
  m.method.bits = o.bits;
  m.method.group_size = o.group_size;
  m.method.params["lm_head_bits"] = std::to_string(o.lm_head_bits);
  if (o.method == "kmeans") m.method.params["max_iters"] = std::to_string(o.kmeans_iters);
  if (whole) {
    for (const auto& [k, v] : whole->params) m.method.params[k] = v;
    for (const auto& [k, v] : whole->quality) m.quality[k] = v;
    m.activation_bits = whole->activation_bits;
  }
  if (stats) {
    m.method.params["calibration_tokens"] = std::to_string(stats->text_tokens);
    m.method.params["calibration_samples"] = std::to_string(stats->samples);
  }
  m.provenance.source_model = o.model_dir;
  LCD_ASSIGN_OR_RETURN(m.provenance.source_sha256, internal::SourceWeightsSha256(o.model_dir));
  m.provenance.tool = ToolVersionString();
  m.provenance.created_utc = internal::UtcNowIso8601();
  m.provenance.calibration = calib_desc;
  m.quality["bits_per_weight"] = writer->QuantizedBitsPerWeight();
  m.provenance.wall_seconds = Seconds(start);
  LCD_ASSIGN_OR_RETURN(m, writer->Finish(std::move(m)));
  m.provenance.wall_seconds = Seconds(start);  // Writing included.

  // All parameters of the model (a tied head counted once, as the source has it).
  double params = 0.0;
  for (const Item& it : items) {
    if (it.name == it.source) params += static_cast<double>(ckpt->Get(it.source)->num_elements());
  }
  for (const runtime::ArtifactFile& f : m.files) {
    if (f.path == "model.safetensors") m.quality["file_bits_per_param"] = 8.0 * static_cast<double>(f.bytes) / params;
  }
  progress("write", o.eval_text.empty() ? 1.0 : 0.95,
           absl::StrFormat("[quantize] wrote %s: %.4f bits/weight (quantized tensors), %.2fs", o.out_dir,
                           m.quality["bits_per_weight"], m.provenance.wall_seconds));

  if (!o.eval_text.empty()) {
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Tokenizer> tokenizer, runtime::LoadTokenizer(o.out_dir));
    LCD_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, TokenizeTextFile(o.eval_text, *tokenizer, 0));
    const std::string stem = internal::TextStem(o.eval_text);
    // The source is loaded once: it is the reference of the artifact's KL and
    // then evaluated on its own.
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> source, runtime::Model::Load(o.model_dir, {o.threads}));
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> artifact, runtime::Model::Load(o.out_dir, {o.threads}));
    for (runtime::Model* model : {artifact.get(), source.get()}) {
      const bool is_source = model == source.get();
      PerplexityOptions popts;
      popts.bos = tokenizer->bos_id();
      popts.window = o.eval_window;
      popts.max_windows = o.eval_max_windows;
      popts.reference = is_source ? nullptr : source.get();
      LCD_ASSIGN_OR_RETURN(PerplexityResult r, EvaluatePerplexity(*model, tokens, popts));
      m.quality[absl::StrCat("ppl_", stem, is_source ? "_source" : "")] = r.ppl;
      std::string kl;
      if (r.mean_kl) {
        m.quality[absl::StrCat("kl_", stem)] = *r.mean_kl;
        m.quality[absl::StrCat("top1_agreement_", stem)] = *r.top1_agreement;
        kl = absl::StrFormat(", KL to the source %.5f nats/token, top-1 agreement %.4f", *r.mean_kl,
                             *r.top1_agreement);
      }
      progress("evaluate", is_source ? 1.0 : 0.975,
               absl::StrFormat("[quantize] ppl of %s on %s: %.4f (%d tokens, %d windows of %d)%s",
                               is_source ? "source" : "artifact", o.eval_text, r.ppl, r.predicted_tokens, r.windows,
                               r.window, kl));
    }
  }
  LCD_RETURN_IF_ERROR(RewriteArtifactManifest(o.out_dir, m));
  return m;
}

}  // namespace

namespace internal {

ModelMethod FindModelMethod(std::string_view name) {
  static constexpr std::pair<std::string_view, ModelMethod> kModelMethods[] = {
      {"lcd", &RunLcd},
      {"r2q", &RunR2q},
      {"bitdistiller", &RunBitDistiller},
      {"gptq", &RunGptq},
      {"glvq", &RunGlvq},
  };
  for (const auto& [n, run] : kModelMethods) {
    if (n == name) return run;
  }
  return nullptr;
}

}  // namespace internal

absl::StatusOr<runtime::ArtifactManifest> QuantizeModel(const QuantizeModelOptions& options) {
  LCD_RETURN_IF_ERROR(ValidateOptions(options));
  std::error_code ec;
  const bool existed = fs::exists(options.out_dir, ec);
  absl::StatusOr<runtime::ArtifactManifest> m = Run(options);
  // Never leave a half-written artifact behind, but never delete what was
  // there before (ArtifactWriter::Create refuses a non-empty directory).
  if (!m.ok() && !existed) fs::remove_all(options.out_dir, ec);
  return m;
}

}  // namespace lcd::quantizer
