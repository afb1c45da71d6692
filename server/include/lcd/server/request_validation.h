// Boundary checks for GenerationService and ModelService requests: everything a client sends
// is checked here, before any work is queued, and refused with
// InvalidArgument naming the field. (Codes for an unknown model, a full
// queue or an oversized message come from the registry, the engine and gRPC.)
//
// Thread safety: pure functions.
#ifndef LCD_SERVER_REQUEST_VALIDATION_H_
#define LCD_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lcd/runtime/sampler.h"
#include "lcd/v1/generate.pb.h"
#include "lcd/v1/model.pb.h"

namespace lcd::server {

inline constexpr int kMaxLogprobs = 20;
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;
inline constexpr size_t kMaxRequestIdBytes = 128;
inline constexpr size_t kMaxModelNameBytes = 128;
inline constexpr size_t kMaxVersionBytes = 128;
inline constexpr size_t kMaxModelPathBytes = 4096;     // PATH_MAX
inline constexpr size_t kMaxPathComponentBytes = 255;  // NAME_MAX
// Client text quoted in an error message is cut to this many bytes.
inline constexpr size_t kMaxEchoBytes = 64;
// The largest prompt text (Generate's text / text_bytes, Tokenize's text):
// one cap for every RPC that tokenizes, below the gRPC message limit so the
// answer is a clear INVALID_ARGUMENT. 1 MiB is ~250k tokens of English.
inline constexpr size_t kMaxPromptBytes = 1 << 20;

// OK when `text` is well-formed UTF-8 (no overlongs, no surrogates, nothing
// above U+10FFFF); otherwise InvalidArgument with the byte offset.
absl::Status ValidateUtf8(absl::string_view text, absl::string_view field);

// `text` as well-formed UTF-8 of at most `max_bytes` bytes: every byte that
// is not part of a valid sequence becomes U+FFFD, and a longer result is cut
// at a character boundary and ends in U+2026. Every string that goes into a
// proto `string` field or a status message from client or file input passes
// through here (ToProto, ToGrpcStatus, the registry's stored errors).
std::string SanitizeUtf8(absl::string_view text,
                         size_t max_bytes = std::numeric_limits<size_t>::max());
// A prompt text: at most kMaxPromptBytes, valid UTF-8. InvalidArgument
// naming `field` otherwise.
absl::Status ValidatePromptBytes(absl::string_view text, absl::string_view field);

// Client text for quoting in an error message: SanitizeUtf8(text, kMaxEchoBytes).
std::string Echo(absl::string_view text);

// A model name: 1..kMaxModelNameBytes of [A-Za-z0-9._-]. InvalidArgument
// naming `field` otherwise.
absl::Status ValidateModelName(absl::string_view name, absl::string_view field);
// A model path as a client sends it: non-empty, at most kMaxModelPathBytes,
// no NUL, valid UTF-8, no component longer than kMaxPathComponentBytes, no
// ".." component. (Whether it lies under a model root is the registry's
// check, which needs the filesystem.)
absl::Status ValidateModelPath(absl::string_view path);

// ModelService requests, checked before anything touches the registry or
// the filesystem. ListModelsRequest has no fields. LoadModel: either a path
// (ValidateModelPath) with an optional version label, or from the artifact
// store (artifact_version > 0 or follow_latest, not both) with path and
// version empty.
absl::Status ValidateLoadModelRequest(const lcd::v1::LoadModelRequest& request);
absl::Status ValidateRollbackModelRequest(const lcd::v1::RollbackModelRequest& request);
absl::Status ValidateUnloadModelRequest(const lcd::v1::UnloadModelRequest& request);
absl::Status ValidateGetModelStatusRequest(const lcd::v1::GetModelStatusRequest& request);

// The runtime SamplingParams for a request whose prompt has `prompt_tokens`
// tokens, given the model's `max_context` and `vocab_size`. Unset fields take
// runtime defaults; an unset max_new_tokens becomes min(256, room left in the
// context). Errors: any out-of-range or non-finite value, a prompt that
// leaves no room in the context, prompt + max_new_tokens beyond the context,
// stop token ids outside the vocabulary, too many or too long stop strings.
absl::StatusOr<runtime::SamplingParams> ToSamplingParams(const lcd::v1::SamplingParams& proto,
                                                         int64_t prompt_tokens, int64_t max_context,
                                                         int64_t vocab_size);

// Checks the parts of a GenerateRequest that need no model: model name set
// and valid (ValidateModelName),
// prompt present and non-empty, prompt text valid UTF-8, num_logprobs in
// [0, kMaxLogprobs], request_id length.
absl::Status ValidateGenerateRequest(const lcd::v1::GenerateRequest& request);

// Prompt token ids must be in [0, vocab_size).
absl::Status ValidateTokenIds(const std::vector<int32_t>& ids, int64_t vocab_size,
                              absl::string_view field);

}  // namespace lcd::server

#endif  // LCD_SERVER_REQUEST_VALIDATION_H_
