// lcd-server configuration: every setting can come from a JSON file
// (--config FILE or LCD_CONFIG), an LCD_* environment variable, or a flag.
// Precedence, lowest to highest: built-in default < file < environment < flag.
//
//   JSON key                  flag                          environment
//   grpc_address              --grpc-address                LCD_GRPC_ADDRESS
//   grpc_port                 --grpc-port                   LCD_GRPC_PORT
//   metrics_address           --metrics-address             LCD_METRICS_ADDRESS
//   metrics_port              --metrics-port                LCD_METRICS_PORT
//   models                    --model NAME=PATH (repeat)    LCD_MODELS=NAME=PATH[,NAME=PATH]
//   block_size                --block-size                  LCD_BLOCK_SIZE
//   kv_cache_bytes            --kv-cache-bytes              LCD_KV_CACHE_BYTES
//   kv_dtype                  --kv-dtype                    LCD_KV_DTYPE
//   max_num_seqs              --max-num-seqs                LCD_MAX_NUM_SEQS
//   max_tokens_per_iteration  --max-tokens-per-iteration    LCD_MAX_TOKENS_PER_ITERATION
//   max_waiting               --max-waiting                 LCD_MAX_WAITING
//   max_context               --max-context                 LCD_MAX_CONTEXT
//   threads                   --threads                     LCD_THREADS
//   max_message_bytes         --max-message-bytes           LCD_MAX_MESSAGE_BYTES
//   drain_timeout_seconds     --drain-timeout-seconds       LCD_DRAIN_TIMEOUT_SECONDS
//   log_level                 --log-level                   LCD_LOG_LEVEL
//   model_roots               --model-root DIR (repeat)     LCD_MODEL_ROOTS=DIR[,DIR]
//   admin_token_file          --admin-token-file            LCD_ADMIN_TOKEN_FILE
//   max_loaded_models         --max-loaded-models           LCD_MAX_LOADED_MODELS
//   max_model_memory_bytes    --max-model-memory-bytes      LCD_MAX_MODEL_MEMORY_BYTES
//   tls_cert_file             --tls-cert-file               LCD_TLS_CERT_FILE
//   tls_key_file              --tls-key-file                LCD_TLS_KEY_FILE
//   artifact_root             --artifact-root               LCD_ARTIFACT_ROOT
//   artifact_rescan_seconds   --artifact-rescan-seconds     LCD_ARTIFACT_RESCAN_SECONDS
//   pinned_models             --pinned-model NAME (repeat)  LCD_PINNED_MODELS=NAME[,NAME]
//
// Security defaults: both ports bind 127.0.0.1, so a bare-metal start exposes
// nothing to the network until the operator names an address (the container
// image sets 0.0.0.0, where the pod network is the boundary). LoadModel and
// UnloadModel are refused unless admin_token_file names a token; with a token,
// every ModelService call must carry "authorization: Bearer <token>".
// LoadModel only loads directories under model_roots (none configured: no
// LoadModel at all); models named in the configuration are trusted as given.
//
// In the JSON file `models` is an array of {"name": ..., "path": ...}.
// Byte sizes accept a plain integer or a KiB/MiB/GiB suffix ("256MiB").
// Unknown JSON keys, unknown flags, malformed numbers and out-of-range values
// are rejected with an InvalidArgument message naming the setting and where
// it came from.
#ifndef LCD_SERVER_CONFIG_H_
#define LCD_SERVER_CONFIG_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lcd/runtime/engine.h"

namespace lcd::server {

struct ModelSpec {
  std::string name;  // [A-Za-z0-9._-]+, unique.
  std::string path;  // Model directory (checked when loaded).
};

struct ServerConfig {
  std::string grpc_address = "127.0.0.1";
  int grpc_port = 50051;  // 0 = any free port (logged at start).
  std::string metrics_address = "127.0.0.1";
  int metrics_port = 9400;  // 0 = any free port, -1 = no metrics endpoint.
  std::vector<ModelSpec> models;
  int64_t block_size = 16;                 // 1..1024
  uint64_t kv_cache_bytes = 256ull << 20;  // >= 1 MiB
  std::string kv_dtype = "f16";            // f16|bf16|f32
  int64_t max_num_seqs = 32;               // 1..4096
  int64_t max_tokens_per_iteration = 512;  // 1..1048576
  int64_t max_waiting = 256;               // 0..1000000
  int64_t max_context = 0;                 // 0 = model's own limit
  int threads = 0;                         // 0 = the CPUs the process may use (cgroup quota); 0..1024
  int64_t max_message_bytes = 4 << 20;     // 1 KiB .. 1 GiB
  double drain_timeout_seconds = 30.0;     // 0..3600
  std::string log_level = "info";          // debug|info|warning|error
  std::vector<std::string> model_roots;    // Absolute; LoadModel stays under these.
  std::string admin_token_file;            // Empty: LoadModel/UnloadModel refused.
  int64_t max_loaded_models = 8;           // 1..1024, counting versions being loaded.
  uint64_t max_model_memory_bytes = 0;     // 0 = no limit.
  std::string tls_cert_file;               // PEM; with tls_key_file, TLS on the gRPC port.
  std::string tls_key_file;
  // The artifact store lcd-jobs publishes into (<root>/<model>/<version>/).
  // Every configured model follows it: a newer version of its name is
  // hot-swapped in (drain_timeout_seconds for the old one) unless the name is
  // in pinned_models. Empty: no watching.
  std::string artifact_root;
  double artifact_rescan_seconds = 10.0;  // fallback to inotify; 0.1..3600
  std::vector<std::string> pinned_models;

  bool help_requested = false;  // --help was given; print ServerConfigHelp().

  // The engine options these settings describe (observer left null).
  runtime::EngineOptions ToEngineOptions() const;
  // One line for the start-up log.
  std::string ToString() const;
};

// Reads `getenv(name)` for environment values; nullptr means unset. Tests
// pass a fake; the daemon passes ::getenv.
using GetEnvFn = std::function<const char*(const char*)>;

// Defaults, then the JSON file named by --config (or LCD_CONFIG), then the
// environment, then flags; validated at the end.
absl::StatusOr<ServerConfig> LoadServerConfig(int argc, const char* const* argv,
                                              const GetEnvFn& getenv);

// Applies a JSON document on top of `base` (unknown keys rejected) and
// validates the result. `origin` names the source in error messages.
absl::StatusOr<ServerConfig> ApplyConfigJson(absl::string_view json, const ServerConfig& base,
                                             absl::string_view origin = "config");

// Checks every range; InvalidArgument naming the first bad setting.
absl::Status ValidateServerConfig(const ServerConfig& config);

// "256MiB" -> 268435456; plain integers as is.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

// Usage text for --help.
std::string ServerConfigHelp();

}  // namespace lcd::server

#endif  // LCD_SERVER_CONFIG_H_
