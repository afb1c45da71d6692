// Boundary checks for GenerationService requests: everything a client sends
// is checked here, before any work is queued, and refused with
// InvalidArgument naming the field. (Codes for an unknown model, a full
// queue or an oversized message come from the registry, the engine and gRPC.)
//
// Thread safety: pure functions.
#ifndef LCD_SERVER_REQUEST_VALIDATION_H_
#define LCD_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lcd/runtime/sampler.h"
#include "lcd/v1/generate.pb.h"

namespace lcd::server {

inline constexpr int kMaxLogprobs = 20;
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;
inline constexpr size_t kMaxRequestIdBytes = 128;

// OK when `text` is well-formed UTF-8 (no overlongs, no surrogates, nothing
// above U+10FFFF); otherwise InvalidArgument with the byte offset.
absl::Status ValidateUtf8(absl::string_view text, absl::string_view field);

// The runtime SamplingParams for a request whose prompt has `prompt_tokens`
// tokens, given the model's `max_context` and `vocab_size`. Unset fields take
// runtime defaults; an unset max_new_tokens becomes min(256, room left in the
// context). Errors: any out-of-range or non-finite value, a prompt that
// leaves no room in the context, prompt + max_new_tokens beyond the context,
// stop token ids outside the vocabulary, too many or too long stop strings.
absl::StatusOr<runtime::SamplingParams> ToSamplingParams(const lcd::v1::SamplingParams& proto,
                                                         int64_t prompt_tokens, int64_t max_context,
                                                         int64_t vocab_size);

// Checks the parts of a GenerateRequest that need no model: model name set,
// prompt present and non-empty, prompt text valid UTF-8, num_logprobs in
// [0, kMaxLogprobs], request_id length.
absl::Status ValidateGenerateRequest(const lcd::v1::GenerateRequest& request);

// Prompt token ids must be in [0, vocab_size).
absl::Status ValidateTokenIds(const std::vector<int32_t>& ids, int64_t vocab_size,
                              absl::string_view field);

}  // namespace lcd::server

#endif  // LCD_SERVER_REQUEST_VALIDATION_H_
