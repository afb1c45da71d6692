#include "lcd/server/jobs/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace lcd::server::jobs {
namespace {

std::string LogTail(const std::string& path, size_t max_bytes = 2048) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > static_cast<std::streamoff>(max_bytes) ? size - max_bytes : 0;
  in.seekg(from);
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string tail = ss.str();
  if (from > 0) {
    const size_t nl = tail.find('\n');
    if (nl != std::string::npos) tail.erase(0, nl + 1);  // start at a whole line
  }
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
  return tail;
}

}  // namespace

std::string WorkerExit::Describe() const {
  switch (kind) {
    case Kind::kSucceeded:
      return "succeeded";
    case Kind::kExitCode:
      return absl::StrCat("exit code ", code);
    case Kind::kSignal:
      return absl::StrCat("killed by signal ", code, " (", strsignal(code), ")");
    case Kind::kTimedOut:
      return "timed out";
    case Kind::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(
    const WorkerSpec& spec, std::function<void(const WorkerProgress&)> on_progress) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("worker argv is empty");
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  int log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (log_fd < 0) {
    const int err = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return absl::FailedPreconditionError(absl::StrCat("cannot open worker log ", spec.log_path, ": ",
                                                      std::strerror(err)));
  }
  // The child's fds 1-3 are dup2 targets: keep our ends above them, so a
  // dup2 onto itself can never leave a descriptor close-on-exec.
  for (int* fd : {&pipe_fds[1], &log_fd}) {
    if (*fd <= 3) {
      const int moved = ::fcntl(*fd, F_DUPFD_CLOEXEC, 10);
      if (moved >= 0) {
        ::close(*fd);
        *fd = moved;
      }
    }
  }
  // posix_spawn, not fork: lcd-jobs is multi-threaded (gRPC), and between
  // fork and exec only async-signal-safe calls would be allowed.
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 2);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 3);  // the copy is not close-on-exec
  // Own process group (pgid = pid); and the daemon's signal setup must not
  // leak into the worker: lcd-jobs blocks SIGTERM/SIGINT (it takes them with
  // sigwait) and ignores SIGPIPE, and both a mask and ignored signals survive
  // exec, which would make the worker deaf to the SIGTERM of a cancel.
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  for (int sig : {SIGTERM, SIGINT, SIGPIPE, SIGHUP}) sigaddset(&defaults, sig);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    ::close(log_fd);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot execute worker ", spec.argv[0], ": ", std::strerror(rc)));
  }
  ::close(pipe_fds[1]);
  ::close(log_fd);
  std::unique_ptr<WorkerProcess> w(new WorkerProcess());
  w->spec_ = spec;
  w->pid_ = pid;
  w->start_ = absl::Now();
  w->on_progress_ = std::move(on_progress);
  const int read_fd = pipe_fds[0];
  w->reader_ = std::thread([p = w.get(), read_fd] { p->ReadProgress(read_fd); });
  return w;
}

void WorkerProcess::ReadProgress(int fd) {
  std::string buf;
  char chunk[4096];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      const std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("phase") || !j["phase"].is_string() ||
          (j.contains("progress") && !j["progress"].is_number()) ||
          (j.contains("message") && !j["message"].is_string())) {
        bad_lines_.fetch_add(1);
        continue;
      }
      WorkerProgress p;
      p.phase = j["phase"].get<std::string>();
      p.progress = j.value("progress", 0.0);
      if (!(p.progress >= 0.0 && p.progress <= 1.0)) p.progress = p.progress > 1.0 ? 1.0 : 0.0;
      p.message = j.value("message", std::string());
      if (on_progress_) on_progress_(p);
    }
    if (buf.size() > (1 << 20)) {  // a "line" of a megabyte is no progress line
      buf.clear();
      bad_lines_.fetch_add(1);
    }
  }
  ::close(fd);
}

WorkerExit WorkerProcess::Wait() {
  WorkerExit exit;
  bool timed_out = false, cancelled = false;
  absl::Time term_sent = absl::InfiniteFuture();
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (r < 0 && errno != EINTR) {
      status = 0;
      break;
    }
    const absl::Time now = absl::Now();
    if (term_sent == absl::InfiniteFuture()) {
      if (cancel_.load()) cancelled = true;
      if (now - start_ > spec_.time_limit) timed_out = true;
      if (cancelled || timed_out) {
        ::kill(-pid_, SIGTERM);
        term_sent = now;
      }
    } else if (now - term_sent > spec_.kill_grace) {
      ::kill(-pid_, SIGKILL);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  reaped_ = true;
  ::kill(-pid_, SIGKILL);  // anything of the group still alive (grandchildren)
  if (reader_.joinable()) reader_.join();
  exit.bad_progress_lines = bad_lines_.load();
  exit.log_tail = LogTail(spec_.log_path);
  if (cancelled) {
    exit.kind = WorkerExit::Kind::kCancelled;
  } else if (timed_out) {
    exit.kind = WorkerExit::Kind::kTimedOut;
  } else if (WIFEXITED(status)) {
    exit.code = WEXITSTATUS(status);
    exit.kind = exit.code == 0 ? WorkerExit::Kind::kSucceeded : WorkerExit::Kind::kExitCode;
  } else if (WIFSIGNALED(status)) {
    exit.kind = WorkerExit::Kind::kSignal;
    exit.code = WTERMSIG(status);
  }
  return exit;
}

WorkerProcess::~WorkerProcess() {
  if (!reaped_ && pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (reader_.joinable()) reader_.join();
}

}  // namespace lcd::server::jobs
