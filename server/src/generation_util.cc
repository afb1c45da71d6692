#include "src/generation_util.h"

#include <google/protobuf/duration.pb.h>

#include "absl/strings/str_format.h"
#include "lcd/base/logging.h"
#include "lcd/server/request_validation.h"

namespace lcd::server {
namespace {

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t nanos = absl::ToInt64Nanoseconds(d);
  out->set_seconds(nanos / 1000000000);
  out->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

}  // namespace

lcd::v1::FinishReason ToProtoFinishReason(runtime::FinishReason r) {
  switch (r) {
    case runtime::FinishReason::kNone:
      return lcd::v1::FINISH_REASON_UNSPECIFIED;
    case runtime::FinishReason::kLength:
      return lcd::v1::FINISH_REASON_LENGTH;
    case runtime::FinishReason::kStop:
      return lcd::v1::FINISH_REASON_STOP;
    case runtime::FinishReason::kEos:
      return lcd::v1::FINISH_REASON_EOS;
    case runtime::FinishReason::kCancelled:
      return lcd::v1::FINISH_REASON_CANCELLED;
    case runtime::FinishReason::kError:
      return lcd::v1::FINISH_REASON_ERROR;
  }
  return lcd::v1::FINISH_REASON_UNSPECIFIED;
}

void AppendChunk(const runtime::GenerationEvent& ev,
                 google::protobuf::RepeatedField<int32_t>* token_ids,
                 google::protobuf::RepeatedPtrField<lcd::v1::TokenLogprob>* logprobs) {
  for (int32_t id : ev.token_ids) token_ids->Add(id);
  for (const auto& lp : ev.logprobs) {
    lcd::v1::TokenLogprob* out = logprobs->Add();
    out->set_token_id(lp.token_id);
    out->set_logprob(lp.logprob);
    for (const auto& t : lp.top) {
      lcd::v1::TopLogprob* top = out->add_top();
      top->set_token_id(t.id);
      top->set_logprob(t.logprob);
    }
  }
}

void FillFinal(const runtime::GenerationEvent& ev, absl::Duration total, lcd::v1::Usage* usage,
               lcd::v1::Timing* timing) {
  usage->set_prompt_tokens(ev.prompt_tokens);
  usage->set_completion_tokens(ev.completion_tokens);
  usage->set_total_tokens(ev.prompt_tokens + ev.completion_tokens);
  SetDuration(ev.queue_time, timing->mutable_queue_time());
  SetDuration(ev.time_to_first_token, timing->mutable_time_to_first_token());
  SetDuration(total, timing->mutable_total_time());
}

void LogRequest(const std::string& id, const std::string& model, const std::string& version,
                const runtime::GenerationEvent& ev, absl::Duration total,
                const grpc::Status& status) {
  const std::string line = absl::StrFormat(
      "request id=%s model=%s version=%s prompt_tokens=%d completion_tokens=%d queue_ms=%.3f "
      "ttft_ms=%.3f e2e_ms=%.3f finish=%s status=%d",
      id, model, version, ev.prompt_tokens, ev.completion_tokens,
      absl::ToDoubleMilliseconds(ev.queue_time), absl::ToDoubleMilliseconds(ev.time_to_first_token),
      absl::ToDoubleMilliseconds(total), lcd::v1::FinishReason_Name(ToProtoFinishReason(ev.finish)),
      static_cast<int>(status.error_code()));
  if (ev.finish == runtime::FinishReason::kError) {
    LCD_LOG(ERROR) << line << " cause=\"" << ev.error.ToString() << "\"";
  } else {
    LCD_LOG(INFO) << line;
  }
}

std::string RequestStatusLabel(const runtime::GenerationEvent& ev, const grpc::Status& status) {
  if (ev.finish == runtime::FinishReason::kError) return "error";
  if (ev.finish == runtime::FinishReason::kCancelled) return "cancelled";
  return status.ok() ? "ok" : "error";
}

std::string MetricsModelLabel(const ModelRegistry* registry, const std::string& model) {
  return registry->Status(model).ok() ? model : "_unknown";
}

}  // namespace lcd::server
