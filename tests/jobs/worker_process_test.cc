// WorkerProcess with real child processes (/bin/sh scripts standing in for
// `lcd quantize`): progress lines on fd 3, exit codes, signals, time limits
// (including a worker that ignores SIGTERM), cancellation, a program that
// cannot run, malformed progress, and no grandchild left behind.
#include "lcd/server/jobs/worker_process.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobs_test_util.h"

namespace lcd::server::jobs {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class WorkerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("worker");
  }
  void TearDown() override { fs::remove_all(dir_); }

  WorkerSpec Sh(const std::string& script) {
    WorkerSpec s;
    s.argv = {"/bin/sh", "-c", script};
    s.log_path = (dir_ / "worker.log").string();
    return s;
  }

  WorkerExit Run(const WorkerSpec& spec, std::vector<WorkerProgress>* progress = nullptr) {
    std::mutex mu;
    auto w = WorkerProcess::Start(spec, [&](const WorkerProgress& p) {
      std::lock_guard<std::mutex> lock(mu);
      if (progress != nullptr) progress->push_back(p);
    });
    EXPECT_TRUE(w.ok()) << w.status();
    return (*w)->Wait();
  }

  fs::path dir_;
};

TEST_F(WorkerProcessTest, ReportsProgressAndSuccess) {
  std::vector<WorkerProgress> progress;
  const WorkerExit e = Run(Sh(R"(
    echo '{"phase": "calibrate", "progress": 0.1, "message": "window 1/10"}' >&3
    echo 'some log line'
    echo '{"phase": "quantize", "progress": 0.5}' >&3
    echo '{"phase": "write", "progress": 1.0, "message": "done"}' >&3
    exit 0)"),
                           &progress);
  EXPECT_EQ(e.kind, WorkerExit::Kind::kSucceeded) << e.Describe();
  ASSERT_EQ(progress.size(), 3u);
  EXPECT_EQ(progress[0].phase, "calibrate");
  EXPECT_DOUBLE_EQ(progress[0].progress, 0.1);
  EXPECT_EQ(progress[0].message, "window 1/10");
  EXPECT_EQ(progress[2].message, "done");
  EXPECT_EQ(e.bad_progress_lines, 0);
  EXPECT_THAT(e.log_tail, HasSubstr("some log line"));
}

TEST_F(WorkerProcessTest, ExitCodeAndLogTail) {
  const WorkerExit e = Run(Sh("echo 'lcd quantize: NOT_FOUND: no config.json' >&2; exit 3"));
  EXPECT_EQ(e.kind, WorkerExit::Kind::kExitCode);
  EXPECT_EQ(e.code, 3);
  EXPECT_EQ(e.Describe(), "exit code 3");
  EXPECT_THAT(e.log_tail, HasSubstr("no config.json"));
}

TEST_F(WorkerProcessTest, KilledBySignal) {
  const WorkerExit e = Run(Sh("kill -9 $$"));
  EXPECT_EQ(e.kind, WorkerExit::Kind::kSignal);
  EXPECT_EQ(e.code, SIGKILL);
  EXPECT_THAT(e.Describe(), HasSubstr("signal 9"));
}

TEST_F(WorkerProcessTest, TimeLimitEvenWhenSigtermIsIgnored) {
  WorkerSpec s = Sh("trap '' TERM; while true; do sleep 0.05; done");
  s.time_limit = absl::Milliseconds(300);
  s.kill_grace = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  const WorkerExit e = Run(s);
  EXPECT_EQ(e.kind, WorkerExit::Kind::kTimedOut);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST_F(WorkerProcessTest, CancelStopsTheWholeGroup) {
  // The worker starts a grandchild; cancelling must leave neither running.
  const std::string pidfile = (dir_ / "grandchild.pid").string();
  auto w = WorkerProcess::Start(Sh("sleep 100 & echo $! > " + pidfile + "; wait"), nullptr);
  ASSERT_TRUE(w.ok()) << w.status();
  for (int i = 0; i < 200 && !fs::exists(pidfile); ++i) absl::SleepFor(absl::Milliseconds(10));
  pid_t grandchild = 0;
  std::ifstream(pidfile) >> grandchild;
  ASSERT_GT(grandchild, 0);
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(50));
    (*w)->Cancel();
  });
  const WorkerExit e = (*w)->Wait();
  canceller.join();
  EXPECT_EQ(e.kind, WorkerExit::Kind::kCancelled);
  // The grandchild may linger as a zombie of init for an instant; it must not
  // be running (kill(pid, 0) fails, or /proc says Z).
  bool running = true;
  for (int i = 0; i < 100 && running; ++i) {
    std::ifstream stat("/proc/" + std::to_string(grandchild) + "/stat");
    std::string pid_s, comm, state;
    running = static_cast<bool>(stat >> pid_s >> comm >> state) && state != "Z";
    if (running) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_FALSE(running) << "grandchild " << grandchild << " survived the cancel";
}

TEST_F(WorkerProcessTest, WorkerDoesNotInheritTheDaemonsSignalSetup) {
  // lcd-jobs blocks SIGTERM (sigwait) and ignores SIGPIPE; a worker started
  // from such a thread must still die of a plain SIGTERM.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
  struct sigaction ignore {}, old_pipe {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, &old_pipe);
  auto w = WorkerProcess::Start(Sh("kill -TERM $$; sleep 5; exit 0"), nullptr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  sigaction(SIGPIPE, &old_pipe, nullptr);
  ASSERT_TRUE(w.ok()) << w.status();
  const WorkerExit e = (*w)->Wait();
  EXPECT_EQ(e.kind, WorkerExit::Kind::kSignal) << e.Describe();
  EXPECT_EQ(e.code, SIGTERM);
}

TEST_F(WorkerProcessTest, ProgramThatCannotRun) {
  WorkerSpec s;
  s.argv = {"/nonexistent/lcd", "quantize"};
  s.log_path = (dir_ / "worker.log").string();
  auto missing = WorkerProcess::Start(s, nullptr);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/lcd"));
  WorkerSpec no_log = s;
  no_log.log_path = (dir_ / "missing" / "x.log").string();
  EXPECT_EQ(WorkerProcess::Start(no_log, nullptr).status().code(), absl::StatusCode::kFailedPrecondition);
  WorkerSpec empty;
  EXPECT_EQ(WorkerProcess::Start(empty, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(WorkerProcessTest, MalformedProgressIsCountedNotFatal) {
  std::vector<WorkerProgress> progress;
  const WorkerExit e = Run(Sh(R"(
    echo 'not json' >&3
    echo '{"progress": 0.5}' >&3
    echo '{"phase": 7}' >&3
    echo '[1, 2]' >&3
    echo '{"phase": "ok", "progress": 7.5}' >&3
    exit 0)"),
                           &progress);
  EXPECT_EQ(e.kind, WorkerExit::Kind::kSucceeded);
  EXPECT_EQ(e.bad_progress_lines, 4);
  ASSERT_EQ(progress.size(), 1u);
  EXPECT_EQ(progress[0].progress, 1.0);  // clamped into [0, 1]
}

}  // namespace
}  // namespace lcd::server::jobs
