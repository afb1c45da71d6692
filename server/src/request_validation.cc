#include "lcd/server/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"

namespace lcd::server {
namespace {

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::Status Finite(absl::string_view field, double v) {
  if (!std::isfinite(v)) return Bad(field, "must be a finite number");
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateUtf8(absl::string_view text, absl::string_view field) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return Bad(field, absl::StrCat("invalid UTF-8 at byte ", i));
    }
    if (i + len > n) return Bad(field, absl::StrCat("truncated UTF-8 sequence at byte ", i));
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return Bad(field, absl::StrCat("invalid UTF-8 at byte ", i));
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    const uint32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return Bad(field, absl::StrCat("invalid UTF-8 code point at byte ", i));
    }
    i += len;
  }
  return absl::OkStatus();
}

absl::Status ValidateGenerateRequest(const lcd::v1::GenerateRequest& r) {
  if (r.model().empty()) return Bad("model", "must name a loaded model");
  switch (r.prompt_case()) {
    case lcd::v1::GenerateRequest::kText:
      if (r.text().empty()) return Bad("text", "prompt is empty");
      LCD_RETURN_IF_ERROR(ValidateUtf8(r.text(), "text"));
      break;
    case lcd::v1::GenerateRequest::kTextBytes:
      if (r.text_bytes().empty()) return Bad("text_bytes", "prompt is empty");
      LCD_RETURN_IF_ERROR(ValidateUtf8(r.text_bytes(), "text_bytes"));
      break;
    case lcd::v1::GenerateRequest::kTokenIds:
      if (r.token_ids().ids().empty()) return Bad("token_ids", "prompt is empty");
      break;
    default:
      return Bad("prompt", "set one of text, text_bytes or token_ids");
  }
  if (r.num_logprobs() < 0 || r.num_logprobs() > kMaxLogprobs) {
    return Bad("num_logprobs",
               absl::StrCat(r.num_logprobs(), " is outside [0, ", kMaxLogprobs, "]"));
  }
  if (r.request_id().size() > kMaxRequestIdBytes) {
    return Bad("request_id", absl::StrCat("longer than ", kMaxRequestIdBytes, " bytes"));
  }
  LCD_RETURN_IF_ERROR(ValidateUtf8(r.request_id(), "request_id"));
  return absl::OkStatus();
}

absl::Status ValidateTokenIds(const std::vector<int32_t>& ids, int64_t vocab_size,
                              absl::string_view field) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Bad(field, absl::StrCat("token id ", ids[i], " at index ", i, " is outside [0, ",
                                     vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<runtime::SamplingParams> ToSamplingParams(const lcd::v1::SamplingParams& p,
                                                         int64_t prompt_tokens, int64_t max_context,
                                                         int64_t vocab_size) {
  runtime::SamplingParams s;
  if (p.has_temperature()) {
    LCD_RETURN_IF_ERROR(Finite("temperature", p.temperature()));
    s.temperature = p.temperature();
  }
  if (p.has_top_k()) s.top_k = p.top_k();
  if (p.has_top_p()) {
    LCD_RETURN_IF_ERROR(Finite("top_p", p.top_p()));
    s.top_p = p.top_p();
  }
  if (p.has_min_p()) {
    LCD_RETURN_IF_ERROR(Finite("min_p", p.min_p()));
    s.min_p = p.min_p();
  }
  if (p.has_repetition_penalty()) {
    LCD_RETURN_IF_ERROR(Finite("repetition_penalty", p.repetition_penalty()));
    s.repetition_penalty = p.repetition_penalty();
  }
  if (p.has_presence_penalty()) {
    LCD_RETURN_IF_ERROR(Finite("presence_penalty", p.presence_penalty()));
    s.presence_penalty = p.presence_penalty();
  }
  if (p.has_frequency_penalty()) {
    LCD_RETURN_IF_ERROR(Finite("frequency_penalty", p.frequency_penalty()));
    s.frequency_penalty = p.frequency_penalty();
  }
  if (p.has_seed()) s.seed = p.seed();
  s.ignore_eos = p.ignore_eos();

  if (prompt_tokens >= max_context) {
    return Bad("prompt", absl::StrCat("has ", prompt_tokens, " tokens; the model's context is ",
                                      max_context, " tokens"));
  }
  const int64_t room = max_context - prompt_tokens;
  if (p.has_max_new_tokens()) {
    if (p.max_new_tokens() < 1) return Bad("max_new_tokens", "must be >= 1");
    if (p.max_new_tokens() > room) {
      return Bad("max_new_tokens",
                 absl::StrCat(p.max_new_tokens(), " new tokens after a ", prompt_tokens,
                              "-token prompt exceed the context of ", max_context, " tokens"));
    }
    s.max_new_tokens = p.max_new_tokens();
  } else {
    s.max_new_tokens = std::min<int64_t>(s.max_new_tokens, room);
  }

  if (static_cast<size_t>(p.stop_strings_size()) > kMaxStopStrings) {
    return Bad("stop_strings", absl::StrCat("at most ", kMaxStopStrings, " allowed"));
  }
  for (const std::string& stop : p.stop_strings()) {
    if (stop.empty()) return Bad("stop_strings", "empty stop string");
    if (stop.size() > kMaxStopStringBytes) {
      return Bad("stop_strings", absl::StrCat("longer than ", kMaxStopStringBytes, " bytes"));
    }
    LCD_RETURN_IF_ERROR(ValidateUtf8(stop, "stop_strings"));
    s.stop_strings.push_back(stop);
  }
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  LCD_RETURN_IF_ERROR(ValidateTokenIds(s.stop_token_ids, vocab_size, "stop_token_ids"));
  // The runtime owns the ranges of the sampling knobs; asking it keeps the
  // server and the engine from disagreeing about what is valid.
  LCD_RETURN_IF_ERROR(s.Validate());
  return s;
}

}  // namespace lcd::server
