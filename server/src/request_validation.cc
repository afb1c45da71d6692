#include "lcd/server/request_validation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

namespace {

// Length of the well-formed UTF-8 sequence at s[0..n), or 0 when the bytes
// there are not one (bad lead or continuation byte, truncation, overlong
// form, surrogate, or a code point above U+10FFFF). The one UTF-8 decoder of
// the server: ValidateUtf8 and SanitizeUtf8 both use it.
size_t Utf8SequenceLength(const unsigned char* s, size_t n) {
  const unsigned char c = s[0];
  size_t len;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    len = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (len > n) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((s[k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[k] & 0x3F);
  }
  const uint32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

}  // namespace

absl::Status ValidateUtf8(absl::string_view text, absl::string_view field) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    const size_t len = Utf8SequenceLength(s + i, text.size() - i);
    if (len == 0) return Bad(field, absl::StrCat("invalid UTF-8 at byte ", i));
    i += len;
  }
  return absl::OkStatus();
}

std::string SanitizeUtf8(absl::string_view text, size_t max_bytes) {
  static constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  static constexpr absl::string_view kEllipsis = "\xE2\x80\xA6";     // U+2026
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + kReplacement.size());
  for (size_t i = 0; i < text.size() && out.size() <= max_bytes;) {
    const size_t len = Utf8SequenceLength(s + i, text.size() - i);
    if (len == 0) {
      out.append(kReplacement.data(), kReplacement.size());
      ++i;
    } else {
      out.append(text.data() + i, len);
      i += len;
    }
  }
  if (out.size() <= max_bytes) return out;
  // Too long: cut at a character boundary (out is valid UTF-8 by now) and
  // mark the cut.
  size_t cut = max_bytes >= kEllipsis.size() ? max_bytes - kEllipsis.size() : 0;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
  out.resize(cut);
  if (max_bytes >= kEllipsis.size()) out.append(kEllipsis.data(), kEllipsis.size());
  return out;
}

std::string Echo(absl::string_view text) { return SanitizeUtf8(text, kMaxEchoBytes); }

absl::Status ValidateModelName(absl::string_view name, absl::string_view field) {
  if (name.empty()) return Bad(field, "must name a model");
  if (name.size() > kMaxModelNameBytes) {
    return Bad(field, absl::StrCat("is ", name.size(), " bytes; at most ", kMaxModelNameBytes,
                                   " are allowed"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return Bad(field, absl::StrCat("'", Echo(name), "' may only hold [A-Za-z0-9._-]"));
    }
  }
  // A name is also a directory of the artifact store: never "." or "..".
  if (name[0] == '.') return Bad(field, absl::StrCat("'", Echo(name), "' must not start with '.'"));
  return absl::OkStatus();
}

absl::Status ValidateModelPath(absl::string_view path) {
  if (path.empty()) return Bad("path", "is empty");
  if (path.size() > kMaxModelPathBytes) {
    return Bad("path", absl::StrCat("is ", path.size(), " bytes; at most ", kMaxModelPathBytes,
                                    " are allowed"));
  }
  if (path.find('\0') != absl::string_view::npos) return Bad("path", "contains a NUL byte");
  LCD_RETURN_IF_ERROR(ValidateUtf8(path, "path"));
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.size() > kMaxPathComponentBytes) {
      return Bad("path", absl::StrCat("has a component of ", part.size(), " bytes; at most ",
                                      kMaxPathComponentBytes, " are allowed"));
    }
    if (part == "..") return Bad("path", "must not contain '..'");
  }
  return absl::OkStatus();
}

absl::Status ValidateLoadModelRequest(const lcd::v1::LoadModelRequest& r) {
  LCD_RETURN_IF_ERROR(ValidateModelName(r.name(), "name"));
  if (r.artifact_version() < 0) return Bad("artifact_version", "must be >= 0");
  const bool from_store = r.artifact_version() > 0 || r.follow_latest();
  if (from_store) {
    if (r.artifact_version() > 0 && r.follow_latest()) {
      return Bad("artifact_version", "and follow_latest exclude each other");
    }
    if (!r.path().empty() || !r.version().empty()) {
      return Bad("path", "and version must be empty when loading from the artifact store");
    }
    return absl::OkStatus();
  }
  LCD_RETURN_IF_ERROR(ValidateModelPath(r.path()));
  if (r.version().size() > kMaxVersionBytes) {
    return Bad("version", absl::StrCat("longer than ", kMaxVersionBytes, " bytes"));
  }
  LCD_RETURN_IF_ERROR(ValidateUtf8(r.version(), "version"));
  for (unsigned char c : r.version()) {
    if (c < 0x20 || c == 0x7F) return Bad("version", "contains a control character");
  }
  return absl::OkStatus();
}

absl::Status ValidateUnloadModelRequest(const lcd::v1::UnloadModelRequest& r) {
  return ValidateModelName(r.name(), "name");
}

absl::Status ValidateRollbackModelRequest(const lcd::v1::RollbackModelRequest& r) {
  return ValidateModelName(r.name(), "name");
}

absl::Status ValidateGetModelStatusRequest(const lcd::v1::GetModelStatusRequest& r) {
  return ValidateModelName(r.name(), "name");
}

absl::Status ValidatePromptBytes(absl::string_view text, absl::string_view field) {
  if (text.size() > kMaxPromptBytes) {
    return Bad(field, absl::StrCat("is ", text.size(), " bytes; prompts are at most ", kMaxPromptBytes, " bytes"));
  }
  return ValidateUtf8(text, field);
}

absl::Status ValidateGenerateRequest(const lcd::v1::GenerateRequest& r) {
  if (r.model().empty()) return Bad("model", "must name a loaded model");
  LCD_RETURN_IF_ERROR(ValidateModelName(r.model(), "model"));
  switch (r.prompt_case()) {
    case lcd::v1::GenerateRequest::kText:
      if (r.text().empty()) return Bad("text", "prompt is empty");
      LCD_RETURN_IF_ERROR(ValidatePromptBytes(r.text(), "text"));
      break;
    case lcd::v1::GenerateRequest::kTextBytes:
      if (r.text_bytes().empty()) return Bad("text_bytes", "prompt is empty");
      LCD_RETURN_IF_ERROR(ValidatePromptBytes(r.text_bytes(), "text_bytes"));
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
