// Private: the configuration mechanism both daemons share. A config struct C
// is described by a list of Setting<C>; each setting can come from a JSON file
// (--config FILE or LCD_CONFIG), an LCD_* environment variable, or a flag,
// with precedence default < file < environment < flag. The env var and flag
// names derive from the JSON key (kv_cache_bytes -> LCD_KV_CACHE_BYTES,
// --kv-cache-bytes), so the three sources cannot drift apart. Unknown JSON
// keys, unknown flags, malformed values are InvalidArgument naming the
// setting and where it came from.
#ifndef LCD_SERVER_SRC_SETTINGS_H_
#define LCD_SERVER_SRC_SETTINGS_H_

#include <cxxopts.hpp>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "lcd/base/status_macros.h"
#include "lcd/server/config.h"  // ParseByteSize

namespace lcd::server::settings {

using Json = nlohmann::json;
using GetEnv = std::function<const char*(const char*)>;

template <typename C>
struct Setting {
  const char* key;
  const char* help;
  std::function<absl::Status(C&, absl::string_view)> from_string;
  std::function<absl::Status(C&, const Json&)> from_json;
  // A list: the flag may be repeated; its items reach from_string joined
  // with ',' (the environment variable's form).
  bool repeatable = false;
  // The flag's name when it is not derived from the key (--model for models).
  const char* flag = nullptr;
};

inline absl::Status Bad(absl::string_view key, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(key, ": ", why));
}

inline std::string EnvName(absl::string_view key) { return absl::StrCat("LCD_", absl::AsciiStrToUpper(key)); }

template <typename C>
std::string FlagName(const Setting<C>& s) {
  if (s.flag != nullptr) return s.flag;
  std::string f(s.key);
  for (char& ch : f) ch = ch == '_' ? '-' : ch;
  return f;
}

inline absl::Status Range(absl::string_view key, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi)) return Bad(key, absl::StrFormat("%g is out of range [%g, %g]", v, lo, hi));
  return absl::OkStatus();
}

template <typename C, typename T>
Setting<C> IntSetting(const char* key, const char* help, T C::*member) {
  return Setting<C>{key, help,
                    [key, member](C& c, absl::string_view s) -> absl::Status {
                      int64_t v;
                      if (!absl::SimpleAtoi(s, &v) || v < std::numeric_limits<T>::min() ||
                          v > std::numeric_limits<T>::max()) {
                        return Bad(key, absl::StrCat("'", s, "' is not an integer"));
                      }
                      c.*member = static_cast<T>(v);
                      return absl::OkStatus();
                    },
                    [key, member](C& c, const Json& j) -> absl::Status {
                      if (!j.is_number_integer()) return Bad(key, "must be an integer");
                      const int64_t v = j.get<int64_t>();
                      if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
                        return Bad(key, "integer out of range");
                      }
                      c.*member = static_cast<T>(v);
                      return absl::OkStatus();
                    }};
}

template <typename C>
Setting<C> BytesSetting(const char* key, const char* help, uint64_t C::*member) {
  return Setting<C>{key, help,
                    [key, member](C& c, absl::string_view s) -> absl::Status {
                      auto v = ParseByteSize(s);
                      if (!v.ok()) return Bad(key, v.status().message());
                      c.*member = *v;
                      return absl::OkStatus();
                    },
                    [key, member](C& c, const Json& j) -> absl::Status {
                      if (j.is_number_unsigned()) {
                        c.*member = j.get<uint64_t>();
                        return absl::OkStatus();
                      }
                      if (!j.is_string()) return Bad(key, "must be a byte count or a string like \"256MiB\"");
                      auto v = ParseByteSize(j.get<std::string>());
                      if (!v.ok()) return Bad(key, v.status().message());
                      c.*member = *v;
                      return absl::OkStatus();
                    }};
}

template <typename C>
Setting<C> DoubleSetting(const char* key, const char* help, double C::*member) {
  return Setting<C>{key, help,
                    [key, member](C& c, absl::string_view s) -> absl::Status {
                      double v;
                      if (!absl::SimpleAtod(s, &v)) return Bad(key, absl::StrCat("'", s, "' is not a number"));
                      c.*member = v;
                      return absl::OkStatus();
                    },
                    [key, member](C& c, const Json& j) -> absl::Status {
                      if (!j.is_number()) return Bad(key, "must be a number");
                      c.*member = j.get<double>();
                      return absl::OkStatus();
                    }};
}

template <typename C>
Setting<C> StringSetting(const char* key, const char* help, std::string C::*member) {
  return Setting<C>{key, help,
                    [member](C& c, absl::string_view s) -> absl::Status {
                      c.*member = std::string(s);
                      return absl::OkStatus();
                    },
                    [key, member](C& c, const Json& j) -> absl::Status {
                      if (!j.is_string()) return Bad(key, "must be a string");
                      c.*member = j.get<std::string>();
                      return absl::OkStatus();
                    }};
}

// A list of strings: a JSON array, a comma-separated environment value, or
// one repeated flag per item. `flag` overrides the flag's name.
template <typename C>
Setting<C> StringListSetting(const char* key, const char* help, std::vector<std::string> C::*member,
                             const char* flag = nullptr) {
  return Setting<C>{key, help,
                    [member](C& c, absl::string_view s) -> absl::Status {
                      std::vector<std::string> items;
                      for (absl::string_view item : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
                        items.emplace_back(absl::StripAsciiWhitespace(item));
                      }
                      c.*member = std::move(items);
                      return absl::OkStatus();
                    },
                    [key, member](C& c, const Json& j) -> absl::Status {
                      if (!j.is_array()) return Bad(key, "must be an array of strings");
                      std::vector<std::string> items;
                      for (const Json& item : j) {
                        if (!item.is_string()) return Bad(key, "must be an array of strings");
                        items.push_back(item.get<std::string>());
                      }
                      c.*member = std::move(items);
                      return absl::OkStatus();
                    },
                    /*repeatable=*/true, flag};
}

inline absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open config file '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Applies a JSON object's keys to *c without validating the result.
template <typename C>
absl::Status ApplyJson(const std::vector<Setting<C>>& settings, absl::string_view json, absl::string_view origin,
                       C* c) {
  Json doc = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(origin, ": not valid JSON"));
  if (!doc.is_object()) return absl::InvalidArgumentError(absl::StrCat(origin, ": must be a JSON object"));
  for (const auto& [key, value] : doc.items()) {
    const Setting<C>* s = nullptr;
    for (const auto& candidate : settings) {
      if (key == candidate.key) s = &candidate;
    }
    if (s == nullptr) return absl::InvalidArgumentError(absl::StrCat(origin, ": unknown key '", key, "'"));
    absl::Status st;
    try {
      st = s->from_json(*c, value);
    } catch (const std::exception& e) {  // nlohmann type errors stay inside.
      st = Bad(key, e.what());
    }
    if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(origin, ": ", st.message()));
  }
  return absl::OkStatus();
}

// Reads file, environment and flags into a C (starting from `c`), without
// validating the result. *help is set when --help was given (then nothing
// else is read).
template <typename C>
absl::Status Load(const std::vector<Setting<C>>& settings, const char* program, int argc, const char* const* argv,
                  const GetEnv& getenv, C* c, bool* help) {
  cxxopts::Options options(program, program);
  options.add_options()("config", "JSON config file", cxxopts::value<std::string>())("h,help", "print this help");
  for (const Setting<C>& s : settings) {
    if (s.repeatable) {
      options.add_options()(FlagName(s), s.help, cxxopts::value<std::vector<std::string>>());
    } else {
      options.add_options()(FlagName(s), s.help, cxxopts::value<std::string>());
    }
  }
  *help = false;
  try {
    std::vector<std::string> args(argv, argv + argc);  // cxxopts wants a mutable argv
    std::vector<char*> ptrs;
    for (auto& a : args) ptrs.push_back(a.data());
    auto result = options.parse(static_cast<int>(ptrs.size()), ptrs.data());
    if (!result.unmatched().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", result.unmatched()[0], "'"));
    }
    if (result.count("help")) {
      *help = true;
      return absl::OkStatus();
    }
    std::string config_path;
    if (const char* env = getenv("LCD_CONFIG"); env != nullptr) config_path = env;
    if (result.count("config")) config_path = result["config"].as<std::string>();
    if (!config_path.empty()) {
      LCD_ASSIGN_OR_RETURN(std::string text, ReadConfigFile(config_path));
      LCD_RETURN_IF_ERROR(ApplyJson(settings, text, config_path, c));
    }
    for (const Setting<C>& s : settings) {
      const std::string env = EnvName(s.key);
      if (const char* v = getenv(env.c_str()); v != nullptr) {
        absl::Status st = s.from_string(*c, v);
        if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(env, ": ", st.message()));
      }
    }
    for (const Setting<C>& s : settings) {
      const std::string flag = FlagName(s);
      if (!result.count(flag)) continue;
      const absl::Status st = s.repeatable
                                  ? s.from_string(*c, absl::StrJoin(result[flag].as<std::vector<std::string>>(), ","))
                                  : s.from_string(*c, result[flag].as<std::string>());
      if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", st.message()));
    }
  } catch (const std::exception& e) {  // cxxopts reports bad flags by throwing.
    return absl::InvalidArgumentError(e.what());
  }
  return absl::OkStatus();
}

template <typename C>
std::string Help(const std::vector<Setting<C>>& settings, const char* program) {
  std::string out = absl::StrCat(
      "Usage: ", program,
      " [--config FILE] [flags]\n"
      "Every setting may also come from the JSON file or an LCD_* environment variable\n"
      "(precedence: default < file < environment < flag).\n\n"
      "  --config FILE (LCD_CONFIG)  JSON file with the keys below\n");
  for (const Setting<C>& s : settings) {
    absl::StrAppendFormat(&out, "  --%-26s %-30s %s\n", FlagName(s), absl::StrCat("(", EnvName(s.key), ")"),
                          s.help);
  }
  return out;
}

}  // namespace lcd::server::settings

#endif  // LCD_SERVER_SRC_SETTINGS_H_
