// GPTQ over the whole model (the contract of the options is in
// lcd/quantizer/quantize_model.h, "GPTQ"): calibration text through the
// full-precision model for E[x x^T] of every quantized weight's input
// (lcd/quantizer/calibration.h), then QuantizeGptq (lcd/quantizer/gptq.h) per
// weight, the Hessian prepared once per input (q/k/v and gate/up share one).
//
// Decision: by default the Hessians are those of the FULL-PRECISION model,
// collected in one pass before any weight is quantized. With gptq_sequential
// they are collected as the reference code does, one decoder layer at a
// time from the model whose earlier layers are already quantized (each
// stage reloads a temporary fp32 copy of the model with those layers
// decoded: L+1 calibration passes, memory and disk of one fp32 copy).
// docs/QUALITY.md, "GPTQ", measures both.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <limits>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <cblas.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/calibration.h"
#include "lcd/quantizer/gptq.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "lcd/runtime/artifact.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/safetensors.h"
#include "lcd/runtime/tokenizer.h"
#include "src/model_method.h"
#include "src/provenance.h"
#include "src/quant_common.h"

namespace lcd::quantizer::internal {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kCalibrateShare = 0.3;  // Of each stage's share of the progress.

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

absl::StatusOr<std::vector<float>> LoadF32(const runtime::Checkpoint& ckpt, const std::string& name) {
  LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt.Get(name));
  return MatrixToF32(t);
}

// tr(W H W^T) in double: the output energy the relative errors are taken against.
double OutputEnergy(const float* w, int64_t rows, int64_t cols, const double* h) {
  std::vector<double> wd(w, w + rows * cols), wh(static_cast<size_t>(rows * cols));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols),
              static_cast<int>(cols), 1.0, wd.data(), static_cast<int>(cols), h, static_cast<int>(cols), 0.0,
              wh.data(), static_cast<int>(cols));
  double total = 0.0;
  for (size_t i = 0; i < wd.size(); ++i) total += wh[i] * wd[i];
  return total;
}


// Decodes a kAffine/kCodebook matrix to fp32 (the kernels' DecodeCode).
std::vector<float> Dequantize(const QuantizedMatrix& q) {
  const kernels::QuantLayout& l = q.layout;
  const int64_t p = l.format == kernels::QuantFormat::kAffine ? 2 : (int64_t{1} << l.bits);
  const int64_t groups = l.groups(), row_bytes = l.CodeRowBytes();
  std::vector<float> out(static_cast<size_t>(l.rows * l.cols)), gp(static_cast<size_t>(p));
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t k = 0; k < p; ++k) gp[k] = kernels::Fp16ToFloat(q.params[(r * groups + g) * p + k]);
      for (int64_t c = g * l.group_size; c < std::min(l.cols, (g + 1) * l.group_size); ++c) {
        const int code = static_cast<int>(GetCode(q.codes.data() + r * row_bytes, c, l.bits));
        out[r * l.cols + c] = kernels::DecodeCode(l.format, l.bits, gp.data(), code);
      }
    }
  }
  return out;
}

// A temporary Hugging Face folder: the source's files but its weights, and
// a model.safetensors holding the source's tensors with the already
// quantized ones replaced by their decoded fp32 values (sequential GPTQ runs
// its calibration on it). Removed when destroyed.
class StudentDir {
 public:
  static absl::StatusOr<std::unique_ptr<StudentDir>> Create(const std::string& model_dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    static std::atomic<int> counter{0};
    auto dir = std::unique_ptr<StudentDir>(new StudentDir(
        (fs::temp_directory_path(ec) / absl::StrCat("lcd-gptq-", ::getpid(), "-", counter++)).string()));
    fs::remove_all(dir->path_, ec);
    if (!fs::create_directories(dir->path_, ec)) {
      return absl::InternalError(absl::StrCat("gptq: cannot create ", dir->path_, ": ", ec.message()));
    }
    for (const fs::directory_entry& e : fs::directory_iterator(model_dir, ec)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json")) continue;
      fs::copy_file(e.path(), fs::path(dir->path_) / name, ec);
      if (ec) return absl::InternalError(absl::StrCat("gptq: cannot copy ", e.path().string(), ": ", ec.message()));
    }
    return dir;
  }
  ~StudentDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

  absl::Status Write(const runtime::Checkpoint& ckpt, const std::map<std::string, QuantizedMatrix>& done) {
    std::vector<std::vector<float>> decoded;
    decoded.reserve(done.size());
    std::vector<runtime::TensorToWrite> tensors;
    for (const std::string& name : ckpt.TensorNames()) {
      LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt.Get(name));
      runtime::TensorToWrite w;
      w.name = name;
      w.shape = t.shape;
      auto it = done.find(name);
      if (it != done.end()) {
        decoded.push_back(Dequantize(it->second));
        w.dtype = runtime::StDType::kF32;
        w.bytes = std::string_view(reinterpret_cast<const char*>(decoded.back().data()), decoded.back().size() * 4);
      } else {
        w.dtype = t.dtype;
        w.bytes = std::string_view(static_cast<const char*>(t.data),
                                   static_cast<size_t>(t.num_elements()) * runtime::StDTypeSize(t.dtype));
      }
      tensors.push_back(w);
    }
    return runtime::WriteSafetensors(path_ + "/model.safetensors", tensors, {{"format", "pt"}});
  }

 private:
  explicit StudentDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace

absl::StatusOr<ModelMethodResult> RunGptq(const QuantizeModelOptions& o, const std::vector<std::string>& weights) {
  auto progress = [&](const char* phase, double fraction, const std::string& line) {
    if (o.log) o.log(absl::StrCat("[gptq] ", line));
    if (o.progress) o.progress(phase, fraction, absl::StrCat("[gptq] ", line));
  };
  if (o.calib_path.empty()) {
    return absl::InvalidArgumentError("gptq needs calibration text: pass --calib FILE (e.g. a WikiText-2 train split)");
  }
  const Clock::time_point start = Clock::now();
  ModelMethodResult res;
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Tokenizer> tokenizer, runtime::LoadTokenizer(o.model_dir));
  LCD_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, TokenizeTextFile(o.calib_path, *tokenizer, o.calib_tokens));
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Checkpoint> ckpt, runtime::Checkpoint::Open(o.model_dir));

  // Stages: all weights at once, or (sequential) one decoder layer at a time
  // in layer order, then lm_head.
  std::vector<std::vector<std::string>> stages;
  if (!o.gptq_sequential) {
    stages.push_back(weights);
  } else {
    std::map<int64_t, std::vector<std::string>> by_layer;
    for (const std::string& name : weights) {
      int64_t layer = std::numeric_limits<int64_t>::max();  // lm_head: after every layer.
      if (name.starts_with("model.layers.")) {
        const char* first = name.data() + 13;
        std::from_chars(first, name.data() + name.size(), layer);  // QuantizeModel's names: digits follow.
      }
      by_layer[layer].push_back(name);
    }
    for (auto& [unused, names] : by_layer) stages.push_back(std::move(names));
  }
  int64_t total_weights = 0;
  for (const std::string& name : weights) {
    LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt->Get(ckpt->Has(name) ? name : "model.embed_tokens.weight"));
    total_weights += t.num_elements();
  }

  GptqOptions gopts;
  gopts.percdamp = o.gptq_percdamp;
  gopts.act_order = o.gptq_act_order;
  gopts.block_size = o.gptq_block_size;
  kernels::ThreadPool pool(o.threads);
  std::unique_ptr<StudentDir> student;  // Sequential: the source with the quantized layers so far.
  double calib_seconds = 0.0, quant_seconds = 0.0;
  int64_t done_weights = 0, done = 0, calib_tokens = 0, calib_samples = 0;
  double sum_rel_gptq = 0.0, sum_rel_rtn = 0.0;
  // Progress: every stage an equal share of [0, kModelMethodProgressEnd],
  // its first kCalibrateShare for calibration, the rest by weights quantized.
  const double per_stage = kModelMethodProgressEnd / static_cast<double>(stages.size());
  for (size_t si = 0; si < stages.size(); ++si) {
    const std::vector<std::string>& stage = stages[si];
    const double stage0 = per_stage * static_cast<double>(si);
    int64_t stage_weights = 0, stage_done = 0;
    for (const std::string& name : stage) {
      LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt->Get(ckpt->Has(name) ? name : "model.embed_tokens.weight"));
      stage_weights += t.num_elements();
    }
    // 1. E[x x^T] of the stage's weights' inputs.
    const Clock::time_point cstart = Clock::now();
    std::string calib_model = o.model_dir;
    if (si > 0) {
      if (!student) {
        LCD_ASSIGN_OR_RETURN(student, StudentDir::Create(o.model_dir));
      }
      LCD_RETURN_IF_ERROR(student->Write(*ckpt, res.matrices));
      calib_model = student->path();
    }
    CalibrationStats stats;
    {
      LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> model, runtime::Model::Load(calib_model, {o.threads}));
      const std::set<std::string, std::less<>> wanted(stage.begin(), stage.end());
      CalibrationOptions copts;
      copts.window = o.calib_window;
      copts.bos = tokenizer->bos_id();
      copts.gram_for = [&](std::string_view name) { return wanted.count(name) > 0; };
      copts.progress = [&](int64_t w, int64_t total) {
        progress("calibrate",
                 stage0 + kCalibrateShare * per_stage * static_cast<double>(w) /
                              static_cast<double>(std::max<int64_t>(total, 1)),
                 absl::StrFormat("%scalibration window %d/%d, elapsed %.1fs",
                                 stages.size() > 1 ? absl::StrFormat("stage %d/%d: ", si + 1, stages.size()) : "",
                                 w, total, Seconds(start)));
      };
      LCD_ASSIGN_OR_RETURN(stats, CollectCalibrationStats(*model, tokens, copts));
    }
    calib_tokens = stats.text_tokens;
    calib_samples = stats.samples;
    calib_seconds += Seconds(cstart);

    // 2. GPTQ per weight; each input's Hessian prepared once and dropped after its last weight.
    const Clock::time_point qstart = Clock::now();
    std::map<const InputGram*, int> users;
    for (const std::string& name : stage) {
      const InputGram* g = stats.FindGram(name);
      if (g == nullptr) return absl::InternalError(absl::StrCat("gptq: calibration observed no input of ", name));
      ++users[g];
    }
    std::map<const InputGram*, GptqHessian> prepared;
    for (const std::string& name : stage) {
      const std::string source = ckpt->Has(name) ? name : "model.embed_tokens.weight";  // A tied head.
      LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt->Get(source));
      LCD_ASSIGN_OR_RETURN(std::vector<float> w, LoadF32(*ckpt, source));
      const int64_t rows = t.shape[0], cols = t.shape[1];
      const int bits = name == "lm_head.weight" ? o.lm_head_bits : o.bits;
      const InputGram* g = stats.FindGram(name);
      if (g->cols != cols) {
        return absl::InternalError(absl::StrCat("gptq: ", name, " has ", cols, " columns, its input ", g->cols));
      }
      auto it = prepared.find(g);
      if (it == prepared.end()) {
        absl::StatusOr<GptqHessian> hs = PrepareGptqHessian(g->xtx.data(), cols, gopts);
        if (!hs.ok()) return absl::Status(hs.status().code(), absl::StrCat(name, ": ", hs.status().message()));
        it = prepared.emplace(g, std::move(*hs)).first;
      }
      absl::StatusOr<QuantizedMatrix> q = QuantizeGptq(w.data(), rows, cols, bits, o.group_size, it->second, &pool);
      if (!q.ok()) return absl::Status(q.status().code(), absl::StrCat(name, ": ", q.status().message()));
      // The layer-output error against RTN's on the same groups: what GPTQ optimises.
      LCD_ASSIGN_OR_RETURN(QuantizedMatrix rtn, QuantizeRtn(w.data(), rows, cols, bits, o.group_size, &pool));
      LCD_ASSIGN_OR_RETURN(double err_gptq, LayerOutputError(w.data(), rows, cols, *q, g->xtx.data()));
      LCD_ASSIGN_OR_RETURN(double err_rtn, LayerOutputError(w.data(), rows, cols, rtn, g->xtx.data()));
      const double energy = OutputEnergy(w.data(), rows, cols, g->xtx.data());
      const double rel_gptq = energy > 0 ? err_gptq / energy : 0.0, rel_rtn = energy > 0 ? err_rtn / energy : 0.0;
      sum_rel_gptq += rel_gptq;
      sum_rel_rtn += rel_rtn;
      res.matrices.emplace(name, std::move(*q));
      if (--users[g] == 0) prepared.erase(g);
      done_weights += rows * cols;
      stage_done += rows * cols;
      ++done;
      const double elapsed = Seconds(start);
      const double eta = elapsed / static_cast<double>(done_weights) * static_cast<double>(total_weights - done_weights);
      progress("quantize",
               stage0 + per_stage * (kCalibrateShare + (1.0 - kCalibrateShare) * static_cast<double>(stage_done) /
                                                          static_cast<double>(stage_weights)),
               absl::StrFormat("tensor %d/%d %s [%d x %d] b%d: output error %.3e (rtn %.3e, x%.2f), elapsed %.1fs, "
                               "ETA %.1fs",
                               done, weights.size(), name, rows, cols, bits, rel_gptq, rel_rtn,
                               rel_rtn > 0 ? rel_gptq / rel_rtn : 1.0, elapsed, eta));
    }
    quant_seconds += Seconds(qstart);
  }

  LCD_ASSIGN_OR_RETURN(std::string sha, runtime::Sha256File(o.calib_path));
  res.calibration = CalibrationFileProvenance(o.calib_path, sha, absl::StrCat("tokens:", calib_tokens));
  res.params["percdamp"] = absl::StrFormat("%g", o.gptq_percdamp);
  res.params["act_order"] = o.gptq_act_order ? "true" : "false";
  res.params["static_groups"] = o.gptq_act_order ? "true" : "false";
  res.params["block_size"] = std::to_string(o.gptq_block_size);
  res.params["hessian"] = o.gptq_sequential ? "sequential: inputs through the already quantized layers"
                                            : "full-precision model inputs";
  res.params["calibration_tokens"] = std::to_string(calib_tokens);
  res.params["calibration_samples"] = std::to_string(calib_samples);
  const double n = static_cast<double>(std::max<size_t>(weights.size(), 1));
  res.quality["output_error_rel_gptq"] = sum_rel_gptq / n;
  res.quality["output_error_rel_rtn"] = sum_rel_rtn / n;
  res.quality["gptq_calibration_seconds"] = calib_seconds;
  res.quality["gptq_quantize_seconds"] = quant_seconds;
  res.quality["gptq_seconds"] = Seconds(start);
  return res;
}

}  // namespace lcd::quantizer::internal
