// Runs queued jobs as worker processes and records what happens to them.
//
// For each job: QUEUED -> (claimed, compare-and-set) RUNNING -> a new
// artifact version number -> `lcd quantize ... --out <model>/<v>.partial
// --progress-fd 3` -> progress into the store (and to watchers) -> on exit 0
// the partial is verified and published, the job SUCCEEDED with its version.
// A worker that fails (exit code, signal, time limit) is retried with
// exponential back-off up to max_attempts, then FAILED with the exit cause
// and the last log line; a cancelled job is stopped and CANCELLED. Nothing
// but a published directory is ever left for lcd-server to load.
//
// Resuming: with checkpoint_dir set, every attempt of a job runs with
// `--resume <checkpoint_dir>/<job id>`, so an attempt after a worker that
// died (or after lcd-jobs itself was killed) continues the distillation
// from its last checkpoint instead of starting over (methods without a
// training loop start over). The directory is removed when the job ends
// (SUCCEEDED, FAILED, CANCELLED); at start, directories of jobs that are
// neither QUEUED nor RUNNING are removed.
//
// Start-up recovery: jobs a previous lcd-jobs left RUNNING (it was killed)
// go back to QUEUED with the reason recorded, or FAILED when their attempts
// are spent; partial directories are removed.
//
// Thread safety: all public methods may be called from any thread.
#ifndef LCD_SERVER_JOBS_JOB_SCHEDULER_H_
#define LCD_SERVER_JOBS_JOB_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lcd/server/jobs/artifact_store.h"
#include "lcd/server/jobs/job_store.h"
#include "lcd/server/jobs/worker_process.h"

namespace lcd::server::jobs {

struct SchedulerOptions {
  std::string worker_binary;  // the `lcd` executable
  std::string log_dir;        // worker logs: <log_dir>/<job id>.log
  std::string checkpoint_dir; // worker checkpoints: <checkpoint_dir>/<job id> (empty: none)
  int max_workers = 1;
  int max_attempts = 3;
  int worker_threads = 0;     // --threads of each worker (0: its default)
  absl::Duration default_time_limit = absl::Hours(6);
  absl::Duration retry_backoff = absl::Seconds(5);  // doubled per failed attempt
  absl::Duration poll_interval = absl::Milliseconds(200);
  // Maps a job's stored source model / calibration file to a path (the
  // service resolved and validated them at submit; this re-resolves, so a
  // root moved between submit and run fails the job with a reason).
  std::function<absl::StatusOr<std::string>(const std::string&)> resolve_model;
  std::function<absl::StatusOr<std::string>(const std::string&)> resolve_data;
  // Called after each state change is stored (metrics); may be null.
  std::function<void(const JobRecord&)> on_change;
};

class JobScheduler {
 public:
  JobScheduler(JobStore* store, const ArtifactStore* artifacts, SchedulerOptions options);
  ~JobScheduler();  // Shutdown()

  // Recovers what a previous run left, then starts scheduling.
  absl::Status Start();
  // Stops starting jobs, stops running workers (their jobs go back to QUEUED:
  // the next start resumes them) and joins every thread.
  void Shutdown();
  // A job was queued or a cancel requested: look now, not at the next poll.
  void Notify();
  // Blocks until job `id` has an event after `after_seq`, or `deadline`.
  void WaitForEvent(const std::string& id, int64_t after_seq, absl::Time deadline);

 private:
  struct Running {
    std::unique_ptr<WorkerProcess> worker;  // null while starting
    std::thread thread;
    bool done = false;
  };

  void Loop();
  void ScheduleOnce();
  void RunJob(JobRecord job);
  // Moves a finished attempt to its next state; a terminal one drops the
  // job's checkpoint first.
  void Finish(const JobRecord& job, int64_t version, const WorkerExit& exit, const absl::Status& setup_error);
  std::string CheckpointDir(const std::string& id) const;
  void DropCheckpoint(const std::string& id) const;
  // A job changed state: on_change (metrics), then wakes the watchers.
  void Changed(const absl::StatusOr<JobRecord>& job);
  // A progress event was stored: wakes the watchers only (the state is
  // still RUNNING, so on_change has nothing new to count).
  void SignalEvent();
  static int64_t NowMs();

  JobStore* const store_;
  const ArtifactStore* const artifacts_;
  const SchedulerOptions options_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;    // Notify / shutdown
  absl::CondVar events_;  // any job event stored
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, Running> running_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> not_before_ ABSL_GUARDED_BY(mu_);  // retry back-off
  std::thread loop_;
};

}  // namespace lcd::server::jobs

#endif  // LCD_SERVER_JOBS_JOB_SCHEDULER_H_
