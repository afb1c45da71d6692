// The SQLite job store on real database files in a temporary directory:
// idempotent submits, compare-and-set transitions, events in order and
// resumable, pagination, monotonic versions, durability across reopening
// (the kill -9 case: a second process opening the same file), schema
// migrations refusing a newer database, and a file that is not a database.
#include "lcd/server/jobs/job_store.h"

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobs_test_util.h"

namespace lcd::server::jobs {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("job_store");
    path_ = (dir_ / "jobs.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<JobStore> Open() {
    auto s = OpenSqliteJobStore(path_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  static JobSpec Spec(const std::string& key = "") {
    JobSpec s;
    s.source_model = "smollm2-135m";
    s.target_model = "smol";
    s.method = "kmeans";
    s.bits = 2;
    s.group_size = 128;
    s.calibration_samples = 64;
    s.budget_seconds = 3600;
    s.idempotency_key = key;
    return s;
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(JobStoreTest, CreateGetAndIdempotentSubmit) {
  auto store = Open();
  bool created = false;
  auto a = store->Create(Spec("key-1"), 1000, &created);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(created);
  EXPECT_EQ(a->state, JobState::kQueued);
  EXPECT_EQ(a->created_ms, 1000);
  EXPECT_EQ(a->last_event, 1);
  // The same request again: the same job, nothing new stored.
  auto again = store->Create(Spec("key-1"), 2000, &created);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(created);
  EXPECT_EQ(again->id, a->id);
  // The key with a different request: refused.
  JobSpec other = Spec("key-1");
  other.bits = 3;
  auto clash = store->Create(other, 3000, &created);
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(clash.status().message()), HasSubstr(a->id));
  // Without a key every submit is a new job.
  auto b = store->Create(Spec(), 4000, &created);
  auto c = store->Create(Spec(), 4000, &created);
  ASSERT_TRUE(b.ok() && c.ok());
  EXPECT_NE(b->id, c->id);
  auto got = store->Get(a->id);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->spec == Spec("key-1"));
  EXPECT_EQ(store->Get("job-999").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Get("'; DROP TABLE jobs; --").status().code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(store->ListByState(JobState::kQueued)->size(), 3u);
}

TEST_F(JobStoreTest, TransitionsAreCompareAndSet) {
  auto store = Open();
  bool created;
  const std::string id = store->Create(Spec(), 1, &created)->id;
  auto run = store->Transition(id, JobState::kQueued, JobState::kRunning, "", 2);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->attempts, 1);
  // A second claimer loses: the job is no longer QUEUED.
  auto lost = store->Transition(id, JobState::kQueued, JobState::kRunning, "", 3);
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(lost.status().message()), HasSubstr("is RUNNING, not QUEUED"));
  // Worker died: back to QUEUED for a retry, then running again (attempt 2).
  ASSERT_TRUE(store->Transition(id, JobState::kRunning, JobState::kQueued, "worker exited with signal 9", 4).ok());
  ASSERT_EQ(store->Transition(id, JobState::kQueued, JobState::kRunning, "", 5)->attempts, 2);
  ASSERT_TRUE(store->Progress(id, "layer 3/30", 0.1, "loss 2.5", 6).ok());
  auto done = store->Succeed(id, 7, 7);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state, JobState::kSucceeded);
  EXPECT_EQ(done->version, 7);
  EXPECT_EQ(done->progress, 1.0);
  // Terminal: no way out, no progress, no cancel.
  EXPECT_EQ(store->Transition(id, JobState::kRunning, JobState::kFailed, "x", 8).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Progress(id, "p", 0.5, "", 9).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->RequestCancel(id, 9).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobStoreTest, EventsAreOrderedAndResumable) {
  auto store = Open();
  bool created;
  const std::string id = store->Create(Spec(), 1, &created)->id;
  ASSERT_TRUE(store->Transition(id, JobState::kQueued, JobState::kRunning, "", 2).ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(store->Progress(id, "step", i / 10.0, std::to_string(i), 3 + i).ok());
  ASSERT_TRUE(store->RequestCancel(id, 20).ok());
  EXPECT_TRUE(store->Get(id)->cancel_requested);
  ASSERT_TRUE(store->Transition(id, JobState::kRunning, JobState::kCancelled, "cancelled by client", 21).ok());
  auto all = store->EventsSince(id, 0, 1000);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 13u);  // queued, running, 10 progress, cancelled
  for (size_t i = 0; i < all->size(); ++i) EXPECT_EQ((*all)[i].seq, static_cast<int64_t>(i) + 1);
  EXPECT_EQ(all->front().state, JobState::kQueued);
  EXPECT_EQ(all->back().state, JobState::kCancelled);
  EXPECT_EQ(all->back().message, "cancelled by client");
  // A watcher that saw up to seq 5 resumes from 6; limits apply.
  auto rest = store->EventsSince(id, 5, 3);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->size(), 3u);
  EXPECT_EQ((*rest)[0].seq, 6);
  EXPECT_EQ((*rest)[0].message, "3");
  EXPECT_EQ(store->EventsSince("job-77", 0, 10).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobStoreTest, ListFiltersAndPaginates) {
  auto store = Open();
  bool created;
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    JobSpec s = Spec();
    s.target_model = i % 2 ? "odd" : "even";
    ids.push_back(store->Create(s, i, &created)->id);
  }
  ASSERT_TRUE(store->Transition(ids[2], JobState::kQueued, JobState::kRunning, "", 10).ok());
  std::vector<std::string> seen;
  ListFilter f;
  f.page_size = 3;
  for (int page = 0; page < 10; ++page) {
    auto p = store->List(f);
    ASSERT_TRUE(p.ok()) << p.status();
    for (const JobRecord& j : p->jobs) seen.push_back(j.id);
    if (p->next_page_token.empty()) break;
    f.page_token = p->next_page_token;
  }
  ASSERT_EQ(seen.size(), 7u);
  EXPECT_EQ(seen.front(), ids.back());  // newest first
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 7u);
  ListFilter odd;
  odd.target_model = "odd";
  EXPECT_EQ(store->List(odd)->jobs.size(), 3u);
  ListFilter running;
  running.state = JobState::kRunning;
  auto r = store->List(running);
  ASSERT_EQ(r->jobs.size(), 1u);
  EXPECT_EQ(r->jobs[0].id, ids[2]);
  ListFilter bad;
  bad.page_token = "abc";
  EXPECT_EQ(store->List(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.page_token = "";
  bad.page_size = 0;
  EXPECT_EQ(store->List(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobStoreTest, VersionsAreMonotonicPerModelAndConcurrent) {
  auto store = Open();
  std::vector<std::thread> threads;
  std::vector<std::vector<int64_t>> got(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) got[t].push_back(*store->NextVersion("m"));
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> all;
  for (const auto& v : got) {
    for (size_t i = 1; i < v.size(); ++i) EXPECT_LT(v[i - 1], v[i]);
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(all.size(), 100u);
  EXPECT_EQ(*all.begin(), 1);
  EXPECT_EQ(*all.rbegin(), 100);
  EXPECT_EQ(*store->NextVersion("other"), 1);
}

TEST_F(JobStoreTest, StateSurvivesReopenFromAnotherProcess) {
  std::string id;
  {
    auto store = Open();
    bool created;
    id = store->Create(Spec("k"), 1, &created)->id;
    ASSERT_TRUE(store->Transition(id, JobState::kQueued, JobState::kRunning, "", 2).ok());
    ASSERT_TRUE(store->Progress(id, "layer 1/2", 0.5, "", 3).ok());
    ASSERT_EQ(*store->NextVersion("smol"), 1);
  }
  // A child process (as after kill -9 and restart) sees every committed row.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto s = OpenSqliteJobStore(path_);
    if (!s.ok()) _exit(2);
    auto j = (*s)->Get(id);
    if (!j.ok() || j->state != JobState::kRunning || j->phase != "layer 1/2") _exit(3);
    if ((*s)->ListByState(JobState::kRunning)->size() != 1) _exit(4);
    if (*(*s)->NextVersion("smol") != 2) _exit(5);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto store = Open();
  EXPECT_EQ(*store->NextVersion("smol"), 3);  // never reused
}

TEST_F(JobStoreTest, RefusesNewerSchemaAndNonDatabases) {
  ASSERT_NE(Open(), nullptr);
  // A newer lcd-jobs migrated this file further: this one must not touch it.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  const std::string future =
      "INSERT INTO schema_migrations(version, applied_ms) VALUES (" +
      std::to_string(SqliteJobStoreSchemaVersion() + 1) + ", 0)";
  ASSERT_EQ(sqlite3_exec(db, future.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto newer = OpenSqliteJobStore(path_);
  ASSERT_FALSE(newer.ok());
  EXPECT_EQ(newer.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(newer.status().message()), HasSubstr("newer"));

  std::ofstream(dir_ / "garbage.db") << std::string(4096, 'x');
  auto garbage = OpenSqliteJobStore((dir_ / "garbage.db").string());
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(garbage.status().message()), HasSubstr("garbage.db"));
  auto nodir = OpenSqliteJobStore((dir_ / "missing" / "x.db").string());
  EXPECT_FALSE(nodir.ok());
  EXPECT_THAT(std::string(nodir.status().message()), HasSubstr("x.db"));
}

}  // namespace
}  // namespace lcd::server::jobs
