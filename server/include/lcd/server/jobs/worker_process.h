// One quantization worker: a child process (normally `lcd quantize ...
// --progress-fd 3`) supervised by lcd-jobs.
//
// The child runs in its own process group (so a cancel or time-out stops
// everything it started), with stdout/stderr appended to a log file and a
// pipe on fd 3 on which it writes progress as JSON lines:
//   {"phase": "quantize", "progress": 0.42, "message": "tensor 12/30 ..."}
// Lines that are not such objects are ignored (and counted). The pipe
// closing is not an exit: only waitpid says how the worker ended.
//
// Thread safety: Cancel may be called from any thread while Wait runs.
#ifndef LCD_SERVER_JOBS_WORKER_PROCESS_H_
#define LCD_SERVER_JOBS_WORKER_PROCESS_H_

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lcd::server::jobs {

struct WorkerSpec {
  std::vector<std::string> argv;            // argv[0] is the program (PATH is searched)
  std::string log_path;                     // stdout and stderr are appended here
  absl::Duration time_limit = absl::InfiniteDuration();
  absl::Duration kill_grace = absl::Seconds(5);  // SIGTERM, then SIGKILL after this
};

struct WorkerProgress {
  std::string phase;
  double progress = 0;  // 0..1
  std::string message;
};

struct WorkerExit {
  enum class Kind { kSucceeded, kExitCode, kSignal, kTimedOut, kCancelled };
  Kind kind = Kind::kSucceeded;
  int code = 0;             // exit code or signal number
  std::string log_tail;     // last lines of the log, for the reason
  int bad_progress_lines = 0;
  // "exit code 3", "killed by signal 9 (Killed)", "timed out after 600s", ...
  std::string Describe() const;
};

class WorkerProcess {
 public:
  // Starts the child. FailedPrecondition when the program cannot be executed
  // or the log cannot be opened; Internal when a pipe cannot be made.
  // on_progress runs on an internal reader thread.
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Start(
      const WorkerSpec& spec, std::function<void(const WorkerProgress&)> on_progress);
  ~WorkerProcess();  // Kills the process group if it still runs, then reaps it.

  pid_t pid() const { return pid_; }
  // Asks the worker to stop: SIGTERM to its group, SIGKILL after kill_grace.
  void Cancel() { cancel_.store(true); }
  // Blocks until the child has exited (enforcing the time limit) and the
  // progress pipe is drained; callable once.
  WorkerExit Wait();

 private:
  WorkerProcess() = default;
  void ReadProgress(int fd);

  WorkerSpec spec_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  absl::Time start_;
  std::atomic<bool> cancel_{false};
  std::atomic<int> bad_lines_{0};
  std::function<void(const WorkerProgress&)> on_progress_;
  std::thread reader_;
};

}  // namespace lcd::server::jobs

#endif  // LCD_SERVER_JOBS_WORKER_PROCESS_H_
