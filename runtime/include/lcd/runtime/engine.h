// The continuous-batching engine: one engine thread per loaded model runs
// iterations. Each iteration the scheduler (scheduler.h) picks running
// sequences and admits waiting ones within a token budget (chunked prefill
// mixed with decode); all of them run as ONE batched Model::Forward; the
// sampler picks each sequence's next token; new tokens are detokenized
// incrementally and pushed to the request's handle.
//
// Threading: Submit/Cancel/Stats/Shutdown are thread-safe and never block on
// the engine thread's work (they take a short lock). Events are delivered by
// the engine thread into the handle's queue; consumers either block in
// RequestHandle::Next or register a non-blocking notify callback (the gRPC
// reactor's way) and drain with TryNext.
#ifndef LCD_RUNTIME_ENGINE_H_
#define LCD_RUNTIME_ENGINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/sampler.h"
#include "lcd/runtime/tokenizer.h"

namespace lcd::runtime {

enum class FinishReason { kNone = 0, kLength, kStop, kEos, kCancelled, kError };
std::string_view FinishReasonName(FinishReason r);

struct GenerationRequest {
  std::string request_id;
  std::vector<int32_t> prompt_tokens;  // Non-empty; validated by Submit.
  SamplingParams sampling;
  int num_logprobs = 0;                // Top-n alternatives per token, 0..20.
  absl::Time deadline = absl::InfiniteFuture();
};

struct TokenLogprobs {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::vector<Sampler::TokenLogprob> top;
};

// One chunk of output. The last event of a request has finish != kNone and
// carries usage and timing. `error` is set when finish == kError, and to
// DeadlineExceeded when finish == kCancelled because the request's deadline
// passed (a client's Cancel leaves it OK). Token ids of an EOS or stop token
// are reported; their text, and a matched stop string, are not.
struct GenerationEvent {
  std::vector<int32_t> token_ids;
  std::string text;  // Complete UTF-8 only (see IncrementalDetokenizer).
  std::vector<TokenLogprobs> logprobs;
  FinishReason finish = FinishReason::kNone;
  absl::Status error;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  absl::Duration queue_time;           // Submit -> first scheduled.
  absl::Duration time_to_first_token;  // Submit -> first token.
};

// The consumer side of one request. Shared by the engine (producer) and the
// caller; lives as long as either holds it.
class RequestHandle {
 public:
  explicit RequestHandle(std::string request_id) : request_id_(std::move(request_id)) {}
  const std::string& request_id() const { return request_id_; }

  // Blocks until an event is available; false once the final event has been
  // returned (or `timeout` passed, then *timed_out is set when non-null).
  bool Next(GenerationEvent* event, absl::Duration timeout = absl::InfiniteDuration(),
            bool* timed_out = nullptr);
  // Non-blocking: false when nothing is queued right now.
  bool TryNext(GenerationEvent* event);
  // `notify` runs on the engine thread whenever an event is queued; it must
  // not block. Events queued before the call trigger one immediate notify.
  // The handle releases the callback once the final event is queued, so a
  // callback may own its consumer's state (which owns this handle) without
  // creating a reference cycle.
  void SetNotify(std::function<void()> notify);
  // Asks the engine to stop this request; it ends with kCancelled at the
  // next iteration and its KV blocks are freed. Idempotent.
  void Cancel();
  bool cancelled() const;
  bool finished() const;

  // Producer side (engine only).
  void Push(GenerationEvent event);

 private:
  const std::string request_id_;
  mutable absl::Mutex mu_;
  std::deque<GenerationEvent> queue_ ABSL_GUARDED_BY(mu_);
  std::function<void()> notify_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool final_pushed_ ABSL_GUARDED_BY(mu_) = false;
  bool final_popped_ ABSL_GUARDED_BY(mu_) = false;
};

// Hooks for metrics; implemented by the server (runtime knows no Prometheus).
// Called on the engine thread; implementations must be cheap and not block.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void OnIteration(int64_t num_seqs, int64_t num_tokens, absl::Duration forward_time) {}
  virtual void OnFirstToken(absl::Duration ttft) {}
  virtual void OnToken(absl::Duration inter_token_latency) {}
  virtual void OnRequestFinished(FinishReason reason, int64_t prompt_tokens,
                                 int64_t completion_tokens, absl::Duration e2e_latency,
                                 absl::Duration queue_time) {}
  virtual void OnPreemption() {}
};

struct EngineOptions {
  int64_t block_size = 16;
  uint64_t kv_cache_bytes = 256ull << 20;
  int64_t max_num_seqs = 32;              // Running sequences per iteration.
  int64_t max_tokens_per_iteration = 512; // Token budget (prefill chunks + decodes).
  int64_t max_waiting = 256;              // Queue bound; beyond -> ResourceExhausted.
  int64_t max_context = 0;                // 0 = model's max_position_embeddings.
  // KV cache element type. fp16 halves the cache (twice the tokens in the
  // same bytes) for a relative error of 2^-11 per stored value; the
  // transformers parity tests use fp32.
  kernels::DType kv_dtype = kernels::DType::kF16;
  EngineObserver* observer = nullptr;     // Not owned; may be null.
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  int64_t iterations = 0;
  int64_t preemptions = 0;
};

class Engine {
 public:
  // Starts the engine thread. The engine shares ownership of the model and
  // tokenizer (a hot-swapped model stays alive until its engine is gone).
  // tokenizer may be null (token ids in, token ids out: no text, and stop
  // strings are refused); tokenizer() must then not be called.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::shared_ptr<Model> model,
                                                        std::shared_ptr<const Tokenizer> tokenizer,
                                                        const EngineOptions& options);
  virtual ~Engine() = default;  // Cancels everything and joins the thread.

  // Queues a request. Errors (nothing queued then): InvalidArgument for an
  // empty prompt, out-of-range token ids or sampling values, stop strings
  // without a tokenizer, prompt +
  // max_new_tokens beyond the context; ResourceExhausted when the waiting
  // queue is full; Unavailable after Shutdown began.
  virtual absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(GenerationRequest request) = 0;

  // Stops admitting, lets running and waiting requests finish until `drain`
  // elapses, then cancels the rest and stops the thread. Blocks until done.
  virtual void Shutdown(absl::Duration drain) = 0;

  // A snapshot taken after the last iteration: it may trail the events
  // already delivered to handles by one iteration.
  virtual EngineStats Stats() const = 0;
  virtual const Model& model() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_ENGINE_H_
