// The continuous-batching engine: one thread per model runs
// Schedule -> one batched Forward -> sample -> UpdateFromOutput.
#include "lcd/runtime/engine.h"

#include <algorithm>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/kv_cache.h"
#include "lcd/runtime/scheduler.h"
#include "src/engine/sequence.h"

namespace lcd::runtime {
namespace {

bool Contains(const std::vector<int32_t>& v, int32_t x) { return std::find(v.begin(), v.end(), x) != v.end(); }

class EngineImpl final : public Engine {
 public:
  EngineImpl(std::shared_ptr<Model> model, std::shared_ptr<const Tokenizer> tokenizer,
             const EngineOptions& options, KvCache cache, int64_t max_context)
      : model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        options_(options),
        max_context_(max_context),
        cache_(std::move(cache)),
        allocator_(cache_.num_blocks()),
        scheduler_(&allocator_, options.block_size) {
    eos_ids_ = model_->config().eos_token_ids;
    if (eos_ids_.empty() && tokenizer_ != nullptr && tokenizer_->eos_id().has_value()) eos_ids_.push_back(*tokenizer_->eos_id());
    stats_.kv_blocks_total = cache_.num_blocks();
    thread_ = std::thread([this] { Loop(); });
  }

  ~EngineImpl() override { Shutdown(absl::ZeroDuration()); }

  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(GenerationRequest request) override;
  void Shutdown(absl::Duration drain) override;
  EngineStats Stats() const override {
    absl::MutexLock lock(&mu_);
    EngineStats s = stats_;
    s.waiting += static_cast<int64_t>(inbox_.size());
    return s;
  }
  const Model& model() const override { return *model_; }
  const Tokenizer& tokenizer() const override { return *tokenizer_; }

 private:
  absl::Status Validate(const GenerationRequest& r) const;
  void Loop();
  // Moves new requests into the scheduler; returns false when the thread
  // should exit (shutdown and nothing left).
  bool TakeInbox();
  void PollCancellations();
  void RunIteration();
  // model_->Forward, plus a check that it returned one logit row per entry.
  absl::StatusOr<ForwardOutput> ForwardChecked(const std::vector<SeqBatchEntry>& batch);
  // Records `r`'s newly sampled token, checks the stop conditions and pushes
  // its event (the final one when it finished); returns true when finished.
  bool OnToken(ActiveRequest& r, int32_t token);
  bool HasInboxOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !inbox_.empty() || stopping_; }
  // Pushes the final event. The caller takes care of the scheduler.
  void Finish(ActiveRequest& r, FinishReason reason, absl::Status error, GenerationEvent event = {});
  void PublishStats();

  const std::shared_ptr<Model> model_;
  const std::shared_ptr<const Tokenizer> tokenizer_;
  const EngineOptions options_;
  const int64_t max_context_;
  std::vector<int32_t> eos_ids_;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<ActiveRequest>> inbox_ ABSL_GUARDED_BY(mu_);
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  EngineStats stats_ ABSL_GUARDED_BY(mu_);

  absl::Mutex join_mu_;
  std::thread thread_ ABSL_GUARDED_BY(join_mu_);

  // Engine thread only.
  KvCache cache_;
  BlockAllocator allocator_;
  Scheduler scheduler_;
  std::map<int64_t, std::unique_ptr<ActiveRequest>> active_;
  int64_t iterations_ = 0;
  int64_t preemptions_ = 0;
};

absl::Status EngineImpl::Validate(const GenerationRequest& r) const {
  if (r.prompt_tokens.empty()) return absl::InvalidArgumentError("prompt is empty");
  const int64_t vocab = model_->config().vocab_size;
  for (size_t i = 0; i < r.prompt_tokens.size(); ++i) {
    const int32_t t = r.prompt_tokens[i];
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token ", i, " has id ", t, ", outside the vocabulary [0, ", vocab, ")"));
    }
  }
  LCD_RETURN_IF_ERROR(r.sampling.Validate());
  if (tokenizer_ == nullptr && !r.sampling.stop_strings.empty()) {
    return absl::InvalidArgumentError("stop strings need a tokenizer; this engine has none");
  }
  if (r.num_logprobs < 0 || r.num_logprobs > 20) {
    return absl::InvalidArgumentError(absl::StrCat("num_logprobs must be in [0, 20], got ", r.num_logprobs));
  }
  const int64_t total = static_cast<int64_t>(r.prompt_tokens.size()) + r.sampling.max_new_tokens;
  if (total > max_context_) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", r.prompt_tokens.size(), " tokens) + max_new_tokens (",
                                                   r.sampling.max_new_tokens, ") exceeds the context of ",
                                                   max_context_, " tokens"));
  }
  // The scheduler's own admission rule, checked here so the caller gets the
  // error synchronously (scheduler_ itself belongs to the engine thread).
  const int64_t blocks = (total + options_.block_size - 1) / options_.block_size;
  if (blocks > cache_.num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("request needs up to ", total, " tokens of KV cache (",
                                                   blocks, " blocks) but the cache holds ",
                                                   cache_.num_blocks(), " blocks"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<RequestHandle>> EngineImpl::Submit(GenerationRequest request) {
  LCD_RETURN_IF_ERROR(Validate(request));
  auto handle = std::make_shared<RequestHandle>(request.request_id);
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("engine is shutting down");
  if (static_cast<int64_t>(inbox_.size()) + stats_.waiting >= options_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request queue is full (", options_.max_waiting, " waiting)"));
  }
  // Ids are handed out under the lock that orders the inbox, so id order is
  // arrival order (the scheduler's notion of age).
  inbox_.push_back(std::make_unique<ActiveRequest>(next_id_++, std::move(request), handle, tokenizer_.get()));
  return handle;
}

void EngineImpl::Shutdown(absl::Duration drain) {
  {
    absl::MutexLock lock(&mu_);
    const absl::Time deadline = absl::Now() + drain;
    if (!stopping_ || deadline < drain_deadline_) drain_deadline_ = deadline;
    stopping_ = true;
  }
  absl::MutexLock lock(&join_mu_);
  if (thread_.joinable()) thread_.join();
}

void EngineImpl::Loop() {
  while (TakeInbox()) {
    PollCancellations();
    RunIteration();
    PublishStats();
  }
  PublishStats();
}

bool EngineImpl::TakeInbox() {
  std::deque<std::unique_ptr<ActiveRequest>> arrived;
  bool drain_expired = false, stopping = false;
  {
    absl::MutexLock lock(&mu_);
    if (!scheduler_.has_work()) {
      // Only mutex-guarded state in the condition: Abseil may evaluate it on
      // another thread.
      mu_.Await(absl::Condition(this, &EngineImpl::HasInboxOrStopping));
    }
    arrived.swap(inbox_);
    // Keep Submit's queue bound exact until the next PublishStats.
    stats_.waiting += static_cast<int64_t>(arrived.size());
    stopping = stopping_;
    drain_expired = stopping_ && absl::Now() >= drain_deadline_;
  }
  for (auto& r : arrived) {
    const int64_t id = r->id;
    absl::Status st = scheduler_.Add(id, r->request.prompt_tokens, r->request.sampling.max_new_tokens);
    if (!st.ok()) {  // Submit validated the same rule; kept for safety.
      Finish(*r, FinishReason::kError, st);
      continue;
    }
    active_.emplace(id, std::move(r));
  }
  if (drain_expired) {
    for (auto& [id, r] : active_) {
      Finish(*r, FinishReason::kCancelled, absl::OkStatus());
      scheduler_.Cancel(id);
    }
    active_.clear();
    scheduler_.Schedule({options_.max_num_seqs, 0});  // Frees the cancelled sequences' blocks.
  }
  return !(stopping && !scheduler_.has_work());
}

void EngineImpl::PollCancellations() {
  const absl::Time now = absl::Now();
  for (auto it = active_.begin(); it != active_.end();) {
    ActiveRequest& r = *it->second;
    if (r.handle->cancelled()) {
      Finish(r, FinishReason::kCancelled, absl::OkStatus());
    } else if (now >= r.request.deadline) {
      Finish(r, FinishReason::kCancelled, absl::DeadlineExceededError("request deadline exceeded"));
    }
    if (r.done) {
      scheduler_.Cancel(it->first);  // Blocks are freed by the next Schedule.
      it = active_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<ForwardOutput> EngineImpl::ForwardChecked(const std::vector<SeqBatchEntry>& batch) {
  absl::StatusOr<ForwardOutput> out = model_->Forward(batch, cache_);
  if (out.ok() && out->num_rows != static_cast<int64_t>(batch.size())) {
    return absl::InternalError(absl::StrCat("Forward returned ", out->num_rows, " logit rows for ",
                                            batch.size(), " sequences"));
  }
  return out;
}

void EngineImpl::RunIteration() {
  const StepPlan plan = scheduler_.Schedule({options_.max_num_seqs, options_.max_tokens_per_iteration});
  // Publish admissions before any event of this step is delivered, so a
  // caller who has seen a token never finds its request still counted as
  // waiting (Submit's queue bound reads these counts).
  PublishStats();
  for (size_t i = 0; i < plan.preempted.size(); ++i) {
    ++preemptions_;
    if (options_.observer != nullptr) options_.observer->OnPreemption();
  }
  if (plan.empty()) {
    // Work exists but none fits this step (cannot persist: a lone sequence
    // always fits); avoid spinning hot meanwhile.
    if (scheduler_.has_work()) absl::SleepFor(absl::Milliseconds(1));
    return;
  }

  const absl::Time step_start = absl::Now();
  std::vector<SeqBatchEntry> batch;
  batch.reserve(plan.chunks.size());
  for (const ScheduledChunk& c : plan.chunks) {
    const SchedSequence* seq = scheduler_.Find(c.seq_id);
    LCD_CHECK(seq != nullptr);
    ActiveRequest& r = *active_.at(c.seq_id);
    if (r.first_scheduled == absl::InfinitePast()) r.first_scheduled = step_start;
    SeqBatchEntry e;
    e.tokens.assign(seq->tokens.begin() + c.start_pos, seq->tokens.begin() + c.start_pos + c.num_tokens);
    e.start_pos = c.start_pos;
    e.block_table = &seq->block_table;
    batch.push_back(std::move(e));
  }

  const int64_t vocab = model_->config().vocab_size;
  // errors[i] is the fault of sequence i alone: a batch that fails is run
  // again one sequence at a time, so one bad sequence never fails the rest
  // (Forward validates before it writes, and a rerun writes the same K/V).
  std::vector<absl::Status> errors(batch.size());
  absl::StatusOr<ForwardOutput> out = ForwardChecked(batch);
  if (!out.ok()) {
    if (batch.size() == 1) {
      errors[0] = out.status();
    } else {
      LCD_LOG(WARNING) << "batched forward of " << batch.size() << " sequences failed (" << out.status()
                       << "); running them one at a time";
      ForwardOutput merged;
      merged.num_rows = static_cast<int64_t>(batch.size());
      merged.logits.assign(batch.size() * static_cast<size_t>(vocab), 0.0f);
      for (size_t i = 0; i < batch.size(); ++i) {
        absl::StatusOr<ForwardOutput> one = ForwardChecked({batch[i]});
        if (one.ok()) {
          std::copy(one->logits.begin(), one->logits.end(), merged.logits.begin() + static_cast<int64_t>(i) * vocab);
        } else {
          errors[i] = one.status();
        }
      }
      out = std::move(merged);
    }
  }
  const absl::Duration forward_time = absl::Now() - step_start;
  std::vector<ChunkOutput> outputs(plan.chunks.size());
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    const ScheduledChunk& c = plan.chunks[i];
    auto it = active_.find(c.seq_id);
    ActiveRequest& r = *it->second;
    if (!errors[i].ok()) {
      LCD_LOG(ERROR) << "request " << r.request.request_id << ": forward failed: " << errors[i];
      Finish(r, FinishReason::kError, errors[i]);
    } else if (c.samples) {
      float* row = out->logits.data() + static_cast<int64_t>(i) * vocab;
      outputs[i].new_token = r.sampler.Sample(row, vocab, r.request.prompt_tokens, r.output_tokens);
      OnToken(r, outputs[i].new_token);
    }
    if (r.done) {
      outputs[i].finished = true;
      active_.erase(it);
    }
  }
  scheduler_.UpdateFromOutput(plan, outputs);
  ++iterations_;
  if (options_.observer != nullptr) {
    options_.observer->OnIteration(static_cast<int64_t>(plan.chunks.size()), plan.num_tokens, forward_time);
  }
}

bool EngineImpl::OnToken(ActiveRequest& r, int32_t token) {
  const absl::Time now = absl::Now();
  EngineObserver* obs = options_.observer;
  if (r.first_token == absl::InfinitePast()) {
    r.first_token = now;
    if (obs != nullptr) obs->OnFirstToken(now - r.submit_time);
  } else if (obs != nullptr) {
    obs->OnToken(now - r.last_token);
  }
  r.last_token = now;
  r.output_tokens.push_back(token);

  GenerationEvent ev;
  ev.token_ids.push_back(token);
  if (r.request.num_logprobs > 0) {
    ev.logprobs.push_back({token, r.sampler.last_logprob(), r.sampler.last_top_logprobs()});
  }
  const SamplingParams& sp = r.request.sampling;
  FinishReason reason = FinishReason::kNone;
  bool stopped = false;
  if (!sp.ignore_eos && Contains(eos_ids_, token)) {
    reason = FinishReason::kEos;  // The EOS/stop token's own text is never emitted.
  } else if (Contains(sp.stop_token_ids, token)) {
    reason = FinishReason::kStop;
  } else {
    ev.text = r.stop_filter.Add(r.detokenizer.Push(token), /*final=*/false, &stopped);
    if (stopped) {
      reason = FinishReason::kStop;
    } else if (static_cast<int64_t>(r.output_tokens.size()) >= sp.max_new_tokens ||
               static_cast<int64_t>(r.request.prompt_tokens.size() + r.output_tokens.size()) >= max_context_) {
      reason = FinishReason::kLength;
    }
  }
  if (reason == FinishReason::kNone) {
    r.handle->Push(std::move(ev));
    return false;
  }
  if (!stopped) {
    // Release what the detokenizer and the stop filter still hold; a stop
    // string completed by that tail still counts as a stop.
    ev.text += r.stop_filter.Add(r.detokenizer.Flush(), /*final=*/true, &stopped);
    if (stopped) reason = FinishReason::kStop;
  }
  Finish(r, reason, absl::OkStatus(), std::move(ev));
  return true;
}

void EngineImpl::Finish(ActiveRequest& r, FinishReason reason, absl::Status error, GenerationEvent event) {
  if (r.done) return;
  r.done = true;
  const absl::Time now = absl::Now();
  if (reason == FinishReason::kCancelled) {
    // Text already generated but held back (partial character, possible stop
    // string prefix) still belongs to the output.
    bool stopped = false;
    event.text += r.stop_filter.Add(r.detokenizer.Flush(), /*final=*/true, &stopped);
  }
  event.finish = reason;
  event.error = std::move(error);
  event.prompt_tokens = static_cast<int64_t>(r.request.prompt_tokens.size());
  event.completion_tokens = static_cast<int64_t>(r.output_tokens.size());
  const absl::Time scheduled = r.first_scheduled == absl::InfinitePast() ? now : r.first_scheduled;
  event.queue_time = scheduled - r.submit_time;
  if (r.first_token != absl::InfinitePast()) event.time_to_first_token = r.first_token - r.submit_time;
  if (options_.observer != nullptr) {
    options_.observer->OnRequestFinished(reason, event.prompt_tokens, event.completion_tokens,
                                         now - r.submit_time, event.queue_time);
  }
  r.handle->Push(std::move(event));
}

void EngineImpl::PublishStats() {
  absl::MutexLock lock(&mu_);
  stats_.running = scheduler_.num_running();
  stats_.waiting = scheduler_.num_waiting();
  stats_.kv_blocks_total = allocator_.num_blocks();
  stats_.kv_blocks_used = allocator_.num_blocks() - allocator_.num_free();
  stats_.iterations = iterations_;
  stats_.preemptions = preemptions_;
}

}  // namespace

std::string_view FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kEos: return "eos";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::shared_ptr<Model> model,
                                                       std::shared_ptr<const Tokenizer> tokenizer,
                                                       const EngineOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("a model is required");
  const ModelConfig& cfg = model->config();
  if (options.block_size < 1 || options.max_num_seqs < 1 || options.max_tokens_per_iteration < 1 ||
      options.max_waiting < 1 || options.max_context < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine options must be positive: block_size=", options.block_size, " max_num_seqs=", options.max_num_seqs,
        " max_tokens_per_iteration=", options.max_tokens_per_iteration, " max_waiting=", options.max_waiting,
        " max_context=", options.max_context));
  }
  if (options.max_context > cfg.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("max_context ", options.max_context,
                                                   " exceeds the model's max_position_embeddings ",
                                                   cfg.max_position_embeddings));
  }
  // A model with a sliding window serves contexts up to the window (Forward
  // refuses longer ones); admission enforces that per request instead of
  // failing a whole batch.
  const int64_t model_context = cfg.ServableContext();
  if (options.max_context > model_context) {
    return absl::InvalidArgumentError(absl::StrCat("max_context ", options.max_context,
                                                   " exceeds the model's sliding window ", model_context));
  }
  const int64_t max_context = options.max_context > 0 ? options.max_context : model_context;
  const kernels::KvLayout layout = model->KvLayoutFor(options.block_size, options.kv_dtype);
  const int64_t num_blocks = KvCache::BlocksForBytes(cfg.num_layers, layout, options.kv_cache_bytes);
  if (num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_cache_bytes ", options.kv_cache_bytes,
                                                   " does not hold one KV block of ", options.block_size,
                                                   " tokens"));
  }
  LCD_ASSIGN_OR_RETURN(KvCache cache, model->backend().CreateKvCache(cfg.num_layers, layout, num_blocks));
  LCD_LOG(INFO) << "engine: " << num_blocks << " KV blocks of " << options.block_size << " tokens ("
                << cache.bytes() / (1 << 20) << " MiB " << kernels::DTypeName(options.kv_dtype)
                << "), max_context " << max_context << ", on " << model->backend().Describe();
  return std::unique_ptr<Engine>(
      new EngineImpl(std::move(model), std::move(tokenizer), options, std::move(cache), max_context));
}

}  // namespace lcd::runtime
