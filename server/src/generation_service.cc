#include "lcd/server/generation_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "lcd/base/cpu_limit.h"
#include "lcd/base/logging.h"
#include "lcd/base/status_macros.h"
#include "lcd/server/request_validation.h"
#include "lcd/server/status_mapping.h"
#include "src/generation_util.h"

namespace lcd::server {

using runtime::FinishReason;
using runtime::GenerationEvent;
using runtime::RequestHandle;

namespace {

// What every generation call shares between its reactor (gRPC threads) and
// the handle's notify callback (the engine thread, or the SetNotify caller).
// Held by shared_ptr from both sides, so a late notify never touches a
// deleted reactor: the reactor pointer is used only while !finished, and only
// the thread that sets `finished` calls Finish.
struct CallCore {
  GenerationServiceImpl* service = nullptr;
  grpc::CallbackServerContext* ctx = nullptr;
  std::shared_ptr<ModelInstance> model;
  std::shared_ptr<RequestHandle> handle;
  std::string request_id;
  absl::Time start;
  absl::Mutex mu;
  bool finished ABSL_GUARDED_BY(mu) = false;
  bool writing ABSL_GUARDED_BY(mu) = false;    // Streaming: a write is in flight.
  bool cancelled ABSL_GUARDED_BY(mu) = false;  // The client cancelled (perhaps before admission ended).
  std::atomic<bool> delivery_queued{false};    // A Drain/Pump task is posted and has not started.
};

// Runs `deliver` (Drain or Pump) on the service's call queue, at most one
// pending at a time per call: the engine thread's notify and gRPC's write
// completions only post, and events that arrive meanwhile are taken by the
// task already queued.
void ScheduleDelivery(const std::shared_ptr<CallCore>& core, std::function<void()> deliver) {
  if (core->delivery_queued.exchange(true)) return;
  auto task = [core, deliver] {
    core->delivery_queued = false;  // Before delivering: a later notify queues another run.
    deliver();
  };
  if (!core->service->calls().Post(task)) task();  // The queue is stopping: deliver inline.
}

// The final gRPC status for a request that ended with `ev`.
grpc::Status FinalStatus(const GenerationEvent& ev, grpc::CallbackServerContext* ctx) {
  if (ev.finish == FinishReason::kError) {
    return ToGrpcStatus(ev.error.ok() ? absl::InternalError("engine error") : ev.error);
  }
  // The engine stops a request at its deadline itself (ev.error is then
  // DeadlineExceeded), possibly before gRPC has marked the call cancelled:
  // the answer is DEADLINE_EXCEEDED either way, never OK with partial text.
  if (ev.finish == FinishReason::kCancelled && absl::IsDeadlineExceeded(ev.error)) {
    return ToGrpcStatus(ev.error);
  }
  if (ev.finish == FinishReason::kCancelled && ctx->IsCancelled()) {
    const bool expired = ctx->deadline() <= std::chrono::system_clock::now();
    return ToGrpcStatus(expired ? absl::DeadlineExceededError("deadline exceeded")
                                : absl::CancelledError("cancelled by the client"));
  }
  // Cancelled by the server (the drain of an unload, hot swap or shutdown
  // ran out): the output is truncated, and retrying elsewhere or later works.
  if (ev.finish == FinishReason::kCancelled) {
    return ToGrpcStatus(absl::UnavailableError(
        "the model was unloaded or the server shut down before the request finished; retry"));
  }
  return grpc::Status::OK;
}

void Finished(const CallCore& core, const GenerationEvent& ev, const grpc::Status& status) {
  LogRequest(core.request_id, core.model->name, core.model->version, ev, absl::Now() - core.start,
             status);
  if (core.service->metrics() != nullptr) {
    core.service->metrics()->RecordRequest(core.model->name, RequestStatusLabel(ev, status));
  }
}

absl::Time ContextDeadline(grpc::CallbackServerContext* ctx) {
  const auto deadline = ctx->deadline();
  const auto now = std::chrono::system_clock::now();
  // An unset deadline is the far future; keep it out of absl's arithmetic.
  if (deadline - now > std::chrono::hours(24 * 365)) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// Folds one engine event into a response message (GenerateResponse or
// GenerateStreamResponse, which share these fields). Returns true for the
// final event, after filling usage, timing and the finish reason.
template <typename Message>
bool AppendEvent(const GenerationEvent& ev, absl::Time start, Message* msg) {
  AppendChunk(ev, msg->mutable_token_ids(), msg->mutable_logprobs());
  msg->mutable_text()->append(ev.text);
  if (ev.finish == FinishReason::kNone) return false;
  FillFinal(ev, absl::Now() - start, msg->mutable_usage(), msg->mutable_timing());
  msg->set_finish_reason(ToProtoFinishReason(ev.finish));
  return true;
}

// Ends a call that was refused before reaching the engine (unary or
// streaming reactor alike): logs it, counts it, and finishes with its status.
template <typename Reactor>
void Reject(Reactor* reactor, CallCore& core, const std::string& model, const absl::Status& st);

// Admission, on the call queue (never on a gRPC reactor thread): validation,
// tokenization and Engine::Submit; then events flow through `deliver`.
// Returns false when the call was refused (and finished).
template <typename Reactor>
bool AdmitCall(const std::shared_ptr<CallCore>& core, Reactor* self, const lcd::v1::GenerateRequest* request,
               std::function<void()> deliver) {
  auto admitted = core->service->Admit(*request, ContextDeadline(core->ctx));
  if (!admitted.ok()) {
    Reject(self, *core, request->model(), admitted.status());
    return false;
  }
  std::shared_ptr<RequestHandle> handle = admitted->handle;
  bool cancelled;
  {
    absl::MutexLock lock(&core->mu);
    core->model = std::move(admitted->model);
    core->request_id = std::move(admitted->request_id);
    core->handle = handle;
    cancelled = core->cancelled;
  }
  if (cancelled) handle->Cancel();
  handle->SetNotify([core, deliver = std::move(deliver)] { ScheduleDelivery(core, deliver); });
  return true;
}

// Client cancellation, possibly before admission has produced a handle.
void CancelCall(CallCore& core) {
  std::shared_ptr<RequestHandle> handle;
  {
    absl::MutexLock lock(&core.mu);
    core.cancelled = true;
    handle = core.handle;
  }
  if (handle != nullptr) handle->Cancel();
}

template <typename Reactor>
void Reject(Reactor* reactor, CallCore& core, const std::string& model, const absl::Status& st) {
  LCD_LOG(INFO) << "request rejected model=" << model << " status=" << st;
  if (core.service->metrics() != nullptr) {
    core.service->metrics()->RecordRequest(MetricsModelLabel(core.service->registry(), model),
                                           "rejected");
  }
  {
    absl::MutexLock lock(&core.mu);
    core.finished = true;
  }
  reactor->Finish(ToGrpcStatus(st));
}

// ---------------------------------------------------------------- unary

class UnaryGenerate final : public grpc::ServerUnaryReactor {
 public:
  UnaryGenerate(GenerationServiceImpl* service, grpc::CallbackServerContext* ctx,
                const lcd::v1::GenerateRequest* request, lcd::v1::GenerateResponse* response)
      : core_(std::make_shared<CallCore>()), response_(response) {
    core_->service = service;
    core_->ctx = ctx;
    core_->start = absl::Now();
    // The constructor returns at once; admission runs on the call queue and
    // from there the engine drives the call.
    auto admit = [core = core_, self = this, request] {
      AdmitCall(core, self, request, [core, self] { Drain(core, self); });
    };
    if (!service->calls().Post(admit)) {
      Reject(this, *core_, request->model(), absl::UnavailableError("the server is shutting down"));
    }
  }

  void OnCancel() override { CancelCall(*core_); }
  void OnDone() override { delete this; }

 private:
  // Static: `self` is dereferenced only while the call is not finished,
  // which keeps the reactor alive (see CallCore).
  static void Drain(const std::shared_ptr<CallCore>& core, UnaryGenerate* self) {
    GenerationEvent ev;
    GenerationEvent last;
    bool done = false;
    {
      absl::MutexLock lock(&core->mu);
      if (core->finished) return;
      while (core->handle->TryNext(&ev)) {
        if (AppendEvent(ev, core->start, self->response_)) {
          self->response_->set_request_id(core->request_id);
          self->response_->set_model_version(core->model->version);
          last = std::move(ev);
          done = true;
          core->finished = true;
          break;
        }
      }
    }
    if (!done) return;
    const grpc::Status status = FinalStatus(last, core->ctx);
    Finished(*core, last, status);
    self->Finish(status);  // May delete self; nothing below touches it.
  }

  std::shared_ptr<CallCore> core_;
  lcd::v1::GenerateResponse* response_;
};

// ---------------------------------------------------------------- streaming

class StreamGenerate final : public grpc::ServerWriteReactor<lcd::v1::GenerateStreamResponse> {
 public:
  StreamGenerate(GenerationServiceImpl* service, grpc::CallbackServerContext* ctx,
                 const lcd::v1::GenerateRequest* request)
      : core_(std::make_shared<CallCore>()) {
    core_->service = service;
    core_->ctx = ctx;
    core_->start = absl::Now();
    auto admit = [core = core_, self = this, request] {
      AdmitCall(core, self, request, [core, self] { Pump(core, self); });
    };
    if (!service->calls().Post(admit)) {
      Reject(this, *core_, request->model(), absl::UnavailableError("the server is shutting down"));
    }
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&core_->mu);
      core_->writing = false;
    }
    // A failed write means the client is gone; the engine then ends the
    // request with kCancelled and Pump finishes the call.
    if (!ok) core_->handle->Cancel();
    ScheduleDelivery(core_, [core = core_, self = this] { Pump(core, self); });
  }
  void OnCancel() override { CancelCall(*core_); }
  void OnDone() override { delete this; }

 private:
  // Moves whatever the handle holds into the next message and starts one
  // write, unless one is already in flight (OnWriteDone pumps again then).
  // Static for the same reason as UnaryGenerate::Drain.
  static void Pump(const std::shared_ptr<CallCore>& core, StreamGenerate* self) {
    GenerationEvent ev;
    GenerationEvent last;
    bool any = false;
    bool done = false;
    {
      absl::MutexLock lock(&core->mu);
      if (core->finished || core->writing) return;
      self->msg_.Clear();
      while (core->handle->TryNext(&ev)) {
        any = true;
        if (AppendEvent(ev, core->start, &self->msg_)) {
          last = std::move(ev);
          done = true;
          core->finished = true;
          break;
        }
      }
      if (!any) return;
      self->msg_.set_request_id(core->request_id);
      self->msg_.set_model_version(core->model->version);
      core->writing = !done;
    }
    if (!done) {
      self->StartWrite(&self->msg_);
      return;
    }
    const grpc::Status status = FinalStatus(last, core->ctx);
    Finished(*core, last, status);
    if (status.ok()) {
      self->StartWriteAndFinish(&self->msg_, grpc::WriteOptions(), status);  // May delete self.
    } else {
      self->Finish(status);  // The client is gone or the engine failed: no final message.
    }
  }

  std::shared_ptr<CallCore> core_;
  lcd::v1::GenerateStreamResponse msg_;  // Touched only by the thread that set core_->writing.
};

}  // namespace

GenerationServiceImpl::GenerationServiceImpl(ModelRegistry* registry, ServerMetrics* metrics, int call_threads)
    : registry_(registry),
      metrics_(metrics),
      calls_(std::make_unique<TaskQueue>(call_threads > 0 ? call_threads : std::clamp(AvailableCpus(), 2, 4),
                                         "calls")) {}

GenerationServiceImpl::~GenerationServiceImpl() = default;

absl::StatusOr<GenerationServiceImpl::Prepared> GenerationServiceImpl::Prepare(
    const lcd::v1::GenerateRequest& r, absl::Time deadline) {
  LCD_RETURN_IF_ERROR(ValidateGenerateRequest(r));
  Prepared p;
  LCD_ASSIGN_OR_RETURN(p.model, registry_->Get(r.model()));
  const int64_t vocab = p.model->model->config().vocab_size;
  std::vector<int32_t> ids;
  if (r.prompt_case() == lcd::v1::GenerateRequest::kText ||
      r.prompt_case() == lcd::v1::GenerateRequest::kTextBytes) {
    const std::string& text =
        r.prompt_case() == lcd::v1::GenerateRequest::kText ? r.text() : r.text_bytes();
    LCD_ASSIGN_OR_RETURN(ids, p.model->tokenizer->Encode(text, /*add_bos=*/true));
    if (ids.empty()) return absl::InvalidArgumentError("text: prompt encodes to no tokens");
  } else {
    ids.assign(r.token_ids().ids().begin(), r.token_ids().ids().end());
  }
  LCD_RETURN_IF_ERROR(ValidateTokenIds(ids, vocab, "prompt"));
  LCD_ASSIGN_OR_RETURN(p.request.sampling,
                       ToSamplingParams(r.sampling(), static_cast<int64_t>(ids.size()),
                                        p.model->max_context, vocab));
  p.request.prompt_tokens = std::move(ids);
  p.request.num_logprobs = r.num_logprobs();
  p.request.deadline = deadline;
  p.request.request_id =
      r.request_id().empty() ? absl::StrCat("req-", next_id_.fetch_add(1)) : r.request_id();
  return p;
}

absl::StatusOr<GenerationServiceImpl::Admitted> GenerationServiceImpl::Admit(
    const lcd::v1::GenerateRequest& r, absl::Time deadline) {
  for (int attempt = 0;; ++attempt) {
    LCD_ASSIGN_OR_RETURN(Prepared p, Prepare(r, deadline));
    Admitted a;
    a.model = p.model;
    a.request_id = p.request.request_id;
    auto handle = p.model->engine->Submit(std::move(p.request));
    if (handle.ok()) {
      a.handle = std::move(*handle);
      return a;
    }
    auto now = registry_->Get(r.model());
    const bool swapped = now.ok() && *now != a.model;
    if (!absl::IsUnavailable(handle.status()) || !swapped || attempt > 0) return handle.status();
  }
}

grpc::ServerUnaryReactor* GenerationServiceImpl::Generate(grpc::CallbackServerContext* ctx,
                                                          const lcd::v1::GenerateRequest* request,
                                                          lcd::v1::GenerateResponse* response) {
  return new UnaryGenerate(this, ctx, request, response);
}

grpc::ServerWriteReactor<lcd::v1::GenerateStreamResponse>* GenerationServiceImpl::GenerateStream(
    grpc::CallbackServerContext* ctx, const lcd::v1::GenerateRequest* request) {
  return new StreamGenerate(this, ctx, request);
}

}  // namespace lcd::server
