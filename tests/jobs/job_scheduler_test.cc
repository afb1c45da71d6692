// JobScheduler end to end on this machine: a real SQLite store, a real
// artifact store, real worker processes (the real `lcd quantize` on the tiny
// model, or shell scripts that fail in chosen ways and then hand over to it).
// Covers success with progress, a worker killed by SIGKILL and retried, a
// worker that always fails (FAILED with the cause after max_attempts), one
// that exits 2 or 3 (FAILED at once: the same attempt would fail again; a
// budget the real quantizer measures it cannot meet), cancelling a running
// job, a time limit, and recovery of a job a killed
// lcd-jobs left RUNNING. In every case no partial or unverified version is
// left where lcd-server would look.
#include "lcd/server/jobs/job_scheduler.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobs_test_util.h"
#include "lcd/runtime/artifact.h"

namespace lcd::server::jobs {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// The `lcd` binary of this build (tests/<test> -> tools/lcd).
std::string LcdBinary() { return (fs::canonical("/proc/self/exe").parent_path().parent_path() / "tools" / "lcd").string(); }

class JobSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("scheduler");
    fs::create_directories(dir_ / "artifacts");
    ASSERT_TRUE(fs::exists(LcdBinary())) << LcdBinary();
    auto s = OpenSqliteJobStore((dir_ / "jobs.db").string());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    artifacts_ = std::make_unique<ArtifactStore>((dir_ / "artifacts").string());
  }
  void TearDown() override {
    scheduler_.reset();
    fs::remove_all(dir_);
  }

  SchedulerOptions Options(const std::string& worker) {
    SchedulerOptions o;
    o.worker_binary = worker;
    o.log_dir = (dir_ / "logs").string();
    o.max_attempts = 2;
    o.worker_threads = 1;
    o.retry_backoff = absl::Milliseconds(50);
    o.poll_interval = absl::Milliseconds(50);
    o.resolve_model = [](const std::string& m) -> absl::StatusOr<std::string> {
      return (testing::SourceDir() / "models" / m).string();
    };
    o.resolve_data = [](const std::string& f) -> absl::StatusOr<std::string> { return f; };
    return o;
  }

  // A worker script: `body` runs first, then it hands over to the real lcd.
  std::string Script(const std::string& body) {
    const fs::path p = dir_ / ("worker" + std::to_string(scripts_++) + ".sh");
    std::ofstream(p) << "#!/bin/sh\n" << body << "\nexec " << LcdBinary() << " \"$@\"\n";
    fs::permissions(p, fs::perms::owner_all);
    return p.string();
  }

  std::string Submit(double budget = 0, const std::string& method = "rtn") {
    JobSpec s = testing::TinySpec();
    s.budget_seconds = budget;
    s.method = method;
    if (method != "rtn") s.bits = 2;
    bool created;
    auto j = store_->Create(s, absl::ToUnixMillis(absl::Now()), &created);
    EXPECT_TRUE(j.ok()) << j.status();
    scheduler_->Notify();
    return j->id;
  }

  JobRecord WaitTerminal(const std::string& id, absl::Duration limit = absl::Seconds(60)) {
    const absl::Time deadline = absl::Now() + limit;
    for (;;) {
      auto j = store_->Get(id);
      EXPECT_TRUE(j.ok());
      if (IsTerminal(j->state) || absl::Now() > deadline) return *j;
      scheduler_->WaitForEvent(id, j->last_event, std::min(deadline, absl::Now() + absl::Milliseconds(200)));
    }
  }

  std::vector<JobEvent> Events(const std::string& id) { return *store_->EventsSince(id, 0, 1000); }

  void ExpectNoPartials() {
    for (const auto& e : fs::recursive_directory_iterator(dir_ / "artifacts")) {
      EXPECT_FALSE(e.path().string().ends_with(".partial")) << e.path();
    }
  }

  fs::path dir_;
  int scripts_ = 0;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<JobScheduler> scheduler_;
};

TEST_F(JobSchedulerTest, RunsTheRealQuantizerAndPublishes) {
  scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(), Options(LcdBinary()));
  ASSERT_TRUE(scheduler_->Start().ok());
  const std::string id = Submit();
  const JobRecord j = WaitTerminal(id);
  ASSERT_EQ(j.state, JobState::kSucceeded) << j.reason;
  EXPECT_EQ(j.version, 1);
  EXPECT_EQ(j.attempts, 1);
  EXPECT_TRUE(runtime::Artifact::Open((dir_ / "artifacts" / "tiny" / "1").string()).ok());
  int quantize_events = 0;
  for (const JobEvent& e : Events(id)) quantize_events += e.phase == "quantize";
  EXPECT_GE(quantize_events, 10) << "worker progress did not reach the store";
  EXPECT_EQ(Events(id).back().state, JobState::kSucceeded);
  ExpectNoPartials();
}

TEST_F(JobSchedulerTest, WorkerKilledMidJobIsRetriedAndSucceeds) {
  const std::string marker = (dir_ / "killed-once").string();
  scheduler_ = std::make_unique<JobScheduler>(
      store_.get(), artifacts_.get(),
      Options(Script("if [ ! -e " + marker + " ]; then touch " + marker +
                     "; echo '{\"phase\": \"quantize\", \"progress\": 0.3}' >&3; kill -9 $$; fi")));
  ASSERT_TRUE(scheduler_->Start().ok());
  const std::string id = Submit();
  const JobRecord j = WaitTerminal(id);
  ASSERT_EQ(j.state, JobState::kSucceeded) << j.reason;
  EXPECT_EQ(j.attempts, 2);
  EXPECT_EQ(j.version, 2) << "the killed attempt's version number is never reused";
  bool saw_kill = false;
  for (const JobEvent& e : Events(id)) saw_kill |= e.message.find("killed by signal 9") != std::string::npos;
  EXPECT_TRUE(saw_kill);
  EXPECT_EQ(*artifacts_->Versions("tiny"), (std::vector<int64_t>{2}));
  ExpectNoPartials();
}

// A distillation job whose worker is SIGKILLed after its first checkpoint:
// the retry gets the same --resume directory, continues from the checkpoint
// (its log says so) and succeeds; the checkpoint directory is removed when
// the job ends, and teacher-generated samples reach the worker.
TEST_F(JobSchedulerTest, RetriedWorkerResumesFromItsCheckpoint) {
  const std::string marker = (dir_ / "killed-once").string();
  // Short distillation settings the job spec does not carry; attempt 1 runs
  // the real lcd in the background and kills it (and itself) once the
  // checkpoint after the init is on disk.
  const std::string extra = " --steps 12 --seq-len 32 --batch 2 --checkpoint-every 4";
  SchedulerOptions o = Options(Script(
      "R=''; prev=''; for a in \"$@\"; do [ \"$prev\" = --resume ] && R=\"$a\"; prev=\"$a\"; done\n"
      "case \" $* \" in *' --samples 6 '*) ;; *) echo 'no --samples 6' >&2; exit 9;; esac\n"
      "if [ ! -e " + marker + " ]; then touch " + marker + "\n"
      "  " + LcdBinary() + " \"$@\"" + extra + " & pid=$!\n"
      "  while kill -0 $pid 2>/dev/null && [ ! -e \"$R/checkpoint.json\" ]; do sleep 0.02; done\n"
      "  kill -9 $pid; kill -9 $$\n"
      "fi\n"
      "exec " + LcdBinary() + " \"$@\"" + extra));
  o.checkpoint_dir = (dir_ / "checkpoints").string();
  scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(), o);
  ASSERT_TRUE(scheduler_->Start().ok());
  JobSpec spec = testing::TinySpec();
  spec.method = "lcd";
  spec.bits = 2;
  spec.calibration_samples = 6;
  bool created;
  auto submitted = store_->Create(spec, absl::ToUnixMillis(absl::Now()), &created);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  scheduler_->Notify();
  const JobRecord j = WaitTerminal(submitted->id, absl::Seconds(300));
  ASSERT_EQ(j.state, JobState::kSucceeded) << j.reason;
  EXPECT_EQ(j.attempts, 2);
  std::ifstream log(dir_ / "logs" / (j.id + ".log"));
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("[lcd] resuming from " + (dir_ / "checkpoints" / j.id).string()));
  EXPECT_FALSE(fs::exists(dir_ / "checkpoints" / j.id)) << "the checkpoint outlived its job";
  EXPECT_TRUE(runtime::Artifact::Open((dir_ / "artifacts" / "tiny" / "2").string()).ok());
  ExpectNoPartials();
}

// Start-up removes checkpoints of jobs that have ended or that the store
// does not know, and keeps those of queued jobs.
// A checkpoint directory that cannot be created stops the scheduler at
// start with a reason, rather than failing every job later.
TEST_F(JobSchedulerTest, UnusableCheckpointDirIsAStartError) {
  std::ofstream(dir_ / "a-file") << "x";
  SchedulerOptions o = Options(LcdBinary());
  o.checkpoint_dir = (dir_ / "a-file" / "checkpoints").string();
  scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(), o);
  const absl::Status st = scheduler_->Start();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("cannot create checkpoint dir"));
}

TEST_F(JobSchedulerTest, StartDropsCheckpointsOfEndedJobs) {
  bool created;
  const std::string queued = store_->Create(testing::TinySpec(), 1, &created)->id;
  JobSpec other = testing::TinySpec();
  other.target_model = "other";
  const std::string ended = store_->Create(other, 1, &created)->id;
  ASSERT_TRUE(store_->Transition(ended, JobState::kQueued, JobState::kCancelled, "test", 2).ok());
  for (const std::string& d : {queued, ended, std::string("job-unknown")}) {
    fs::create_directories(dir_ / "checkpoints" / d);
    std::ofstream(dir_ / "checkpoints" / d / "checkpoint.json") << "{}";
  }
  SchedulerOptions o = Options(Script("sleep 60"));
  o.checkpoint_dir = (dir_ / "checkpoints").string();
  o.max_workers = 0;  // Nothing runs: only the start-up clean-up is observed.
  scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(), o);
  ASSERT_TRUE(scheduler_->Start().ok());
  EXPECT_TRUE(fs::exists(dir_ / "checkpoints" / queued));
  EXPECT_FALSE(fs::exists(dir_ / "checkpoints" / ended));
  EXPECT_FALSE(fs::exists(dir_ / "checkpoints" / "job-unknown"));
}

TEST_F(JobSchedulerTest, FailsWithTheCauseAfterMaxAttempts) {
  scheduler_ = std::make_unique<JobScheduler>(
      store_.get(), artifacts_.get(), Options(Script("echo 'lcd quantize: out of memory' >&2; exit 1")));
  ASSERT_TRUE(scheduler_->Start().ok());
  const JobRecord j = WaitTerminal(Submit());
  ASSERT_EQ(j.state, JobState::kFailed);
  EXPECT_EQ(j.attempts, 2);
  EXPECT_THAT(j.reason, HasSubstr("exit code 1"));
  EXPECT_THAT(j.reason, HasSubstr("out of memory"));
  EXPECT_TRUE(artifacts_->Versions("tiny")->empty());
  ExpectNoPartials();
}

TEST_F(JobSchedulerTest, CancelStopsARunningJob) {
  scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(),
                                              Options(Script("echo '{\"phase\": \"x\"}' >&3; sleep 60")));
  ASSERT_TRUE(scheduler_->Start().ok());
  const std::string id = Submit();
  // Wait until it runs (its first progress event arrived).
  for (int i = 0; i < 200 && store_->Get(id)->phase != "x"; ++i) absl::SleepFor(absl::Milliseconds(20));
  ASSERT_EQ(store_->Get(id)->state, JobState::kRunning);
  const absl::Time start = absl::Now();
  ASSERT_TRUE(store_->RequestCancel(id, 1).ok());
  scheduler_->Notify();
  const JobRecord j = WaitTerminal(id);
  EXPECT_EQ(j.state, JobState::kCancelled);
  EXPECT_EQ(j.reason, "cancelled by client");
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  ExpectNoPartials();
}

TEST_F(JobSchedulerTest, TimeLimitFailsTheAttempt) {
  SchedulerOptions o = Options(Script("sleep 60"));
  o.max_attempts = 1;
  scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(), o);
  ASSERT_TRUE(scheduler_->Start().ok());
  const JobRecord j = WaitTerminal(Submit(/*budget=*/0.3));
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_THAT(j.reason, HasSubstr("timed out"));
  ExpectNoPartials();
}

// A distilling job gets its time limit as --time-budget; the real quantizer,
// asked here for a million steps, measures its first steps, sees that the
// budget cannot be met and exits 3 at once with how many steps would fit;
// the job is FAILED after that one attempt (no retry: it would fail again),
// long before the limit.
TEST_F(JobSchedulerTest, ABudgetThatCannotBeMetFailsFastWithoutRetry) {
  const fs::path p = dir_ / "million_steps.sh";
  const fs::path args = dir_ / "args.txt";
  std::ofstream(p) << "#!/bin/sh\necho \"$@\" > " << args.string() << "\nexec " << LcdBinary()
                   << " \"$@\" --steps 1000000 --samples 8 --seq-len 32\n";
  fs::permissions(p, fs::perms::owner_all);
  scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(), Options(p.string()));
  ASSERT_TRUE(scheduler_->Start().ok());
  const absl::Time start = absl::Now();
  const JobRecord j = WaitTerminal(Submit(/*budget=*/120, "lcd"), absl::Seconds(100));
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_EQ(j.attempts, 1);
  EXPECT_THAT(j.reason, HasSubstr("exit code 3"));
  EXPECT_THAT(j.reason, HasSubstr("1000000 steps need about"));
  EXPECT_THAT(j.reason, HasSubstr("over the time budget of 120 s"));
  EXPECT_THAT(j.reason, HasSubstr("not retried"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(100));
  std::ifstream in(args);
  std::string line;
  std::getline(in, line);
  EXPECT_THAT(line, HasSubstr("--time-budget 120"));
  ExpectNoPartials();
}

// Exit code 2 (bad flags) is not retried either; exit 1 is
// (FailsWithTheCauseAfterMaxAttempts).
TEST_F(JobSchedulerTest, BadFlagsAreNotRetried) {
  scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(), Options(Script("exit 2")));
  ASSERT_TRUE(scheduler_->Start().ok());
  const JobRecord j = WaitTerminal(Submit());
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_EQ(j.attempts, 1);
  EXPECT_THAT(j.reason, HasSubstr("not retried"));
}

TEST_F(JobSchedulerTest, RecoversAJobAKilledServiceLeftRunning) {
  // As if lcd-jobs was kill -9ed mid-job: the row says RUNNING and a
  // partial directory is on disk.
  const JobSpec s = testing::TinySpec();
  bool created;
  const std::string id = store_->Create(s, 1, &created)->id;
  ASSERT_TRUE(store_->Transition(id, JobState::kQueued, JobState::kRunning, "", 2).ok());
  ASSERT_TRUE(artifacts_->PreparePartial("tiny", *store_->NextVersion("tiny")).ok());
  scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(), Options(LcdBinary()));
  ASSERT_TRUE(scheduler_->Start().ok());
  const JobRecord j = WaitTerminal(id);
  ASSERT_EQ(j.state, JobState::kSucceeded) << j.reason;
  EXPECT_EQ(j.attempts, 2);
  EXPECT_EQ(j.version, 2);
  bool saw_recovery = false;
  for (const JobEvent& e : Events(id)) saw_recovery |= e.message.find("lcd-jobs stopped during attempt 1") == 0;
  EXPECT_TRUE(saw_recovery);
  ExpectNoPartials();
}

}  // namespace
}  // namespace lcd::server::jobs
