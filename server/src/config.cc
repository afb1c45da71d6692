#include "lcd/server/config.h"

#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "lcd/base/status_macros.h"
#include "lcd/server/request_validation.h"
#include "src/settings.h"

namespace lcd::server {
namespace {

using settings::Bad;
using settings::Json;
using settings::Range;
using Setting = settings::Setting<ServerConfig>;
using settings::BytesSetting;
using settings::DoubleSetting;
using settings::IntSetting;
using settings::StringListSetting;
using settings::StringSetting;

// "a=/p/a,b=/p/b" (environment) or one "a=/p/a" per --model flag.
absl::Status ParseModelList(absl::string_view s, std::vector<ModelSpec>* out) {
  for (absl::string_view item : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (kv.first.empty() || kv.second.empty()) {
      return Bad("models", absl::StrCat("'", item, "' is not NAME=PATH"));
    }
    out->push_back({std::string(absl::StripAsciiWhitespace(kv.first)),
                    std::string(absl::StripAsciiWhitespace(kv.second))});
  }
  return absl::OkStatus();
}

Setting ModelsSetting() {
  return Setting{"models", "models to load at start, NAME=PATH (repeatable; env: comma-separated)",
                 [](ServerConfig& c, absl::string_view s) -> absl::Status {
                   std::vector<ModelSpec> models;
                   LCD_RETURN_IF_ERROR(ParseModelList(s, &models));
                   c.models = std::move(models);
                   return absl::OkStatus();
                 },
                 [](ServerConfig& c, const Json& j) -> absl::Status {
                   if (!j.is_array())
                     return Bad("models", "must be an array of {\"name\", \"path\"}");
                   std::vector<ModelSpec> models;
                   for (size_t i = 0; i < j.size(); ++i) {
                     const Json& m = j[i];
                     const std::string where = absl::StrCat("models[", i, "]");
                     if (!m.is_object()) return Bad(where, "must be an object");
                     for (const auto& [k, v] : m.items()) {
                       if (k != "name" && k != "path")
                         return Bad(where, absl::StrCat("unknown key '", k, "'"));
                     }
                     if (!m.contains("name") || !m["name"].is_string())
                       return Bad(where, "needs a string 'name'");
                     if (!m.contains("path") || !m["path"].is_string())
                       return Bad(where, "needs a string 'path'");
                     models.push_back({m["name"].get<std::string>(), m["path"].get<std::string>()});
                   }
                   c.models = std::move(models);
                   return absl::OkStatus();
                 },
                 /*repeatable=*/true, /*flag=*/"model"};
}

const std::vector<Setting>& Settings() {
  static const auto* settings = new std::vector<Setting>{
      StringSetting("grpc_address", "address the gRPC server binds", &ServerConfig::grpc_address),
      IntSetting("grpc_port", "gRPC port (0 = any free port)", &ServerConfig::grpc_port),
      StringSetting("metrics_address", "address of the HTTP /metrics endpoint",
                    &ServerConfig::metrics_address),
      IntSetting("metrics_port", "HTTP /metrics port (0 = any, -1 = off)",
                 &ServerConfig::metrics_port),
      ModelsSetting(),
      IntSetting("block_size", "KV cache block size in tokens", &ServerConfig::block_size),
      BytesSetting("kv_cache_bytes", "KV cache memory per model (e.g. 256MiB)",
                   &ServerConfig::kv_cache_bytes),
      StringSetting("kv_dtype", "KV cache element type: f16|bf16|f32", &ServerConfig::kv_dtype),
      IntSetting("max_num_seqs", "running sequences per iteration", &ServerConfig::max_num_seqs),
      IntSetting("max_tokens_per_iteration", "token budget per engine iteration",
                 &ServerConfig::max_tokens_per_iteration),
      IntSetting("max_waiting", "waiting-queue bound; beyond it RESOURCE_EXHAUSTED",
                 &ServerConfig::max_waiting),
      IntSetting("max_context", "context limit (0 = the model's)", &ServerConfig::max_context),
      IntSetting("threads", "compute threads shared by all models (0 = the CPU quota)",
                 &ServerConfig::threads),
      IntSetting("max_message_bytes", "largest gRPC message accepted",
                 &ServerConfig::max_message_bytes),
      DoubleSetting("drain_timeout_seconds", "graceful-shutdown drain limit",
                    &ServerConfig::drain_timeout_seconds),
      StringSetting("log_level", "debug|info|warning|error", &ServerConfig::log_level),
      StringListSetting<ServerConfig>("model_roots",
                                      "directories LoadModel may load from (repeatable; env: comma-separated)",
                                      &ServerConfig::model_roots, "model-root"),
      StringSetting("admin_token_file",
                    "file holding the bearer token ModelService calls must present",
                    &ServerConfig::admin_token_file),
      IntSetting("max_loaded_models", "models loaded at once", &ServerConfig::max_loaded_models),
      BytesSetting("max_model_memory_bytes", "weights + KV cache of all models (0 = no limit)",
                   &ServerConfig::max_model_memory_bytes),
      StringSetting("tls_cert_file", "PEM certificate chain for TLS on the gRPC port",
                    &ServerConfig::tls_cert_file),
      StringSetting("tls_key_file", "PEM private key for TLS on the gRPC port",
                    &ServerConfig::tls_key_file),
      StringSetting("artifact_root", "artifact store to follow for new model versions (lcd-jobs)",
                    &ServerConfig::artifact_root),
      DoubleSetting("artifact_rescan_seconds", "artifact store rescan interval (inotify fallback)",
                    &ServerConfig::artifact_rescan_seconds),
      StringListSetting<ServerConfig>("pinned_models", "models that do not follow the artifact store (repeatable)",
                                      &ServerConfig::pinned_models, "pinned-model"),
  };
  return *settings;
}

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  uint64_t mult = 1;
  for (const auto& [suffix, m] : {std::pair<absl::string_view, uint64_t>{"KiB", 1ull << 10},
                                  {"MiB", 1ull << 20},
                                  {"GiB", 1ull << 30}}) {
    if (absl::EndsWith(s, suffix)) {
      mult = m;
      s.remove_suffix(suffix.size());
      break;
    }
  }
  uint64_t v;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(s), &v)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a byte size"));
  }
  if (v > std::numeric_limits<uint64_t>::max() / mult) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is too large"));
  }
  return v * mult;
}

absl::Status ValidateServerConfig(const ServerConfig& c) {
  if (c.grpc_address.empty()) return Bad("grpc_address", "must not be empty");
  LCD_RETURN_IF_ERROR(Range("grpc_port", c.grpc_port, 0, 65535));
  LCD_RETURN_IF_ERROR(Range("metrics_port", c.metrics_port, -1, 65535));
  if (c.metrics_port >= 0 && c.metrics_port == c.grpc_port && c.grpc_port != 0) {
    return Bad("metrics_port", "must differ from grpc_port");
  }
  LCD_RETURN_IF_ERROR(Range("block_size", c.block_size, 1, 1024));
  if (c.kv_cache_bytes < (1ull << 20)) return Bad("kv_cache_bytes", "must be at least 1MiB");
  if (kernels::DType d; !kernels::DTypeFromName(c.kv_dtype, &d)) {
    return Bad("kv_dtype", absl::StrCat("'", c.kv_dtype, "' is not f16|bf16|f32"));
  }
  LCD_RETURN_IF_ERROR(Range("max_num_seqs", c.max_num_seqs, 1, 4096));
  LCD_RETURN_IF_ERROR(Range("max_tokens_per_iteration", c.max_tokens_per_iteration, 1, 1 << 20));
  LCD_RETURN_IF_ERROR(Range("max_waiting", c.max_waiting, 0, 1000000));
  LCD_RETURN_IF_ERROR(Range("max_context", c.max_context, 0, 1 << 24));
  LCD_RETURN_IF_ERROR(Range("threads", c.threads, 0, 1024));
  LCD_RETURN_IF_ERROR(Range("max_message_bytes", c.max_message_bytes, 1024, 1 << 30));
  LCD_RETURN_IF_ERROR(Range("drain_timeout_seconds", c.drain_timeout_seconds, 0, 3600));
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warning" &&
      c.log_level != "error") {
    return Bad("log_level", absl::StrCat("'", c.log_level, "' is not debug|info|warning|error"));
  }
  LCD_RETURN_IF_ERROR(Range("max_loaded_models", c.max_loaded_models, 1, 1024));
  if (static_cast<int64_t>(c.models.size()) > c.max_loaded_models) {
    return Bad("models", absl::StrCat(c.models.size(), " models exceed max_loaded_models (",
                                      c.max_loaded_models, ")"));
  }
  for (const std::string& root : c.model_roots) {
    if (root.empty() || root[0] != '/') {
      return Bad("model_roots", absl::StrCat("'", root, "' is not an absolute path"));
    }
  }
  LCD_RETURN_IF_ERROR(Range("artifact_rescan_seconds", c.artifact_rescan_seconds, 0.1, 3600));
  for (const std::string& name : c.pinned_models) {
    if (absl::Status st = ValidateModelName(name, "pinned_models"); !st.ok()) return st;
  }
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return Bad(c.tls_cert_file.empty() ? "tls_cert_file" : "tls_key_file",
               "tls_cert_file and tls_key_file go together");
  }
  for (size_t i = 0; i < c.models.size(); ++i) {
    const ModelSpec& m = c.models[i];
    const std::string where = absl::StrCat("models[", i, "]");
    if (absl::Status st = ValidateModelName(m.name, "name"); !st.ok()) {
      return Bad(where, st.message());
    }
    if (m.path.empty()) return Bad(where, "path must not be empty");
    for (size_t j = 0; j < i; ++j) {
      if (c.models[j].name == m.name)
        return Bad(where, absl::StrCat("duplicate name '", m.name, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerConfig> ApplyConfigJson(absl::string_view json, const ServerConfig& base,
                                             absl::string_view origin) {
  ServerConfig c = base;
  LCD_RETURN_IF_ERROR(settings::ApplyJson(Settings(), json, origin, &c));
  LCD_RETURN_IF_ERROR(ValidateServerConfig(c));
  return c;
}

absl::StatusOr<ServerConfig> LoadServerConfig(int argc, const char* const* argv,
                                              const GetEnvFn& getenv) {
  ServerConfig c;
  LCD_RETURN_IF_ERROR(settings::Load(Settings(), "lcd-server", argc, argv, getenv, &c, &c.help_requested));
  if (c.help_requested) return c;
  LCD_RETURN_IF_ERROR(ValidateServerConfig(c));
  return c;
}

runtime::EngineOptions ServerConfig::ToEngineOptions() const {
  runtime::EngineOptions o;
  o.block_size = block_size;
  o.kv_cache_bytes = kv_cache_bytes;
  kernels::DTypeFromName(kv_dtype, &o.kv_dtype);  // validated by ValidateServerConfig
  o.max_num_seqs = max_num_seqs;
  o.max_tokens_per_iteration = max_tokens_per_iteration;
  o.max_waiting = max_waiting;
  o.max_context = max_context;
  return o;
}

std::string ServerConfig::ToString() const {
  std::string models_str;
  for (const auto& m : models)
    absl::StrAppend(&models_str, models_str.empty() ? "" : ",", m.name, "=", m.path);
  return absl::StrFormat(
      "grpc=%s:%d metrics=%s:%d models=[%s] block_size=%d kv_cache_bytes=%d kv_dtype=%s max_num_seqs=%d "
      "max_tokens_per_iteration=%d max_waiting=%d max_context=%d threads=%d max_message_bytes=%d "
      "drain_timeout_seconds=%g log_level=%s model_roots=[%s] admin_token=%s "
      "max_loaded_models=%d max_model_memory_bytes=%d tls=%s",
      grpc_address, grpc_port, metrics_address, metrics_port, models_str, block_size,
      kv_cache_bytes, kv_dtype, max_num_seqs, max_tokens_per_iteration, max_waiting, max_context,
      threads, max_message_bytes, drain_timeout_seconds, log_level, absl::StrJoin(model_roots, ","),
      admin_token_file.empty() ? "off" : "from file", max_loaded_models, max_model_memory_bytes,
      tls_cert_file.empty() ? "off" : "on");
}

std::string ServerConfigHelp() { return settings::Help(Settings(), "lcd-server"); }

}  // namespace lcd::server
