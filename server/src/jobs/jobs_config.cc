#include "lcd/server/jobs/jobs_config.h"

#include "src/settings.h"

namespace lcd::server::jobs {
namespace {

using settings::Bad;
using settings::Range;
using S = settings::Setting<JobsConfig>;

const std::vector<S>& Settings() {
  static const auto* s = new std::vector<S>{
      settings::StringSetting<JobsConfig>("grpc_address", "address the gRPC server binds", &JobsConfig::grpc_address),
      settings::IntSetting<JobsConfig>("grpc_port", "gRPC port (0 = any free port)", &JobsConfig::grpc_port),
      settings::StringSetting<JobsConfig>("metrics_address", "address of /metrics and /healthz",
                                          &JobsConfig::metrics_address),
      settings::IntSetting<JobsConfig>("metrics_port", "HTTP port (0 = any, -1 = off)", &JobsConfig::metrics_port),
      settings::StringSetting<JobsConfig>("store", "SQLite job store file", &JobsConfig::store),
      settings::StringSetting<JobsConfig>("artifact_root", "artifact store lcd-server watches",
                                          &JobsConfig::artifact_root),
      settings::StringListSetting<JobsConfig>("model_roots", "directories source models may come from",
                                              &JobsConfig::model_roots),
      settings::StringListSetting<JobsConfig>("data_roots", "directories calibration files may come from",
                                              &JobsConfig::data_roots),
      settings::StringSetting<JobsConfig>("token_file", "file holding the bearer token for Submit/Cancel",
                                          &JobsConfig::token_file),
      settings::StringSetting<JobsConfig>("tls_cert_file", "TLS certificate chain (PEM)", &JobsConfig::tls_cert_file),
      settings::StringSetting<JobsConfig>("tls_key_file", "TLS private key (PEM)", &JobsConfig::tls_key_file),
      settings::IntSetting<JobsConfig>("max_workers", "jobs run at once", &JobsConfig::max_workers),
      settings::IntSetting<JobsConfig>("max_attempts", "worker starts per job before FAILED",
                                       &JobsConfig::max_attempts),
      settings::IntSetting<JobsConfig>("worker_threads", "threads of each worker (0 = its default)",
                                       &JobsConfig::worker_threads),
      settings::DoubleSetting<JobsConfig>("job_time_limit_seconds", "default time limit of one attempt",
                                          &JobsConfig::job_time_limit_seconds),
      settings::DoubleSetting<JobsConfig>("retry_backoff_seconds", "first retry delay (doubles per attempt)",
                                          &JobsConfig::retry_backoff_seconds),
      settings::StringSetting<JobsConfig>("worker_binary", "the lcd executable (default: beside lcd-jobs)",
                                          &JobsConfig::worker_binary),
      settings::StringSetting<JobsConfig>("log_dir", "worker logs (default: beside the store)", &JobsConfig::log_dir),
      settings::StringSetting<JobsConfig>("checkpoint_dir",
                                          "worker checkpoints, to resume a retried job (default: beside the store)",
                                          &JobsConfig::checkpoint_dir),
      settings::StringSetting<JobsConfig>("log_level", "debug|info|warning|error", &JobsConfig::log_level),
  };
  return *s;
}

bool Loopback(const std::string& address) {
  return address == "127.0.0.1" || address == "localhost" || address == "::1" || address == "[::1]";
}

}  // namespace

absl::Status ValidateJobsConfig(const JobsConfig& c) {
  if (c.grpc_address.empty()) return Bad("grpc_address", "must not be empty");
  LCD_RETURN_IF_ERROR(Range("grpc_port", c.grpc_port, 0, 65535));
  LCD_RETURN_IF_ERROR(Range("metrics_port", c.metrics_port, -1, 65535));
  if (c.store.empty()) return Bad("store", "must not be empty");
  if (c.artifact_root.empty()) return Bad("artifact_root", "is required");
  if (c.model_roots.empty()) return Bad("model_roots", "at least one directory is required");
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return Bad("tls_cert_file", "tls_cert_file and tls_key_file go together");
  }
  if (c.token_file.empty() && !Loopback(c.grpc_address)) {
    return Bad("token_file", absl::StrCat("is required when listening on ", c.grpc_address,
                                          " (anyone who reaches the port could run jobs)"));
  }
  LCD_RETURN_IF_ERROR(Range("max_workers", c.max_workers, 1, 64));
  LCD_RETURN_IF_ERROR(Range("max_attempts", c.max_attempts, 1, 100));
  LCD_RETURN_IF_ERROR(Range("worker_threads", c.worker_threads, 0, 1024));
  LCD_RETURN_IF_ERROR(Range("job_time_limit_seconds", c.job_time_limit_seconds, 1, 30 * 24 * 3600));
  LCD_RETURN_IF_ERROR(Range("retry_backoff_seconds", c.retry_backoff_seconds, 0, 3600));
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warning" && c.log_level != "error") {
    return Bad("log_level", absl::StrCat("'", c.log_level, "' is not debug|info|warning|error"));
  }
  return absl::OkStatus();
}

absl::StatusOr<JobsConfig> LoadJobsConfig(int argc, const char* const* argv, const GetEnvFn& getenv) {
  JobsConfig c;
  LCD_RETURN_IF_ERROR(settings::Load(Settings(), "lcd-jobs", argc, argv, getenv, &c, &c.help_requested));
  if (c.help_requested) return c;
  LCD_RETURN_IF_ERROR(ValidateJobsConfig(c));
  return c;
}

std::string JobsConfigHelp() { return settings::Help(Settings(), "lcd-jobs"); }

}  // namespace lcd::server::jobs
