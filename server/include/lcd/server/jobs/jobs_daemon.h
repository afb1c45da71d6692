// lcd-jobs wired together: the SQLite job store, the artifact store, the
// scheduler running worker processes, lcd.v1.JobService + gRPC health on the
// gRPC port (TLS when configured), and /metrics + /healthz on the metrics
// port. Start recovers what a previous (killed) run left behind.
//
// Metrics: lcd_jobs{state} (jobs in each state; RUNNING = workers running),
// lcd_job_duration_seconds{method,state} (submit to terminal state),
// lcd_job_worker_restarts_total (attempts retried after a worker failed).
//
// Thread safety: Start, Shutdown and the destructor from one thread.
#ifndef LCD_SERVER_JOBS_JOBS_DAEMON_H_
#define LCD_SERVER_JOBS_JOBS_DAEMON_H_

#include <memory>

#include "absl/status/statusor.h"
#include "lcd/server/jobs/jobs_config.h"

namespace lcd::server::jobs {

class JobsDaemon {
 public:
  static absl::StatusOr<std::unique_ptr<JobsDaemon>> Start(const JobsConfig& config);
  virtual ~JobsDaemon() = default;
  virtual int grpc_port() const = 0;
  virtual int metrics_port() const = 0;  // -1 when disabled
  // Stops serving, stops running workers (their jobs are resumed at the next
  // start), closes the store. Idempotent.
  virtual void Shutdown() = 0;
};

}  // namespace lcd::server::jobs

#endif  // LCD_SERVER_JOBS_JOBS_DAEMON_H_
