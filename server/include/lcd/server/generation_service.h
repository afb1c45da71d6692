// lcd.v1.GenerationService on the gRPC callback API.
//
// Threads: the gRPC reactor threads only accept calls and post work; the
// engine thread only steps the model and posts. Everything else runs on the
// service's call queue (calls(), a TaskQueue of call_threads workers):
// Generate and GenerateStream validate the request (request_validation.h),
// tokenize it and Submit it to the model's engine there; the engine pushes
// events into the request's handle, whose notify posts one delivery task
// per call (coalesced while one is pending) that moves them into the
// response (unary) or into the next stream write (streaming; one write in
// flight at a time, and events that arrive meanwhile are coalesced into the
// next message). Tokenize and Detokenize also run there. Prompts (text or
// text_bytes of Generate, text of Tokenize) are capped at kMaxPromptBytes. Client cancellation and
// deadlines cancel the engine request (its KV blocks are freed at the next
// iteration). Each finished request logs one INFO line:
//   request id=.. model=.. version=.. prompt_tokens=.. completion_tokens=..
//     queue_ms=.. ttft_ms=.. e2e_ms=.. finish=.. status=..
//
// Status codes: INVALID_ARGUMENT for bad requests (see request_validation.h),
// NOT_FOUND for an unknown model, UNAVAILABLE while a model loads or the
// server drains, RESOURCE_EXHAUSTED when the engine's queue is full (and, from
// gRPC itself, for messages above the receive limit), CANCELLED /
// DEADLINE_EXCEEDED as the client asked.
//
// Thread safety: the service object is shared by all calls; it holds no
// per-call state.
#ifndef LCD_SERVER_GENERATION_SERVICE_H_
#define LCD_SERVER_GENERATION_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "lcd/base/task_queue.h"
#include "lcd/server/model_registry.h"
#include "lcd/server/server_metrics.h"
#include "lcd/v1/generate.grpc.pb.h"

namespace lcd::server {

class GenerationServiceImpl final : public lcd::v1::GenerationService::CallbackService {
 public:
  // Neither is owned; both must outlive the service. `metrics` may be null.
  // call_threads: workers of the call queue (<= 0: AvailableCpus() clamped
  // to [2, 4]).
  GenerationServiceImpl(ModelRegistry* registry, ServerMetrics* metrics, int call_threads = 0);
  // Runs the call tasks still queued (the gRPC server must have been shut
  // down first, so no call is left waiting on them).
  ~GenerationServiceImpl() override;

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* ctx,
                                     const lcd::v1::GenerateRequest* request,
                                     lcd::v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<lcd::v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* ctx, const lcd::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const lcd::v1::TokenizeRequest* request,
                                     lcd::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx,
                                       const lcd::v1::DetokenizeRequest* request,
                                       lcd::v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const lcd::v1::GetModelInfoRequest* request,
                                         lcd::v1::ModelInfo* response) override;

  // Everything a call needs once it is accepted.
  struct Prepared {
    std::shared_ptr<ModelInstance> model;
    runtime::GenerationRequest request;
  };
  // Validation + tokenization; no side effects.
  absl::StatusOr<Prepared> Prepare(const lcd::v1::GenerateRequest& request, absl::Time deadline);

  // Prepare + Engine::Submit. If the engine refuses with Unavailable because
  // a hot swap retired it between lookup and submit, retries once on the
  // model's new version, so a swap never bounces a new request.
  struct Admitted {
    std::shared_ptr<ModelInstance> model;
    std::shared_ptr<runtime::RequestHandle> handle;
    std::string request_id;
  };
  absl::StatusOr<Admitted> Admit(const lcd::v1::GenerateRequest& request, absl::Time deadline);

  ModelRegistry* registry() const { return registry_; }
  ServerMetrics* metrics() const { return metrics_; }
  TaskQueue& calls() const { return *calls_; }

 private:
  ModelRegistry* const registry_;
  ServerMetrics* const metrics_;
  std::atomic<uint64_t> next_id_{1};
  std::unique_ptr<TaskQueue> calls_;
};

}  // namespace lcd::server

#endif  // LCD_SERVER_GENERATION_SERVICE_H_
