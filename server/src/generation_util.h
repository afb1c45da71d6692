// Helpers shared by the GenerationService reactors: engine events -> proto
// fields, the per-request log line, and metric labels. Private to server/.
#ifndef LCD_SERVER_SRC_GENERATION_UTIL_H_
#define LCD_SERVER_SRC_GENERATION_UTIL_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/time/time.h"
#include "lcd/runtime/engine.h"
#include "lcd/server/model_registry.h"
#include "lcd/v1/generate.pb.h"

namespace lcd::server {

lcd::v1::FinishReason ToProtoFinishReason(runtime::FinishReason r);

// Appends the event's token ids and logprobs.
void AppendChunk(const runtime::GenerationEvent& ev,
                 google::protobuf::RepeatedField<int32_t>* token_ids,
                 google::protobuf::RepeatedPtrField<lcd::v1::TokenLogprob>* logprobs);

// Usage and timing from the final event; `total` is the server-side time.
void FillFinal(const runtime::GenerationEvent& ev, absl::Duration total, lcd::v1::Usage* usage,
               lcd::v1::Timing* timing);

// The structured INFO line written once per finished request.
void LogRequest(const std::string& id, const std::string& model, const std::string& version,
                const runtime::GenerationEvent& final_event, absl::Duration total,
                const grpc::Status& status);

// "ok", "cancelled" or "error" for lcd_requests_total{status}.
std::string RequestStatusLabel(const runtime::GenerationEvent& final_event,
                               const grpc::Status& status);

// The model label for a rejected request: the name when it is a known model,
// otherwise "_unknown" (client-chosen names must not grow label cardinality).
std::string MetricsModelLabel(const ModelRegistry* registry, const std::string& model);

}  // namespace lcd::server

#endif  // LCD_SERVER_SRC_GENERATION_UTIL_H_
