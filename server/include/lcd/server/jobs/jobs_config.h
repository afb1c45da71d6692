// lcd-jobs configuration, with lcd-server's conventions (see config.h): every
// setting from a JSON file (--config FILE or LCD_CONFIG), an LCD_* variable
// or a flag; default < file < environment < flag.
//
//   JSON key                  flag                        environment
//   grpc_address              --grpc-address              LCD_GRPC_ADDRESS
//   grpc_port                 --grpc-port                 LCD_GRPC_PORT
//   metrics_address           --metrics-address           LCD_METRICS_ADDRESS
//   metrics_port              --metrics-port              LCD_METRICS_PORT
//   store                     --store                     LCD_STORE
//   artifact_root             --artifact-root             LCD_ARTIFACT_ROOT
//   model_roots               --model-roots (repeat)      LCD_MODEL_ROOTS (comma-separated)
//   data_roots                --data-roots (repeat)       LCD_DATA_ROOTS
//   token_file                --token-file                LCD_TOKEN_FILE
//   tls_cert_file             --tls-cert-file             LCD_TLS_CERT_FILE
//   tls_key_file              --tls-key-file              LCD_TLS_KEY_FILE
//   max_workers               --max-workers               LCD_MAX_WORKERS
//   max_attempts              --max-attempts              LCD_MAX_ATTEMPTS
//   worker_threads            --worker-threads            LCD_WORKER_THREADS
//   job_time_limit_seconds    --job-time-limit-seconds    LCD_JOB_TIME_LIMIT_SECONDS
//   retry_backoff_seconds     --retry-backoff-seconds     LCD_RETRY_BACKOFF_SECONDS
//   worker_binary             --worker-binary             LCD_WORKER_BINARY
//   log_dir                   --log-dir                   LCD_LOG_DIR
//   checkpoint_dir            --checkpoint-dir            LCD_CHECKPOINT_DIR
//   log_level                 --log-level                 LCD_LOG_LEVEL
#ifndef LCD_SERVER_JOBS_JOBS_CONFIG_H_
#define LCD_SERVER_JOBS_JOBS_CONFIG_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lcd::server::jobs {

struct JobsConfig {
  // Loopback by default: submitting runs code on this machine, so exposing
  // the port is a decision (and then a token is required, see Validate).
  std::string grpc_address = "127.0.0.1";
  int grpc_port = 50061;                   // 0 = any free port
  std::string metrics_address = "127.0.0.1";
  int metrics_port = 9401;                 // 0 = any, -1 = off
  std::string store = "lcd-jobs.db";       // SQLite file
  std::string artifact_root;               // required: <root>/<model>/<version>/
  std::vector<std::string> model_roots;    // required: where source models may come from
  std::vector<std::string> data_roots;     // where calibration files may come from
  std::string token_file;                  // bearer token for Submit/Cancel
  std::string tls_cert_file, tls_key_file; // PEM files; both or neither
  int max_workers = 1;                     // 1..64
  int max_attempts = 3;                    // 1..100
  int worker_threads = 0;                  // --threads of each worker (0: its default)
  double job_time_limit_seconds = 6 * 3600;
  double retry_backoff_seconds = 5;
  std::string worker_binary;               // default: `lcd` beside lcd-jobs
  std::string log_dir;                     // default: <dir of store>/worker-logs
  std::string checkpoint_dir;              // default: <dir of store>/worker-checkpoints
  std::string log_level = "info";

  bool help_requested = false;
};

using GetEnvFn = std::function<const char*(const char*)>;

// Flags, environment, file; then Validate. InvalidArgument naming the setting.
absl::StatusOr<JobsConfig> LoadJobsConfig(int argc, const char* const* argv, const GetEnvFn& getenv);
// Ranges; required settings; a token whenever the gRPC address is not loopback.
absl::Status ValidateJobsConfig(const JobsConfig& c);
std::string JobsConfigHelp();

}  // namespace lcd::server::jobs

#endif  // LCD_SERVER_JOBS_JOBS_CONFIG_H_
