// Private helpers for parsing JSON that comes from outside (safetensors
// headers, config.json, index files) without letting nlohmann exceptions or
// hostile nesting escape.
#ifndef LCD_RUNTIME_SRC_JSON_UTIL_H_
#define LCD_RUNTIME_SRC_JSON_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace lcd::runtime::json_util {

// Debian's Abseil is built with its own absl::string_view, which StrCat
// takes but std::string_view does not convert to implicitly.
inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Deepest array/object nesting ParseJson accepts by default. Every format we
// read needs at most 4 levels.
inline constexpr int kDefaultMaxDepth = 64;

// Parses `text` as one JSON value. Returns InvalidArgumentError naming `what`
// when the text is not JSON (including ill-formed UTF-8), nests deeper than
// `max_depth`, or contains an object with the same key twice (nlohmann would
// silently keep the last one, which hides ambiguous files).
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, std::string_view what,
                                         int max_depth = kDefaultMaxDepth);

// Reads a whole (small) text file; NotFound when it does not exist.
absl::StatusOr<std::string> ReadTextFile(const std::string& path, uint64_t max_bytes = 64ull << 20);

// Integer accessors: accept only JSON integers (not floats, not booleans)
// within int64/int32 range. Return nullopt otherwise.
std::optional<int64_t> AsInt64(const nlohmann::json& v);

// Human-readable JSON type of `v` for error messages ("string", "array", ...).
std::string_view TypeName(const nlohmann::json& v);

}  // namespace lcd::runtime::json_util

#endif  // LCD_RUNTIME_SRC_JSON_UTIL_H_
