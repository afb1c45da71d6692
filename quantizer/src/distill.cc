// The distillation driver (contract in distill.h).
#include "src/distill.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lcd/base/status_macros.h"
#include "lcd/quantizer/train/ops.h"
#include "lcd/quantizer/train/optimizer.h"
#include "lcd/quantizer/train/train_model.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/generator.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/tokenizer.h"
#include "nlohmann/json.hpp"
#include "src/distill_checkpoint.h"
#include "src/provenance.h"

namespace lcd::quantizer::internal {
namespace {

namespace tr = train;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// The parameters tensor of a quantized weight ("<prefix>.<param_name>"), or
// nullptr when its quantizer has none.
float* ParamsOf(tr::TrainModel& m, const std::string& weight, const tr::LoopQuantizer& q) {
  if (q.param_shape().empty()) return nullptr;
  absl::StatusOr<const tr::ParamTensor*> t =
      m.Find(weight.substr(0, weight.size() - std::string_view(".weight").size()) + "." + q.param_name());
  return t.ok() ? m.params() + (*t)->offset : nullptr;
}

// Calibration sequences of exactly L tokens each, [S][L] flattened.
struct Sequences {
  std::vector<int32_t> tokens;
  int64_t count = 0;
  int64_t length = 0;
  const int32_t* at(int64_t i) const { return tokens.data() + i * length; }
};

// LCD.md step 1: the teacher samples N sequences of L tokens from BOS.
absl::StatusOr<Sequences> TeacherGenerated(const QuantizeModelOptions& o, runtime::Model& model,
                                           const runtime::Tokenizer& tokenizer, int32_t start,
                                           const std::string& tag,
                                           const std::function<void(const std::string&)>& log) {
  Sequences s;
  s.length = o.kd_seq_len;
  const Clock::time_point t0 = Clock::now();
  for (int64_t i = 0; i < o.kd_samples; ++i) {
    runtime::SamplingParams p;
    p.temperature = o.kd_temperature;
    p.seed = o.kd_seed * 1000003 + static_cast<uint64_t>(i);
    p.max_new_tokens = o.kd_seq_len - 1;
    p.ignore_eos = true;
    LCD_ASSIGN_OR_RETURN(runtime::GenerationResult r,
                         runtime::Generate(model, &tokenizer, {start}, p, [](int32_t, std::string_view) {
                           return true;
                         }));
    if (static_cast<int64_t>(r.output_ids.size()) != o.kd_seq_len - 1) {
      return absl::InternalError(absl::StrCat("teacher generation stopped after ", r.output_ids.size(), " of ",
                                              o.kd_seq_len - 1, " tokens"));
    }
    s.tokens.push_back(start);
    s.tokens.insert(s.tokens.end(), r.output_ids.begin(), r.output_ids.end());
    ++s.count;
    if ((i + 1) % 8 == 0 || i + 1 == o.kd_samples) {
      const double el = Seconds(t0);
      const std::string line =
          absl::StrFormat("generate %d/%d sequences of %d tokens, elapsed %.1fs, ETA %.1fs", i + 1,
                          o.kd_samples, o.kd_seq_len, el, el / (i + 1) * (o.kd_samples - i - 1));
      log(line);
      // Whole-job fractions: generation up to 0.1, distillation up to 0.8,
      // then quantize_model's tensors, write and evaluation.
      if (o.progress) o.progress("calibrate", 0.1 * (i + 1) / o.kd_samples, absl::StrCat("[", tag, "] ", line));
    }
  }
  return s;
}

// A text file cut into windows of L tokens ([BOS] + L-1 text tokens when the
// tokenizer has a BOS), as lcd eval-ppl cuts its windows.
absl::StatusOr<Sequences> FromText(const QuantizeModelOptions& o, const runtime::Tokenizer& tokenizer) {
  LCD_ASSIGN_OR_RETURN(std::vector<int32_t> text, TokenizeTextFile(o.calib_path, tokenizer, o.calib_tokens));
  const std::optional<int32_t> bos = tokenizer.bos_id();
  const int64_t per = o.kd_seq_len - (bos ? 1 : 0);
  Sequences s;
  s.length = o.kd_seq_len;
  for (int64_t i = 0; i + per <= static_cast<int64_t>(text.size()); i += per) {
    if (bos) s.tokens.push_back(*bos);
    s.tokens.insert(s.tokens.end(), text.begin() + i, text.begin() + i + per);
    ++s.count;
  }
  if (s.count < 2) {
    return absl::InvalidArgumentError(absl::StrCat(o.calib_path, ": ", text.size(),
                                                   " tokens give fewer than 2 calibration sequences of ",
                                                   o.kd_seq_len, " tokens"));
  }
  return s;
}

// The teacher's logits of calibration sequences. The teacher is frozen, so a
// sequence's logits never change: when all sequences' logits fit
// `budget_bytes` each is computed once (fp32, as the forward gives it) and
// then served from memory, which saves the teacher's forward pass, about a
// quarter of an end-to-end step's FLOPs, from the second epoch on. Otherwise
// (or for a sequence not yet seen) the teacher runs on the batch.
class TeacherLogits {
 public:
  TeacherLogits(tr::TrainModel& teacher, const Sequences& seqs, int64_t budget_bytes)
      : teacher_(teacher), seqs_(seqs), row_(seqs.length * teacher.config().vocab_size) {
    const double need = static_cast<double>(seqs.count) * static_cast<double>(row_) * sizeof(float);
    bytes_ = static_cast<int64_t>(need);
    if (need <= static_cast<double>(budget_bytes)) {
      cache_.reset(new float[static_cast<size_t>(seqs.count * row_)]);  // Uninitialised: pages commit as filled.
      have_.assign(static_cast<size_t>(seqs.count), false);
    }
  }
  bool caching() const { return cache_ != nullptr; }
  int64_t bytes() const { return bytes_; }  // What caching every sequence needs.

  // Logits [n * L, V] of sequences ids[0..n) in that order; valid until the
  // next call.
  absl::StatusOr<const float*> Get(const int64_t* ids, int64_t n) {
    bool cached = caching();
    for (int64_t k = 0; cached && k < n; ++k) cached = have_[static_cast<size_t>(ids[k])];
    bool contiguous = true;
    for (int64_t k = 1; k < n; ++k) contiguous = contiguous && ids[k] == ids[0] + k;
    if (cached && contiguous) return cache_.get() + ids[0] * row_;
    if (cached) {
      gathered_.resize(static_cast<size_t>(n * row_));
      for (int64_t k = 0; k < n; ++k) {
        std::copy(cache_.get() + ids[k] * row_, cache_.get() + (ids[k] + 1) * row_, gathered_.begin() + k * row_);
      }
      return gathered_.data();
    }
    const int64_t L = seqs_.length;
    tokens_.resize(static_cast<size_t>(n * L));
    for (int64_t k = 0; k < n; ++k) std::copy(seqs_.at(ids[k]), seqs_.at(ids[k]) + L, tokens_.begin() + k * L);
    LCD_RETURN_IF_ERROR(teacher_.Forward(tokens_.data(), n, L));
    const float* logits = teacher_.logits();
    if (caching()) {
      for (int64_t k = 0; k < n; ++k) {
        std::copy(logits + k * row_, logits + (k + 1) * row_, cache_.get() + ids[k] * row_);
        have_[static_cast<size_t>(ids[k])] = true;
      }
    }
    return logits;
  }
  // The same for the contiguous sequences [begin, begin + n).
  absl::StatusOr<const float*> Range(int64_t begin, int64_t n) {
    ids_.resize(static_cast<size_t>(n));
    std::iota(ids_.begin(), ids_.end(), begin);
    return Get(ids_.data(), n);
  }

 private:
  tr::TrainModel& teacher_;
  const Sequences& seqs_;
  const int64_t row_;  // Floats per sequence: L * V.
  int64_t bytes_ = 0;
  std::unique_ptr<float[]> cache_;
  std::vector<bool> have_;
  std::vector<int32_t> tokens_;
  std::vector<float> gathered_;
  std::vector<int64_t> ids_;
};

// Mean per-token CAKLD and forward KL of the student against the teacher over
// sequences [begin, end) (no gradients).
struct KdEval {
  double cakld = 0.0, kl = 0.0;
};
absl::StatusOr<KdEval> Evaluate(tr::TrainModel& student, TeacherLogits& teacher, const Sequences& seqs,
                                int64_t begin, int64_t end, int64_t batch, double gamma) {
  KdEval e;
  int64_t rows = 0;
  const int64_t L = seqs.length, V = student.config().vocab_size;
  for (int64_t i = begin; i < end; i += batch) {
    const int64_t b = std::min(batch, end - i);
    LCD_ASSIGN_OR_RETURN(const float* t, teacher.Range(i, b));
    LCD_RETURN_IF_ERROR(student.Forward(seqs.at(i), b, L));
    e.cakld += tr::CakldLoss(student.logits(), t, b * L, V, gamma, nullptr, student.pool()) *
               static_cast<double>(b * L);
    e.kl += tr::ForwardKlLoss(student.logits(), t, b * L, V, nullptr, student.pool()) *
            static_cast<double>(b * L);
    rows += b * L;
  }
  e.cakld /= static_cast<double>(rows);
  e.kl /= static_cast<double>(rows);
  return e;
}

// Both stages' schedule: 5% warmup, then cosine down to a tenth; or
// "constant": lr throughout, no warmup.
tr::LrSchedule Schedule(double lr, int64_t steps, const std::string& kind = "cosine") {
  tr::LrSchedule s;
  if (kind == "constant") {
    s.kind = tr::LrSchedule::Kind::kConstant;
    s.max_lr = s.min_lr = lr;
    s.warmup_steps = 0;
    s.total_steps = std::max<int64_t>(1, steps);
    return s;
  }
  s.kind = tr::LrSchedule::Kind::kCosine;
  s.max_lr = lr;
  s.min_lr = 0.1 * lr;
  s.warmup_steps = std::max<int64_t>(1, steps / 20);
  s.total_steps = steps;
  return s;
}

// The settings a checkpoint must share with the run that resumes it.
absl::StatusOr<std::string> Fingerprint(const QuantizeModelOptions& o, const std::vector<std::string>& weights,
                                        const DistillPlan& plan) {
  nlohmann::json f;
  LCD_ASSIGN_OR_RETURN(std::string source, SourceWeightsSha256(o.model_dir));
  f["source_sha256"] = source;
  f["method"] = plan.tag;
  f["method_settings"] = plan.settings;
  f["bits"] = o.bits;
  f["group_size"] = o.group_size;
  f["kmeans_iters"] = o.kmeans_iters;
  f["weights"] = weights;
  if (!o.calib_path.empty()) {
    LCD_ASSIGN_OR_RETURN(std::string calib, runtime::Sha256File(o.calib_path));
    f["calib_sha256"] = calib;
    f["calib_tokens"] = o.calib_tokens;
  }
  f["kd"] = {{"steps", o.kd_steps},     {"lr", o.kd_lr},
             {"seq_len", o.kd_seq_len}, {"batch", o.kd_batch},
             {"reassign_every", o.kd_reassign_every}, {"samples", o.kd_samples},
             {"temperature", o.kd_temperature},       {"seed", o.kd_seed},
             {"speculative", o.kd_speculative},       {"block_steps", o.kd_block_steps},
             {"lr_schedule", o.kd_lr_schedule.empty() ? plan.lr_schedule : o.kd_lr_schedule}};
  if (o.kd_lr_scale != "none") f["kd"]["lr_scale"] = o.kd_lr_scale;
  if (o.kd_merge_split_tau > 0.0) f["kd"]["merge_split_tau"] = o.kd_merge_split_tau;
  if (o.kd_speculative_scope != "model") f["kd"]["speculative_scope"] = o.kd_speculative_scope;
  if (o.kd_block_lr > 0.0) f["kd"]["block_lr"] = o.kd_block_lr;
  return f.dump();
}

}  // namespace

absl::StatusOr<ModelMethodResult> RunDistillation(const QuantizeModelOptions& o, const std::vector<std::string>& weights,
                                                  const DistillPlan& plan) {
  const std::string& tag = plan.tag;
  auto log = [&](const std::string& line) {
    if (o.log) o.log(absl::StrCat("[", tag, "] ", line));
  };
  const Clock::time_point start = Clock::now();
  const std::string schedule = o.kd_lr_schedule.empty() ? plan.lr_schedule : o.kd_lr_schedule;
  const double block_lr = o.kd_block_lr > 0.0 ? o.kd_block_lr : o.kd_lr;  // Of the block-wise stage.
  ModelMethodResult res;
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Tokenizer> tokenizer, runtime::LoadTokenizer(o.model_dir));
  runtime::ModelOptions mopts;
  mopts.num_threads = o.threads;
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> fp_model, runtime::Model::Load(o.model_dir, mopts));
  const runtime::ModelConfig config = fp_model->config();  // A copy: fp_model is released early.
  if (o.kd_seq_len < 2 || o.kd_seq_len > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(tag, ": sequence length must be in [2, ",
                                                   config.max_position_embeddings, "], got ", o.kd_seq_len));
  }

  // A checkpoint to resume from, when asked for and present.
  std::string fingerprint;
  std::optional<DistillCheckpoint> resume;
  if (!o.resume_dir.empty()) {
    LCD_ASSIGN_OR_RETURN(fingerprint, Fingerprint(o, weights, plan));
    LCD_ASSIGN_OR_RETURN(resume, LoadDistillCheckpoint(o.resume_dir, fingerprint));
    if (resume) {
      log(absl::StrFormat("resuming from %s: stage %s, %s %d", o.resume_dir, resume->state.stage,
                          resume->state.stage == "kd" ? "step" : "block",
                          resume->state.stage == "kd" ? resume->state.step : resume->state.next_block));
    }
  }

  // Step 1: calibration sequences.
  Sequences seqs;
  if (resume) {
    seqs.tokens = std::move(resume->tokens);
    seqs.count = resume->seq_count;
    seqs.length = resume->seq_length;
    res.calibration = resume->state.calibration;
    if (seqs.length != o.kd_seq_len) return absl::DataLossError("checkpoint: sequence length differs from its settings");
    for (int32_t t : seqs.tokens) {
      if (t < 0 || t >= config.vocab_size) return absl::DataLossError("checkpoint: a sequence token is outside the vocabulary");
    }
  } else if (o.calib_path.empty()) {
    std::optional<int32_t> bos = tokenizer->bos_id();
    const int32_t first = bos ? *bos : 0;  // No BOS: start every sample from token 0.
    LCD_ASSIGN_OR_RETURN(seqs, TeacherGenerated(o, *fp_model, *tokenizer, first, tag, log));
    res.calibration = absl::StrFormat("teacher-generated: samples:%d tokens:%d temperature:%g seed:%d start:%d",
                                      seqs.count, seqs.length, o.kd_temperature, o.kd_seed, first);
  } else {
    LCD_ASSIGN_OR_RETURN(seqs, FromText(o, *tokenizer));
    LCD_ASSIGN_OR_RETURN(std::string sha, runtime::Sha256File(o.calib_path));
    res.calibration =
        CalibrationFileProvenance(o.calib_path, sha, absl::StrCat("sequences:", seqs.count, " tokens:", seqs.length));
  }
  // The last ~10% of the sequences (at least one, at most kMaxHeldOut) are
  // held out for the KL figures; with speculative re-assignment as many
  // before them judge the proposals. The cap bounds what every evaluation
  // costs when the calibration set is large: 32 x 128 tokens already give
  // the held-out KL to about 1%.
  constexpr int64_t kMaxHeldOut = 32;
  const int64_t held = std::clamp<int64_t>(seqs.count / 10, 1, kMaxHeldOut);
  const int64_t spec_n = o.kd_speculative ? held : 0;
  const int64_t train_n = seqs.count - held - spec_n;
  if (train_n < 1) {
    return absl::InvalidArgumentError(absl::StrCat(tag, ": ", seqs.count, " calibration sequences leave none to train on"));
  }
  const int64_t spec_begin = train_n, spec_end = train_n + spec_n;

  // The init's statistics: E[x_j^2] of every linear input (and E[x x^T] where
  // the plan asks) over the training sequences.
  CalibrationStats stats;
  {
    std::vector<int32_t> flat;
    const std::optional<int32_t> bos = tokenizer->bos_id();
    for (int64_t i = 0; i < train_n; ++i) {
      const int32_t* s = seqs.at(i);
      const bool has_bos = bos && s[0] == *bos;
      flat.insert(flat.end(), s + (has_bos ? 1 : 0), s + seqs.length);
    }
    CalibrationOptions copts;
    copts.window = seqs.length;
    copts.bos = bos;
    copts.gram_for = plan.gram_for;
    copts.progress = [&](int64_t done, int64_t total) {
      if (done == total || done % std::max<int64_t>(1, total / 10) == 0) {
        log(absl::StrFormat("calibration statistics: window %d/%d, elapsed %.1fs", done, total, Seconds(start)));
      }
    };
    LCD_ASSIGN_OR_RETURN(stats, CollectCalibrationStats(*fp_model, flat, copts));
  }
  fp_model.reset();

  // The method's init, into the student.
  const int threads = o.threads;
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<tr::TrainModel> teacher, tr::TrainModel::FromCheckpoint(o.model_dir, threads));
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<tr::TrainModel> student, tr::TrainModel::FromCheckpoint(o.model_dir, threads));
  {
    std::vector<std::pair<std::string, std::unique_ptr<tr::LoopQuantizer>>> quantizers;
    for (const std::string& w : weights) {
      LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, student->Find(w));
      if (t->shape.size() != 2) return absl::InvalidArgumentError(absl::StrCat(w, " is not a matrix"));
      LCD_ASSIGN_OR_RETURN(std::unique_ptr<tr::LoopQuantizer> q, plan.make(w, t->shape[0], t->shape[1]));
      quantizers.emplace_back(w, std::move(q));
    }
    LCD_RETURN_IF_ERROR(student->EnableQuantized(std::move(quantizers)));
  }
  student->FreezeDense(true);
  std::vector<std::string> changed_dense;
  if (plan.prepare) {
    LCD_ASSIGN_OR_RETURN(changed_dense, plan.prepare(*student, stats, res));
  }
  if (plan.act_bits != 0) {
    LCD_RETURN_IF_ERROR(student->SetActivationBits(plan.act_bits));
    res.activation_bits = plan.act_bits;
  }
  for (const std::string& w : weights) {
    LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, student->Find(w));
    LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(w));
    float* params = ParamsOf(*student, w, *q);
    absl::Status s = plan.init(w, student->params() + t->offset, params, *q, stats, student->pool());
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(w, ": ", s.message()));
  }
  log(absl::StrFormat("%s of %d linears (b=%d, g=%d), elapsed %.1fs", plan.init_name, weights.size(), o.bits,
                      o.group_size, Seconds(start)));

  TeacherLogits tlog(*teacher, seqs, o.kd_teacher_cache_mb << 20);
  log(tlog.caching()
          ? absl::StrFormat("teacher logits cached in memory (%.0f MB for %d sequences)", tlog.bytes() / 1048576.0,
                            seqs.count)
          : absl::StrFormat("teacher logits recomputed every step: caching them needs %.0f MB, over "
                            "--teacher-cache-mb %d",
                            tlog.bytes() / 1048576.0, o.kd_teacher_cache_mb));

  // Step 5: gamma = mean teacher top-1 probability over the training sequences.
  const int64_t L = seqs.length, V = config.vocab_size, B = std::min(o.kd_batch, train_n);
  double gamma = 0.0;
  KdEval init;
  double eval_seconds = 0.0;  // What one held-out evaluation takes (unmeasured after a resume: 0).
  if (resume) {
    gamma = resume->state.gamma;
    init.cakld = resume->state.init_cakld;
    init.kl = resume->state.init_kl;
    // The cache is filled as an uninterrupted run fills it (in these
    // batches): a logit's last bits depend on which sequences shared its
    // teacher batch, and a resumed run must write the same artifact.
    for (int64_t i = 0; tlog.caching() && i < train_n; i += B) {
      LCD_RETURN_IF_ERROR(tlog.Range(i, std::min(B, train_n - i)).status());
    }
  } else {
    // Over the first kGammaSeqs training sequences (all of them when the
    // cache holds them: it is filled here, in these batches).
    constexpr int64_t kGammaSeqs = 128;
    const int64_t fill = tlog.caching() ? train_n : std::min(train_n, kGammaSeqs);
    double top = 0.0;
    int64_t counted = 0;
    for (int64_t i = 0; i < fill; i += B) {
      const int64_t b = std::min(B, fill - i);
      LCD_ASSIGN_OR_RETURN(const float* t, tlog.Range(i, b));
      if (i >= kGammaSeqs) continue;
      top += tr::MeanTopProbability(t, b * L, V) * static_cast<double>(b * L);
      counted += b * L;
    }
    gamma = top / static_cast<double>(counted);
    const Clock::time_point e0 = Clock::now();
    LCD_ASSIGN_OR_RETURN(init, Evaluate(*student, tlog, seqs, spec_end, seqs.count, B, gamma));
    eval_seconds = Seconds(e0);
  }
  log(absl::StrFormat("gamma %.4f; held-out (%d seqs) after init: cakld %.5f, kl %.5f", gamma, held,
                      init.cakld, init.kl));

  // LCD.md step 4: progressive block-wise tuning. Block l of the student (its
  // input from the already tuned blocks 0..l-1) is fitted to the teacher's
  // output of block l (MSE) on its own trainable tensors.
  std::mt19937_64 rng(o.kd_seed);
  std::vector<int64_t> order(static_cast<size_t>(train_n));
  std::iota(order.begin(), order.end(), 0);
  size_t next = order.size();
  std::vector<int32_t> batch(static_cast<size_t>(B * L));
  std::vector<int64_t> batch_ids(static_cast<size_t>(B));
  auto next_batch = [&] {
    for (int64_t b = 0; b < B; ++b) {
      if (next == order.size()) {
        std::shuffle(order.begin(), order.end(), rng);
        next = 0;
      }
      batch_ids[static_cast<size_t>(b)] = order[next];
      std::copy(seqs.at(order[next]), seqs.at(order[next]) + L, batch.begin() + b * L);
      ++next;
    }
  };

  // Checkpoints (with o.resume_dir): where the run stands and everything
  // that trains. `opt` is the end-to-end optimiser (nullptr in the
  // block-wise stage, whose per-block optimisers start fresh each block).
  DistillState st;
  st.gamma = gamma;
  st.init_cakld = init.cakld;
  st.init_kl = init.kl;
  st.calibration = res.calibration;
  std::vector<tr::ParamTensor> trainable = student->TrainableTensors();
  // o.kd_lr_scale "rms": each quantized weight's latent lr (and its
  // quantizer parameters') scaled by RMS(W) / RMS over all quantized
  // weights, W as initialised; --lr keeps its meaning on average.
  if (o.kd_lr_scale == "rms") {
    std::map<std::string, double> rms;
    double all = 0.0;
    int64_t all_n = 0;
    for (const std::string& w : weights) {
      LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, student->Find(w));
      const float* p = student->params() + t->offset;
      double ss = 0.0;
      for (int64_t i = 0; i < t->size; ++i) ss += static_cast<double>(p[i]) * p[i];
      rms[w.substr(0, w.size() - std::string_view(".weight").size())] = std::sqrt(ss / static_cast<double>(t->size));
      all += ss;
      all_n += t->size;
    }
    const double global = std::sqrt(all / static_cast<double>(std::max<int64_t>(1, all_n)));
    for (tr::ParamTensor& t : trainable) {
      const size_t dot = t.name.rfind('.');
      auto it = rms.find(t.name.substr(0, dot));
      if (it != rms.end() && global > 0.0) t.lr_scale = static_cast<float>(it->second / global);
    }
    double lo = 1e30, hi = 0.0;
    for (const tr::ParamTensor& t : trainable) lo = std::min<double>(lo, t.lr_scale), hi = std::max<double>(hi, t.lr_scale);
    log(absl::StrFormat("lr scaled by RMS(W) per tensor: factors %.3f .. %.3f (RMS over all %.4g)", lo, hi, global));
  }
  auto save = [&](tr::AdamW* opt) -> absl::Status {
    if (o.resume_dir.empty()) return absl::OkStatus();
    std::ostringstream rng_state;
    rng_state << rng;
    st.rng = rng_state.str();
    st.order = order;
    st.next = static_cast<int64_t>(next);
    st.adam_steps = opt != nullptr ? opt->steps_taken() : 0;
    DistillPayloadView p;
    p.tokens = &seqs.tokens;
    p.seq_count = seqs.count;
    p.seq_length = seqs.length;
    for (const tr::ParamTensor& t : trainable) {
      p.tensors.push_back({t.name, {student->params() + t.offset, t.size}});
      p.tensor_offsets.push_back(t.offset);
    }
    if (opt != nullptr) {
      p.adam_m = opt->m();
      p.adam_v = opt->v();
    }
    for (const std::string& w : weights) {
      LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(w));
      p.codes.push_back({w, &q->codes()});
    }
    const Clock::time_point t0 = Clock::now();
    LCD_RETURN_IF_ERROR(SaveDistillCheckpoint(o.resume_dir, fingerprint, st, p));
    log(absl::StrFormat("checkpoint saved to %s (stage %s, %s %d) in %.1fs", o.resume_dir, st.stage,
                        st.stage == "kd" ? "step" : "block", st.stage == "kd" ? st.step : st.next_block,
                        Seconds(t0)));
    return absl::OkStatus();
  };
  // Restores what trains, the batch order and (kd stage) the optimiser.
  auto restore = [&](const DistillCheckpoint& cp, tr::AdamW* opt) -> absl::Status {
    if (cp.tensors.size() != trainable.size() || cp.codes.size() != weights.size()) {
      return absl::DataLossError("checkpoint: its tensors are not the student's");
    }
    for (size_t i = 0; i < trainable.size(); ++i) {
      const tr::ParamTensor& t = trainable[i];
      if (cp.tensors[i].first != t.name || static_cast<int64_t>(cp.tensors[i].second.size()) != t.size) {
        return absl::DataLossError(absl::StrCat("checkpoint: tensor ", i, " is ", cp.tensors[i].first, ", not ", t.name));
      }
      std::copy(cp.tensors[i].second.begin(), cp.tensors[i].second.end(), student->params() + t.offset);
      if (opt != nullptr && !cp.adam_m.empty()) {
        std::copy(cp.adam_m[i].begin(), cp.adam_m[i].end(), opt->m() + t.offset);
        std::copy(cp.adam_v[i].begin(), cp.adam_v[i].end(), opt->v() + t.offset);
      }
    }
    for (size_t i = 0; i < weights.size(); ++i) {
      LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(weights[i]));
      if (cp.codes[i].first != weights[i] || cp.codes[i].second.size() != q->codes().size()) {
        return absl::DataLossError(absl::StrCat("checkpoint: codes ", i, " are not those of ", weights[i]));
      }
      for (uint8_t c : cp.codes[i].second) {
        if (c > q->max_code()) return absl::DataLossError(absl::StrCat("checkpoint: a code of ", weights[i], " is out of range"));
      }
      q->codes() = cp.codes[i].second;
    }
    std::istringstream rng_state(cp.state.rng);
    rng_state >> rng;
    if (!rng_state || cp.state.order.size() != order.size() || cp.state.next > static_cast<int64_t>(order.size())) {
      return absl::DataLossError("checkpoint: batch order state is corrupt");
    }
    std::vector<int64_t> sorted = cp.state.order;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (sorted[i] != static_cast<int64_t>(i)) return absl::DataLossError("checkpoint: batch order is not a permutation");
    }
    order = cp.state.order;
    next = static_cast<size_t>(cp.state.next);
    if (opt != nullptr) opt->set_steps_taken(cp.state.adam_steps);
    st = cp.state;
    return absl::OkStatus();
  };
  // Whole-job fraction after `blocks` tuned blocks and `steps` end-to-end
  // steps: the stages share 0.1..kModelMethodProgressEnd by their work, a
  // block-wise step taken as 1/num_layers of an end-to-end one.
  auto fraction = [&](int64_t blocks, int64_t steps) {
    const double bw = o.kd_block_steps > 0 ? static_cast<double>(o.kd_block_steps) : 0.0;
    const double done = bw * static_cast<double>(blocks) / config.num_layers + static_cast<double>(steps);
    return 0.1 + (kModelMethodProgressEnd - 0.1) * done / std::max(1.0, bw + static_cast<double>(o.kd_steps));
  };
  const bool resume_kd = resume && resume->state.stage == "kd";
  int64_t first_block = 0;
  if (resume && !resume_kd) {
    LCD_RETURN_IF_ERROR(restore(*resume, nullptr));
    first_block = resume->state.next_block;
  } else if (!resume) {
    st.stage = o.kd_block_steps > 0 ? "blockwise" : "kd";
    LCD_RETURN_IF_ERROR(save(nullptr));  // The init and the sequences: a retry repeats no generation.
  }
  if (o.kd_block_steps > 0 && !resume_kd) {
    // Per training sequence, the student's input to block l (from its tuned
    // blocks 0..l-1) and the teacher's output of block l: a step runs block
    // l alone, and once it is tuned (and its codes re-assigned) both move one
    // block on. A resumed run rebuilds them the same way, so it stays exact.
    const int64_t C = config.hidden_size, row = L * C, n = B * row;
    std::vector<float> s_in(static_cast<size_t>(train_n * row)), t_out(s_in.size());
    log(absl::StrFormat("block-wise stage: block inputs and teacher block outputs of %d sequences kept (%.0f MB)",
                        train_n, 2.0 * static_cast<double>(s_in.size()) * sizeof(float) / 1048576.0));
    // The cache's sequences through block l of m, batch by batch (the same
    // batches in every run: a row's last bits may depend on its batch).
    auto advance = [&](tr::TrainModel& m, std::vector<float>& cache, int64_t l) -> absl::Status {
      for (int64_t i = 0; i < train_n; i += B) {
        const int64_t b = std::min(B, train_n - i);
        float* x = cache.data() + i * row;
        LCD_RETURN_IF_ERROR(m.ForwardBlocks(x, b, L, l, l + 1));
        std::copy(m.residual(l + 1), m.residual(l + 1) + b * row, x);
      }
      return absl::OkStatus();
    };
    for (int64_t i = 0; i < train_n; i += B) {
      const int64_t b = std::min(B, train_n - i);
      LCD_RETURN_IF_ERROR(student->Forward(seqs.at(i), b, L, 0));
      std::copy(student->residual(0), student->residual(0) + b * row, s_in.begin() + i * row);
      LCD_RETURN_IF_ERROR(teacher->Forward(seqs.at(i), b, L, 0));
      std::copy(teacher->residual(0), teacher->residual(0) + b * row, t_out.begin() + i * row);
    }
    LCD_RETURN_IF_ERROR(advance(*teacher, t_out, 0));
    for (int64_t l = 0; l < first_block; ++l) {  // Resumed: the blocks already tuned.
      LCD_RETURN_IF_ERROR(advance(*student, s_in, l));
      LCD_RETURN_IF_ERROR(advance(*teacher, t_out, l + 1));
    }
    std::vector<float> x(static_cast<size_t>(n)), target(x.size()), dout(x.size());
    for (int64_t l = first_block; l < config.num_layers; ++l) {
      const Clock::time_point block_start = Clock::now();
      const std::string prefix = absl::StrCat("model.layers.", l, ".");
      std::vector<tr::ParamTensor> block;
      for (const tr::ParamTensor& t : trainable) {
        if (t.name.starts_with(prefix)) block.push_back(t);
      }
      tr::AdamW bopt(student->num_params(), tr::AdamWOptions{});
      const tr::LrSchedule bs = Schedule(block_lr, o.kd_block_steps, schedule);
      double first = 0.0, last = 0.0;
      for (int64_t step = 0; step < o.kd_block_steps; ++step) {
        if (o.kd_reassign_every > 0 && step > 0 && step % o.kd_reassign_every == 0) student->ReassignCodes(prefix);
        next_batch();
        for (int64_t k = 0; k < B; ++k) {
          const int64_t id = batch_ids[static_cast<size_t>(k)];
          std::copy(s_in.begin() + id * row, s_in.begin() + (id + 1) * row, x.begin() + k * row);
          std::copy(t_out.begin() + id * row, t_out.begin() + (id + 1) * row, target.begin() + k * row);
        }
        student->ZeroGrad();
        LCD_RETURN_IF_ERROR(student->ForwardBlocks(x.data(), B, L, l, l + 1));
        const float* s = student->residual(l + 1);
        double mse = 0.0, norm = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          const double d = static_cast<double>(s[i]) - target[i];
          mse += d * d;
          norm += static_cast<double>(target[i]) * target[i];
          dout[i] = static_cast<float>(2.0 * d / static_cast<double>(n));
        }
        student->BackwardBlocks(dout.data(), l);
        tr::ClipGradNorm(student->grads(), student->num_params(), 1.0);
        bopt.Step(student->params(), student->grads(), block, bs.At(step), student->pool());
        last = mse / std::max(norm, 1e-30);
        if (step == 0) first = last;
      }
      student->ReassignCodes(prefix);
      if (l + 1 < config.num_layers) {
        LCD_RETURN_IF_ERROR(advance(*student, s_in, l));
        LCD_RETURN_IF_ERROR(advance(*teacher, t_out, l + 1));
      }
      const double el = Seconds(start);
      const std::string line = absl::StrFormat(
          "block %d/%d tuned: relative output error %.5f -> %.5f in %.1fs, elapsed %.1fs, ETA %.1fs", l + 1,
          config.num_layers, first, last, Seconds(block_start), el,
          Seconds(block_start) * static_cast<double>(config.num_layers - l - 1));
      log(line);
      if (o.progress) o.progress("blockwise", fraction(l + 1, 0), absl::StrCat("[", tag, "] ", line));
      st.next_block = l + 1;
      if (l + 1 < config.num_layers) LCD_RETURN_IF_ERROR(save(nullptr));
    }
    student->ReassignCodes();
    LCD_ASSIGN_OR_RETURN(KdEval after_blocks, Evaluate(*student, tlog, seqs, spec_end, seqs.count, B, gamma));
    log(absl::StrFormat("held-out after block-wise tuning: cakld %.5f, kl %.5f", after_blocks.cakld,
                        after_blocks.kl));
    st.blockwise_kl = after_blocks.kl;
    st.stage = "kd";
    st.step = 0;
    LCD_RETURN_IF_ERROR(save(nullptr));
  }

  // End-to-end distillation: AdamW on latent weights and quantizer parameters.
  tr::AdamW opt(student->num_params(), tr::AdamWOptions{});
  if (resume_kd) LCD_RETURN_IF_ERROR(restore(*resume, &opt));
  resume.reset();
  if (st.blockwise_kl) res.quality["heldout_kl_teacher_blockwise"] = *st.blockwise_kl;
  const tr::LrSchedule sched = Schedule(o.kd_lr, o.kd_steps, schedule);
  double& first_loss = st.first_loss;
  double& last_loss = st.last_loss;
  int64_t& changed_total = st.changed_total;
  int64_t& proposals = st.proposals;
  int64_t& accepted = st.accepted;
  double loss_sum = 0.0;
  int64_t loss_n = 0;
  std::vector<std::vector<uint8_t>> saved_codes(weights.size());
  // LCD.md step 6's centroid merge/split, proposed after the re-assignment
  // and judged like it against `current`, the judging loss as it stands.
  // Kept: the AdamW moments of the changed groups' centroids restart at 0
  // (a split centroid is a new parameter).
  auto propose_merge_split = [&](int64_t step, const KdEval& current) -> absl::Status {
    std::vector<std::vector<float>> saved_params(weights.size());
    std::vector<std::vector<int64_t>> changed(weights.size());
    int64_t groups = 0;
    for (size_t i = 0; i < weights.size(); ++i) {
      LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, student->Find(weights[i]));
      LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(weights[i]));
      float* params = ParamsOf(*student, weights[i], *q);
      if (params == nullptr) continue;
      int64_t n = 1;
      for (int64_t d : q->param_shape()) n *= d;
      saved_params[i].assign(params, params + n);
      saved_codes[i] = q->codes();
      groups += q->MergeSplit(student->params() + t->offset, params, static_cast<float>(o.kd_merge_split_tau),
                              &changed[i]);
    }
    if (groups == 0) {
      log(absl::StrFormat("step %d: no centroid pair nearer than %g x its group's range", step, o.kd_merge_split_tau));
      return absl::OkStatus();
    }
    LCD_ASSIGN_OR_RETURN(KdEval after, Evaluate(*student, tlog, seqs, spec_begin, spec_end, B, gamma));
    ++st.ms_proposals;
    const bool keep = after.cakld <= current.cakld;
    for (size_t i = 0; i < weights.size(); ++i) {
      if (changed[i].empty()) continue;
      LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(weights[i]));
      float* params = ParamsOf(*student, weights[i], *q);
      if (!keep) {
        std::copy(saved_params[i].begin(), saved_params[i].end(), params);
        q->codes() = saved_codes[i];
        continue;
      }
      const int64_t k = q->param_shape().back();
      const int64_t offset = params - student->params();
      for (int64_t g : changed[i]) {
        std::fill(opt.m() + offset + g * k, opt.m() + offset + (g + 1) * k, 0.0f);
        std::fill(opt.v() + offset + g * k, opt.v() + offset + (g + 1) * k, 0.0f);
      }
    }
    if (keep) {
      ++st.ms_accepted;
      st.ms_groups += groups;
    }
    log(absl::StrFormat("step %d: merge/split of %d centroid groups %s (judging cakld %.5f -> %.5f)", step, groups,
                        keep ? "accepted" : "rolled back", current.cakld, after.cakld));
    return absl::OkStatus();
  };
  const Clock::time_point train_start = Clock::now();
  const int64_t first_step = st.step;
  constexpr int64_t kBudgetProbeSteps = 3;
  for (int64_t step = first_step; step < o.kd_steps; ++step) {
    if (o.kd_reassign_every > 0 && step > 0 && step % o.kd_reassign_every == 0) {
      if (!o.kd_speculative) {
        changed_total += student->ReassignCodes();
      } else {
        // LCD.md step 6: apply the proposed re-assignment tentatively; keep it only
        // when the KD loss on the judging sequences does not rise. Scope "model":
        // one proposal, every code at once; "block": one proposal per decoder
        // block, front to back, each judged against the loss as the blocks
        // before it left it.
        LCD_ASSIGN_OR_RETURN(KdEval current, Evaluate(*student, tlog, seqs, spec_begin, spec_end, B, gamma));
        const double start_cakld = current.cakld;
        const bool per_block = o.kd_speculative_scope == "block";
        const int64_t scopes = per_block ? config.num_layers : 1;
        int64_t kept = 0, judged = 0, kept_codes = 0, proposed_codes = 0;
        double judged_cakld = start_cakld;  // The last judgement's loss (logged).
        for (int64_t b = 0; b < scopes; ++b) {
          const std::string prefix = per_block ? absl::StrCat("model.layers.", b, ".") : std::string();
          for (size_t i = 0; i < weights.size(); ++i) {
            if (!weights[i].starts_with(prefix)) continue;
            LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(weights[i]));
            saved_codes[i] = q->codes();
          }
          const int64_t changed = student->ReassignCodes(prefix);
          if (changed == 0) continue;  // Nothing proposed in this block.
          LCD_ASSIGN_OR_RETURN(KdEval after, Evaluate(*student, tlog, seqs, spec_begin, spec_end, B, gamma));
          ++proposals;
          ++judged;
          proposed_codes += changed;
          judged_cakld = after.cakld;
          if (after.cakld <= current.cakld) {
            ++accepted;
            ++kept;
            kept_codes += changed;
            current = after;
          } else {
            for (size_t i = 0; i < weights.size(); ++i) {
              if (!weights[i].starts_with(prefix)) continue;
              LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(weights[i]));
              q->codes() = saved_codes[i];
            }
          }
        }
        changed_total += kept_codes;
        if (judged == 0) {
          log(absl::StrFormat("step %d: re-assignment would change no code", step));
        } else if (per_block) {
          log(absl::StrFormat("step %d: per-block re-assignment: kept %d of %d blocks (%d of %d codes), judging "
                              "cakld %.5f -> %.5f", step, kept, judged, kept_codes, proposed_codes, start_cakld,
                              current.cakld));
        } else {
          log(absl::StrFormat("step %d: re-assignment of %d codes %s (judging cakld %.5f -> %.5f)", step,
                              proposed_codes, kept > 0 ? "accepted" : "rolled back", start_cakld, judged_cakld));
        }
        if (o.kd_merge_split_tau > 0.0) {
          LCD_RETURN_IF_ERROR(propose_merge_split(step, current));
        }
      }
    }
    next_batch();
    LCD_ASSIGN_OR_RETURN(const float* t, tlog.Get(batch_ids.data(), B));
    student->ZeroGrad();
    LCD_RETURN_IF_ERROR(student->Forward(batch.data(), B, L));
    const double loss = tr::CakldLoss(student->logits(), t, B * L, V, gamma, student->dlogits(), student->pool());
    student->Backward();
    tr::ClipGradNorm(student->grads(), student->num_params(), 1.0);
    opt.Step(student->params(), student->grads(), trainable, sched.At(step), student->pool());
    if (step == 0) first_loss = loss;
    last_loss = loss;
    loss_sum += loss;
    ++loss_n;
    const int64_t every = std::max<int64_t>(1, o.kd_steps / 50);
    if ((step + 1) % every == 0 || step + 1 == o.kd_steps) {
      const double el = Seconds(train_start);
      const std::string line =
          absl::StrFormat("[%s] step %d/%d cakld %.5f (mean of last %d: %.5f) lr %.2e, elapsed %.1fs, ETA %.1fs",
                          tag, step + 1, o.kd_steps, loss, loss_n, loss_sum / loss_n, sched.At(step), el,
                          el / (step + 1 - first_step) * (o.kd_steps - step - 1));
      if (o.log) o.log(line);
      if (o.progress) o.progress("distill", fraction(config.num_layers, step + 1), line);
      loss_sum = 0.0;
      loss_n = 0;
    }
    st.step = step + 1;
    // The budget check, once the first steps are measured: what is spent,
    // plus the remaining steps at the measured pace, plus a final held-out
    // evaluation as long as the first one took.
    const int64_t probe = std::min<int64_t>(kBudgetProbeSteps, o.kd_steps - first_step);
    if (o.time_budget_s > 0.0 && st.step - first_step == probe) {
      const double per_step = Seconds(train_start) / static_cast<double>(st.step - first_step);
      const double spent = Seconds(start);
      const double projected = spent + per_step * static_cast<double>(o.kd_steps - st.step) + eval_seconds;
      if (projected > o.time_budget_s) {
        const int64_t fit = st.step + static_cast<int64_t>(std::max(0.0, (o.time_budget_s - spent - eval_seconds) /
                                                                             per_step));
        return absl::ResourceExhaustedError(absl::StrFormat(
            "%s: at %.1f s per step (%.0f s spent so far), %d steps need about %.0f s in all, over the time budget "
            "of %.0f s; about %d steps fit: ask for fewer --steps or a larger budget",
            tag, per_step, spent, o.kd_steps, projected, o.time_budget_s, fit));
      }
      log(absl::StrFormat("time budget: projected %.0f s of %.0f s (%.1f s per step)", projected, o.time_budget_s,
                          per_step));
    }
    if (o.kd_eval_every > 0 && st.step % o.kd_eval_every == 0 && st.step < o.kd_steps) {
      LCD_ASSIGN_OR_RETURN(KdEval e, Evaluate(*student, tlog, seqs, spec_end, seqs.count, B, gamma));
      st.kl_curve.emplace_back(st.step, e.kl);
      const std::string line = absl::StrFormat("[%s] held-out after step %d (%d training tokens): cakld %.5f, kl %.5f",
                                               tag, st.step, st.step * B * L, e.cakld, e.kl);
      if (o.log) o.log(line);
      if (o.progress) o.progress("distill", fraction(config.num_layers, st.step), line);
    }
    if (!o.resume_dir.empty() && st.step % o.kd_checkpoint_every == 0 && st.step < o.kd_steps) {
      LCD_RETURN_IF_ERROR(save(&opt));
    }
  }

  // What the artifact will store (e.g. fp16 parameters), so that the final
  // figures measure it.
  if (plan.finalize) {
    for (const std::string& w : weights) {
      LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, student->Find(w));
      LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(w));
      plan.finalize(w, student->params() + t->offset, ParamsOf(*student, w, *q), *q);
    }
  }
  LCD_ASSIGN_OR_RETURN(KdEval fin, Evaluate(*student, tlog, seqs, spec_end, seqs.count, B, gamma));
  log(absl::StrFormat("held-out after %d steps: cakld %.5f (init %.5f), kl %.5f (init %.5f), %.1fs",
                      o.kd_steps, fin.cakld, init.cakld, fin.kl, init.kl, Seconds(start)));
  for (const std::string& w : weights) {
    LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, student->Find(w));
    LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(w));
    absl::StatusOr<QuantizedMatrix> m = plan.pack(w, student->params() + t->offset, ParamsOf(*student, w, *q), *q);
    if (!m.ok()) return absl::Status(m.status().code(), absl::StrCat(w, ": ", m.status().message()));
    res.matrices.emplace(w, std::move(*m));
  }

  for (const std::string& name : changed_dense) {
    LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, student->Find(name));
    const float* p = student->params() + t->offset;
    res.dense[name].assign(p, p + t->size);
  }
  res.params["steps"] = std::to_string(o.kd_steps);
  res.params["lr"] = absl::StrFormat("%g", o.kd_lr);
  res.params["lr_scale"] = o.kd_lr_scale;
  res.params["schedule"] = schedule == "constant" ? "constant" : "cosine to 0.1x, warmup 5%";
  res.params["batch"] = std::to_string(B);
  res.params["seq_len"] = std::to_string(L);
  res.params["reassign_every"] = std::to_string(o.kd_reassign_every);
  res.params["loss"] = "cakld";
  res.params["gamma"] = absl::StrFormat("%.6f", gamma);
  res.params["seed"] = std::to_string(o.kd_seed);
  res.params["trained"] = plan.trained;
  res.params["stages"] = absl::StrCat(plan.init_name, o.kd_block_steps > 0 ? ", blockwise" : "", ", e2e-kd",
                                      o.kd_speculative ? ", speculative" : "",
                                      o.kd_merge_split_tau > 0.0 ? ", merge-split" : "");
  res.params["block_steps"] = std::to_string(o.kd_block_steps);
  if (o.kd_block_steps > 0) res.params["block_lr"] = absl::StrFormat("%g", block_lr);
  if (o.kd_merge_split_tau > 0.0) res.params["merge_split_tau"] = absl::StrFormat("%g", o.kd_merge_split_tau);
  if (o.kd_speculative) {
    res.params["speculative_scope"] = o.kd_speculative_scope;
    res.quality["speculative_proposals"] = static_cast<double>(proposals);
    res.quality["speculative_acceptance"] = proposals > 0 ? static_cast<double>(accepted) / proposals : 0.0;
    if (o.kd_merge_split_tau > 0.0) {
      res.quality["speculative_merge_split_proposals"] = static_cast<double>(st.ms_proposals);
      res.quality["speculative_merge_split_acceptance"] =
          st.ms_proposals > 0 ? static_cast<double>(st.ms_accepted) / static_cast<double>(st.ms_proposals) : 0.0;
      res.quality["speculative_merge_split_groups"] = static_cast<double>(st.ms_groups);
    }
  }
  res.quality["kd_gamma"] = gamma;
  res.quality["kd_loss_first_step"] = first_loss;
  res.quality["kd_loss_last_step"] = last_loss;
  res.quality["heldout_cakld_init"] = init.cakld;
  res.quality["heldout_cakld"] = fin.cakld;
  res.quality["heldout_kl_teacher_init"] = init.kl;
  res.quality["heldout_kl_teacher"] = fin.kl;
  for (const auto& [steps, kl] : st.kl_curve) res.quality[absl::StrCat("heldout_kl_step_", steps)] = kl;
  res.quality["codes_reassigned"] = static_cast<double>(changed_total);
  res.quality[tag + "_seconds"] = Seconds(start);
  return res;
}

}  // namespace lcd::quantizer::internal
