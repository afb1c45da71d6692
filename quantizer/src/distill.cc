// The distillation driver (contract in distill.h).
#include "src/distill.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
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

// Mean per-token CAKLD and forward KL of the student against the teacher over
// sequences [begin, end) (no gradients).
struct KdEval {
  double cakld = 0.0, kl = 0.0;
};
absl::StatusOr<KdEval> Evaluate(tr::TrainModel& student, tr::TrainModel& teacher, const Sequences& seqs,
                                int64_t begin, int64_t end, int64_t batch, double gamma) {
  KdEval e;
  int64_t rows = 0;
  const int64_t L = seqs.length, V = student.config().vocab_size;
  for (int64_t i = begin; i < end; i += batch) {
    const int64_t b = std::min(batch, end - i);
    LCD_RETURN_IF_ERROR(teacher.Forward(seqs.at(i), b, L));
    LCD_RETURN_IF_ERROR(student.Forward(seqs.at(i), b, L));
    e.cakld += tr::CakldLoss(student.logits(), teacher.logits(), b * L, V, gamma, nullptr, student.pool()) *
               static_cast<double>(b * L);
    e.kl += tr::ForwardKlLoss(student.logits(), teacher.logits(), b * L, V, nullptr, student.pool()) *
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

}  // namespace

absl::StatusOr<ModelMethodResult> RunDistillation(const QuantizeModelOptions& o, const std::vector<std::string>& weights,
                                                  const DistillPlan& plan) {
  const std::string& tag = plan.tag;
  auto log = [&](const std::string& line) {
    if (o.log) o.log(absl::StrCat("[", tag, "] ", line));
  };
  const Clock::time_point start = Clock::now();
  const std::string schedule = o.kd_lr_schedule.empty() ? plan.lr_schedule : o.kd_lr_schedule;
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

  // Step 1: calibration sequences.
  Sequences seqs;
  if (o.calib_path.empty()) {
    std::optional<int32_t> bos = tokenizer->bos_id();
    const int32_t first = bos ? *bos : 0;  // No BOS: start every sample from token 0.
    LCD_ASSIGN_OR_RETURN(seqs, TeacherGenerated(o, *fp_model, *tokenizer, first, tag, log));
    res.calibration = absl::StrFormat("teacher-generated: samples:%d tokens:%d temperature:%g seed:%d start:%d",
                                      seqs.count, seqs.length, o.kd_temperature, o.kd_seed, first);
  } else {
    LCD_ASSIGN_OR_RETURN(seqs, FromText(o, *tokenizer));
    LCD_ASSIGN_OR_RETURN(std::string sha, runtime::Sha256File(o.calib_path));
    res.calibration = absl::StrCat("file:", std::filesystem::path(o.calib_path).filename().string(),
                                   " sha256:", sha, " sequences:", seqs.count, " tokens:", seqs.length);
  }
  // The last ~10% of the sequences (at least one) are held out for the KL
  // figures; with speculative re-assignment the ~10% before them (at least
  // one) judge the proposals.
  const int64_t held = std::max<int64_t>(1, seqs.count / 10);
  const int64_t spec_n = o.kd_speculative ? std::max<int64_t>(1, seqs.count / 10) : 0;
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
  for (const std::string& w : weights) {
    LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, student->Find(w));
    LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(w));
    float* params = ParamsOf(*student, w, *q);
    absl::Status s = plan.init(w, student->params() + t->offset, params, *q, stats, student->pool());
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(w, ": ", s.message()));
  }
  log(absl::StrFormat("%s of %d linears (b=%d, g=%d), elapsed %.1fs", plan.init_name, weights.size(), o.bits,
                      o.group_size, Seconds(start)));

  // Step 5: gamma = mean teacher top-1 probability over the training sequences.
  const int64_t L = seqs.length, V = config.vocab_size, B = std::min(o.kd_batch, train_n);
  double top = 0.0;
  for (int64_t i = 0; i < train_n; i += B) {
    const int64_t b = std::min(B, train_n - i);
    LCD_RETURN_IF_ERROR(teacher->Forward(seqs.at(i), b, L));
    top += tr::MeanTopProbability(teacher->logits(), b * L, V) * static_cast<double>(b * L);
  }
  const double gamma = top / static_cast<double>(train_n * L);
  LCD_ASSIGN_OR_RETURN(KdEval init, Evaluate(*student, *teacher, seqs, spec_end, seqs.count, B, gamma));
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
  auto next_batch = [&] {
    for (int64_t b = 0; b < B; ++b) {
      if (next == order.size()) {
        std::shuffle(order.begin(), order.end(), rng);
        next = 0;
      }
      std::copy(seqs.at(order[next]), seqs.at(order[next]) + L, batch.begin() + b * L);
      ++next;
    }
  };
  if (o.kd_block_steps > 0) {
    const int64_t C = config.hidden_size, n = B * L * C;
    std::vector<float> dout(static_cast<size_t>(n));
    for (int64_t l = 0; l < config.num_layers; ++l) {
      const std::string prefix = absl::StrCat("model.layers.", l, ".");
      std::vector<tr::ParamTensor> block;
      for (const tr::ParamTensor& t : student->TrainableTensors()) {
        if (t.name.starts_with(prefix)) block.push_back(t);
      }
      tr::AdamW bopt(student->num_params(), tr::AdamWOptions{});
      const tr::LrSchedule bs = Schedule(o.kd_lr, o.kd_block_steps, schedule);
      double first = 0.0, last = 0.0;
      for (int64_t step = 0; step < o.kd_block_steps; ++step) {
        if (o.kd_reassign_every > 0 && step > 0 && step % o.kd_reassign_every == 0) student->ReassignCodes();
        next_batch();
        LCD_RETURN_IF_ERROR(teacher->Forward(batch.data(), B, L, l + 1));
        student->ZeroGrad();
        LCD_RETURN_IF_ERROR(student->Forward(batch.data(), B, L, l + 1));
        const float* s = student->residual(l + 1);
        const float* t = teacher->residual(l + 1);
        double mse = 0.0, norm = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          const double d = static_cast<double>(s[i]) - t[i];
          mse += d * d;
          norm += static_cast<double>(t[i]) * t[i];
          dout[i] = static_cast<float>(2.0 * d / static_cast<double>(n));
        }
        student->BackwardBlocks(dout.data(), l);
        tr::ClipGradNorm(student->grads(), student->num_params(), 1.0);
        bopt.Step(student->params(), student->grads(), block, bs.At(step), student->pool());
        last = mse / std::max(norm, 1e-30);
        if (step == 0) first = last;
      }
      log(absl::StrFormat("block %d/%d tuned: relative output error %.5f -> %.5f, elapsed %.1fs", l + 1,
                          config.num_layers, first, last, Seconds(start)));
    }
    student->ReassignCodes();
    LCD_ASSIGN_OR_RETURN(KdEval after_blocks, Evaluate(*student, *teacher, seqs, spec_end, seqs.count, B, gamma));
    log(absl::StrFormat("held-out after block-wise tuning: cakld %.5f, kl %.5f", after_blocks.cakld,
                        after_blocks.kl));
    res.quality["heldout_kl_teacher_blockwise"] = after_blocks.kl;
  }

  // End-to-end distillation: AdamW on latent weights and quantizer parameters.
  const std::vector<tr::ParamTensor> trainable = student->TrainableTensors();
  tr::AdamW opt(student->num_params(), tr::AdamWOptions{});
  const tr::LrSchedule sched = Schedule(o.kd_lr, o.kd_steps, schedule);
  double first_loss = 0.0, last_loss = 0.0, loss_sum = 0.0;
  int64_t loss_n = 0, changed_total = 0, proposals = 0, accepted = 0;
  std::vector<std::vector<uint8_t>> saved_codes(weights.size());
  const Clock::time_point train_start = Clock::now();
  for (int64_t step = 0; step < o.kd_steps; ++step) {
    if (o.kd_reassign_every > 0 && step > 0 && step % o.kd_reassign_every == 0) {
      if (!o.kd_speculative) {
        changed_total += student->ReassignCodes();
      } else {
        // LCD.md step 6: apply the proposed re-assignment tentatively; keep it only
        // when the KD loss on the judging sequences does not rise.
        LCD_ASSIGN_OR_RETURN(KdEval before, Evaluate(*student, *teacher, seqs, spec_begin, spec_end, B, gamma));
        for (size_t i = 0; i < weights.size(); ++i) {
          const uint8_t* c = *student->codes(weights[i]);
          saved_codes[i].assign(c, c + student->Find(weights[i]).value()->size);
        }
        const int64_t changed = student->ReassignCodes();
        LCD_ASSIGN_OR_RETURN(KdEval after, Evaluate(*student, *teacher, seqs, spec_begin, spec_end, B, gamma));
        ++proposals;
        if (after.cakld <= before.cakld) {
          ++accepted;
          changed_total += changed;
        } else {
          for (size_t i = 0; i < weights.size(); ++i) {
            std::copy(saved_codes[i].begin(), saved_codes[i].end(), *student->codes(weights[i]));
          }
        }
        log(absl::StrFormat("step %d: re-assignment of %d codes %s (judging cakld %.5f -> %.5f)", step,
                            changed, after.cakld <= before.cakld ? "accepted" : "rolled back", before.cakld,
                            after.cakld));
      }
    }
    next_batch();
    LCD_RETURN_IF_ERROR(teacher->Forward(batch.data(), B, L));
    student->ZeroGrad();
    LCD_RETURN_IF_ERROR(student->Forward(batch.data(), B, L));
    const double loss =
        tr::CakldLoss(student->logits(), teacher->logits(), B * L, V, gamma, student->dlogits(), student->pool());
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
                          el / (step + 1) * (o.kd_steps - step - 1));
      if (o.log) o.log(line);
      if (o.progress) o.progress("distill", 0.1 + 0.7 * (step + 1) / o.kd_steps, line);
      loss_sum = 0.0;
      loss_n = 0;
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
  LCD_ASSIGN_OR_RETURN(KdEval fin, Evaluate(*student, *teacher, seqs, spec_end, seqs.count, B, gamma));
  log(absl::StrFormat("held-out after %d steps: cakld %.5f (init %.5f), kl %.5f (init %.5f), %.1fs",
                      o.kd_steps, fin.cakld, init.cakld, fin.kl, init.kl, Seconds(start)));
  for (const std::string& w : weights) {
    LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, student->Find(w));
    LCD_ASSIGN_OR_RETURN(tr::LoopQuantizer * q, student->quantizer(w));
    absl::StatusOr<QuantizedMatrix> m = plan.pack(w, student->params() + t->offset, ParamsOf(*student, w, *q), *q);
    if (!m.ok()) return absl::Status(m.status().code(), absl::StrCat(w, ": ", m.status().message()));
    res.matrices.emplace(w, std::move(*m));
  }

  res.params["steps"] = std::to_string(o.kd_steps);
  res.params["lr"] = absl::StrFormat("%g", o.kd_lr);
  res.params["schedule"] = schedule == "constant" ? "constant" : "cosine to 0.1x, warmup 5%";
  res.params["batch"] = std::to_string(B);
  res.params["seq_len"] = std::to_string(L);
  res.params["reassign_every"] = std::to_string(o.kd_reassign_every);
  res.params["loss"] = "cakld";
  res.params["gamma"] = absl::StrFormat("%.6f", gamma);
  res.params["seed"] = std::to_string(o.kd_seed);
  res.params["trained"] = plan.trained;
  res.params["stages"] = absl::StrCat(plan.init_name, o.kd_block_steps > 0 ? ", blockwise" : "", ", e2e-kd",
                                      o.kd_speculative ? ", speculative" : "");
  res.params["block_steps"] = std::to_string(o.kd_block_steps);
  if (o.kd_speculative) {
    res.quality["speculative_proposals"] = static_cast<double>(proposals);
    res.quality["speculative_acceptance"] = proposals > 0 ? static_cast<double>(accepted) / proposals : 0.0;
  }
  res.quality["kd_gamma"] = gamma;
  res.quality["kd_loss_first_step"] = first_loss;
  res.quality["kd_loss_last_step"] = last_loss;
  res.quality["heldout_cakld_init"] = init.cakld;
  res.quality["heldout_cakld"] = fin.cakld;
  res.quality["heldout_kl_teacher_init"] = init.kl;
  res.quality["heldout_kl_teacher"] = fin.kl;
  res.quality["codes_reassigned"] = static_cast<double>(changed_total);
  res.quality[tag + "_seconds"] = Seconds(start);
  return res;
}

}  // namespace lcd::quantizer::internal
