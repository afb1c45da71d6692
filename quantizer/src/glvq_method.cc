// GLVQ as a whole-model method (LCD.md "GLVQ"): the calibration text is run
// through the full-precision model once to collect H = E[x x^T] of every
// decoder linear's input (CollectCalibrationStats with gram_for), then every
// weight is quantized by QuantizeGlvq (lcd/quantizer/glvq.h) into the
// lattice format. Contract of the options in lcd/quantizer/quantize_model.h.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <memory>
#include <map>
#include <optional>
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
#include "lcd/base/file_util.h"
#include "src/model_method.h"
#include "src/provenance.h"
#include "src/quant_common.h"

namespace lcd::quantizer::internal {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// Per-weight results kept in o.resume_dir (resumable runs): one file per
// weight, "glvq-<index>.bin": a text header (magic, fingerprint of every
// input that shapes the result, the weight's name and layout, its report)
// then group_bits, codes, params and lattice as raw bytes. A file whose
// header differs in anything is ignored and rewritten.
struct CacheEntry {
  QuantizedMatrix q;
  GlvqReport rep;
};

std::string CachePath(const std::string& dir, size_t index) { return absl::StrCat(dir, "/glvq-", index, ".bin"); }

std::string CacheHeader(const std::string& fingerprint, const std::string& name, const kernels::QuantLayout& l,
                        const GlvqReport& rep) {
  return absl::StrFormat("lcd-glvq-cache 1\n%s\n%s\n%d %d %d %d %d\n%.17g %.17g %d %d\n", fingerprint, name, l.rows,
                         l.cols, l.group_size, l.bits, l.lattice_dim, rep.loss_init, rep.loss_final, rep.groups_up,
                         rep.groups_down);
}

absl::Status SaveCache(const std::string& path, const std::string& fingerprint, const std::string& name,
                       const QuantizedMatrix& q, const GlvqReport& rep) {
  const std::string header = CacheHeader(fingerprint, name, q.layout, rep);
  const std::string sizes = absl::StrCat(q.layout.group_bits.size(), " ", q.codes.size(), " ", q.params.size(), " ",
                                         q.lattice.size(), "\n");
  return WriteFileAtomic(path, {header, sizes,
                                std::string_view(reinterpret_cast<const char*>(q.layout.group_bits.data()),
                                                 q.layout.group_bits.size()),
                                std::string_view(reinterpret_cast<const char*>(q.codes.data()), q.codes.size()),
                                std::string_view(reinterpret_cast<const char*>(q.params.data()), q.params.size() * 2),
                                std::string_view(reinterpret_cast<const char*>(q.lattice.data()), q.lattice.size() * 2)});
}

// The cached result of `name`, or nullopt (no file, other settings, damaged).
std::optional<CacheEntry> LoadCache(const std::string& path, const std::string& fingerprint, const std::string& name,
                                    int64_t rows, int64_t cols, const GlvqOptions& go) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::string magic, fp, nm, dims, figs, sizes;
  if (!std::getline(f, magic) || !std::getline(f, fp) || !std::getline(f, nm) || !std::getline(f, dims) ||
      !std::getline(f, figs) || !std::getline(f, sizes)) {
    return std::nullopt;
  }
  if (magic != "lcd-glvq-cache 1" || fp != fingerprint || nm != name) return std::nullopt;
  CacheEntry e;
  kernels::QuantLayout& l = e.q.layout;
  l.format = kernels::QuantFormat::kLattice;
  std::istringstream d(dims), g(figs), z(sizes);
  if (!(d >> l.rows >> l.cols >> l.group_size >> l.bits >> l.lattice_dim)) return std::nullopt;
  if (!(g >> e.rep.loss_init >> e.rep.loss_final >> e.rep.groups_up >> e.rep.groups_down)) return std::nullopt;
  size_t nb = 0, nc = 0, np = 0, nl = 0;
  if (!(z >> nb >> nc >> np >> nl)) return std::nullopt;
  if (l.rows != rows || l.cols != cols || l.group_size != go.group_size || l.bits != go.bits ||
      l.lattice_dim != go.dim || static_cast<int64_t>(nb) != l.groups()) {
    return std::nullopt;
  }
  l.group_bits.resize(nb);
  e.q.codes.resize(nc);
  e.q.params.resize(np);
  e.q.lattice.resize(nl);
  f.read(reinterpret_cast<char*>(l.group_bits.data()), static_cast<std::streamsize>(nb));
  f.read(reinterpret_cast<char*>(e.q.codes.data()), static_cast<std::streamsize>(nc));
  f.read(reinterpret_cast<char*>(e.q.params.data()), static_cast<std::streamsize>(np * 2));
  f.read(reinterpret_cast<char*>(e.q.lattice.data()), static_cast<std::streamsize>(nl * 2));
  if (!f || f.peek() != std::char_traits<char>::eof()) return std::nullopt;
  if (!kernels::ValidateQuantLayout(l).ok() || static_cast<int64_t>(nc) != l.CodeBytes() ||
      static_cast<int64_t>(np) != l.ParamCount() || static_cast<int64_t>(nl) != l.LatticeParamCount() ||
      !kernels::CheckLatticeParams(e.q.view()).ok()) {
    return std::nullopt;
  }
  return e;
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

  GlvqOptions go;
  go.bits = o.bits;
  go.group_size = o.group_size;
  go.dim = o.glvq_dim;
  go.steps = o.glvq_steps;
  go.reround_every = o.glvq_reround_every;
  go.lr = o.glvq_lr;
  go.lambda = o.glvq_lambda;
  go.allocate_bits = o.glvq_allocate_bits;

  LCD_ASSIGN_OR_RETURN(std::string calib_sha, runtime::Sha256File(o.calib_path));
  // Resumable runs: results of an earlier run with the same inputs.
  std::map<std::string, CacheEntry> cached;
  std::string fingerprint;
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Checkpoint> ckpt, runtime::Checkpoint::Open(o.model_dir));
  if (!o.resume_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.resume_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("glvq: cannot create ", o.resume_dir, ": ", ec.message()));
    LCD_ASSIGN_OR_RETURN(std::string source_sha, SourceWeightsSha256(o.model_dir));
    fingerprint = absl::StrFormat(
        "source %s calib %s tokens %d window %d bits %d g %d d %d steps %d reround %d lr %.17g lambda %.17g alloc %d",
        source_sha, calib_sha, o.calib_tokens, o.calib_window, go.bits, go.group_size, go.dim, go.steps,
        go.reround_every, go.lr, go.lambda, go.allocate_bits ? 1 : 0);
    for (size_t i = 0; i < weights.size(); ++i) {
      LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt->Get(weights[i]));
      if (t.shape.size() != 2) continue;
      std::optional<CacheEntry> e =
          LoadCache(CachePath(o.resume_dir, i), fingerprint, weights[i], t.shape[0], t.shape[1], go);
      if (e) cached.emplace(weights[i], *std::move(e));
    }
    if (o.log) {
      o.log(absl::StrFormat("[glvq] resuming from %s: %d of %d weights already quantized", o.resume_dir,
                            cached.size(), weights.size()));
    }
  }

  // H = E[x x^T] of every quantized weight's input (not needed when every
  // weight comes from the resume directory).
  CalibrationStats stats;
  if (cached.size() < weights.size()) {
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
  }
  res.calibration = CalibrationFileProvenance(o.calib_path, calib_sha,
                                              cached.size() < weights.size()
                                                  ? absl::StrCat("tokens:", stats.text_tokens)
                                                  : std::string("(all weights resumed)"));
  kernels::ThreadPool pool(o.threads);
  const Clock::time_point qstart = Clock::now();
  double init_sum = 0, final_sum = 0;
  int64_t up = 0, down = 0, groups = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string& name = weights[i];
    LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt->Get(name));
    LCD_ASSIGN_OR_RETURN(std::vector<float> w, MatrixToF32(t));
    const int64_t rows = t.shape[0], cols = t.shape[1];
    GlvqReport rep;
    absl::StatusOr<QuantizedMatrix> q;
    auto hit = cached.find(name);
    if (hit != cached.end()) {
      q = std::move(hit->second.q);
      rep = hit->second.rep;
    } else {
      const InputGram* h = stats.FindGram(name);
      if (h == nullptr || h->cols != cols) {
        return absl::InternalError(absl::StrCat("glvq: calibration has no E[x x^T] of width ", cols, " for ", name));
      }
      q = QuantizeGlvq(w.data(), rows, cols, h->xtx.data(), go, &rep, &pool);
      if (!q.ok()) return absl::Status(q.status().code(), absl::StrCat(name, ": ", q.status().message()));
      if (!o.resume_dir.empty()) LCD_RETURN_IF_ERROR(SaveCache(CachePath(o.resume_dir, i), fingerprint, name, *q, rep));
    }
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
                             "widths +1/-1: %d/%d of %d groups%s, elapsed %.1fs, ETA %.1fs",
                             i + 1, weights.size(), name, rows, cols, go.dim, rep.loss_init / ng, rep.loss_final / ng,
                             rep.groups_up, rep.groups_down, ng, hit != cached.end() ? " (resumed)" : "", elapsed,
                             eta));
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
