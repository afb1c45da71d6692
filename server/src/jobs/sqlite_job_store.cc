// JobStore on SQLite: one database file in WAL mode, one connection guarded
// by a mutex (jobs are few and slow; the store is never the bottleneck), each
// operation one short transaction. See job_store.h for the contract.
#include <sqlite3.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lcd/base/status_macros.h"
#include "lcd/server/jobs/job_store.h"

namespace lcd::server::jobs {
namespace {

// Schema migrations, applied in order; entry i takes the schema to version
// i + 1. Append only: a released migration is never edited.
const char* const kMigrations[] = {
    // 1: jobs, their events, per-model version counters.
    R"sql(
CREATE TABLE jobs(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  source_model TEXT NOT NULL, target_model TEXT NOT NULL, method TEXT NOT NULL,
  bits INTEGER NOT NULL, group_size INTEGER NOT NULL,
  calibration_file TEXT NOT NULL, calibration_samples INTEGER NOT NULL,
  budget_seconds REAL NOT NULL, idempotency_key TEXT,
  state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
  phase TEXT NOT NULL DEFAULT '', progress REAL NOT NULL DEFAULT 0,
  version INTEGER NOT NULL DEFAULT 0, last_event INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX jobs_idempotency ON jobs(idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_state ON jobs(state, seq);
CREATE INDEX jobs_model ON jobs(target_model, seq);
CREATE TABLE job_events(
  job_seq INTEGER NOT NULL REFERENCES jobs(seq), seq INTEGER NOT NULL, time_ms INTEGER NOT NULL,
  state TEXT NOT NULL, phase TEXT NOT NULL, progress REAL NOT NULL, message TEXT NOT NULL,
  PRIMARY KEY(job_seq, seq));
CREATE TABLE model_versions(model TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
)sql",
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

constexpr const char* kJobColumns =
    "seq, source_model, target_model, method, bits, group_size, calibration_file, calibration_samples, "
    "budget_seconds, COALESCE(idempotency_key, ''), state, reason, attempts, created_ms, updated_ms, phase, "
    "progress, version, last_event, cancel_requested";

absl::StatusOr<JobState> ParseState(const std::string& s) {
  for (JobState st : {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                      JobState::kCancelled}) {
    if (s == JobStateName(st)) return st;
  }
  return absl::DataLossError(absl::StrCat("job store holds unknown state '", s, "'"));
}

// One prepared statement; finalized on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& Bind(const std::string& v) {
    Check(sqlite3_bind_text(stmt_, ++arg_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& Bind(int64_t v) {
    Check(sqlite3_bind_int64(stmt_, ++arg_, v));
    return *this;
  }
  Stmt& Bind(double v) {
    Check(sqlite3_bind_double(stmt_, ++arg_, v));
    return *this;
  }
  Stmt& BindNull() {
    Check(sqlite3_bind_null(stmt_, ++arg_));
    return *this;
  }
  // True while a row is available; error status otherwise.
  absl::StatusOr<bool> Step() {
    if (rc_ != SQLITE_OK) return Error("prepare");
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    rc_ = rc;
    return Error("step");
  }
  absl::Status Run() {
    LCD_ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return absl::OkStatus();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Double(int col) const { return sqlite3_column_double(stmt_, col); }
  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(stmt_, col)) : std::string();
  }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK && rc_ == SQLITE_OK) rc_ = rc;
  }
  absl::Status Error(const char* what) const {
    return absl::InternalError(absl::StrCat("job store ", what, ": ", sqlite3_errmsg(db_)));
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
  int arg_ = 0;
};

JobRecord ReadJob(const Stmt& s, absl::Status* status) {
  JobRecord j;
  j.id = absl::StrCat("job-", s.Int(0));
  j.spec.source_model = s.Text(1);
  j.spec.target_model = s.Text(2);
  j.spec.method = s.Text(3);
  j.spec.bits = static_cast<int>(s.Int(4));
  j.spec.group_size = static_cast<int>(s.Int(5));
  j.spec.calibration_file = s.Text(6);
  j.spec.calibration_samples = s.Int(7);
  j.spec.budget_seconds = s.Double(8);
  j.spec.idempotency_key = s.Text(9);
  absl::StatusOr<JobState> st = ParseState(s.Text(10));
  if (st.ok()) {
    j.state = *st;
  } else {
    *status = st.status();
  }
  j.reason = s.Text(11);
  j.attempts = static_cast<int>(s.Int(12));
  j.created_ms = s.Int(13);
  j.updated_ms = s.Int(14);
  j.phase = s.Text(15);
  j.progress = s.Double(16);
  j.version = s.Int(17);
  j.last_event = s.Int(18);
  j.cancel_requested = s.Int(19) != 0;
  return j;
}

// "job-17" -> 17; NotFound for anything else (ids come from clients).
absl::StatusOr<int64_t> JobSeq(const std::string& id) {
  int64_t seq = 0;
  if (id.rfind("job-", 0) != 0 || !absl::SimpleAtoi(id.substr(4), &seq) || seq <= 0) {
    return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  }
  return seq;
}

class SqliteJobStore final : public JobStore {
 public:
  explicit SqliteJobStore(sqlite3* db) : db_(db) {}
  ~SqliteJobStore() override { sqlite3_close_v2(db_); }

  absl::Status Migrate() {
    absl::MutexLock lock(&mu_);
    LCD_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
    LCD_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
    LCD_RETURN_IF_ERROR(Exec("PRAGMA foreign_keys=ON"));
    LCD_RETURN_IF_ERROR(
        Exec("CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, applied_ms INTEGER)"));
    Stmt q(db_, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    LCD_ASSIGN_OR_RETURN(bool row, q.Step());
    const int64_t have = row ? q.Int(0) : 0;
    if (have > kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat("job store schema version ", have,
                                                        " is newer than this lcd-jobs knows (", kSchemaVersion, ")"));
    }
    for (int64_t v = have + 1; v <= kSchemaVersion; ++v) {
      LCD_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
      absl::Status st = Exec(kMigrations[v - 1]);
      if (st.ok()) {
        Stmt ins(db_, "INSERT INTO schema_migrations(version, applied_ms) VALUES (?, strftime('%s','now')*1000)");
        st = ins.Bind(v).Run();
      }
      if (!st.ok()) {
        Exec("ROLLBACK").IgnoreError();
        return absl::Status(st.code(), absl::StrCat("migration ", v, ": ", st.message()));
      }
      LCD_RETURN_IF_ERROR(Exec("COMMIT"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<JobRecord> Create(const JobSpec& spec, int64_t now_ms, bool* created) override {
    absl::MutexLock lock(&mu_);
    return InTransaction<JobRecord>([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<JobRecord> {
      if (!spec.idempotency_key.empty()) {
        Stmt q(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE idempotency_key = ?").c_str());
        q.Bind(spec.idempotency_key);
        LCD_ASSIGN_OR_RETURN(bool row, q.Step());
        if (row) {
          absl::Status st;
          JobRecord j = ReadJob(q, &st);
          LCD_RETURN_IF_ERROR(st);
          if (!(j.spec == spec)) {
            return absl::AlreadyExistsError(absl::StrCat("idempotency key '", spec.idempotency_key,
                                                         "' was used for another request (", j.id, ")"));
          }
          *created = false;
          return j;
        }
      }
      Stmt ins(db_,
               "INSERT INTO jobs(source_model, target_model, method, bits, group_size, calibration_file, "
               "calibration_samples, budget_seconds, idempotency_key, state, created_ms, updated_ms) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'QUEUED', ?, ?)");
      ins.Bind(spec.source_model).Bind(spec.target_model).Bind(spec.method).Bind(int64_t{spec.bits});
      ins.Bind(int64_t{spec.group_size}).Bind(spec.calibration_file).Bind(spec.calibration_samples);
      ins.Bind(spec.budget_seconds);
      if (spec.idempotency_key.empty()) {
        ins.BindNull();
      } else {
        ins.Bind(spec.idempotency_key);
      }
      ins.Bind(now_ms).Bind(now_ms);
      LCD_RETURN_IF_ERROR(ins.Run());
      const int64_t seq = sqlite3_last_insert_rowid(db_);
      LCD_RETURN_IF_ERROR(AppendEventLocked(seq, JobState::kQueued, "", 0, "queued", now_ms).status());
      *created = true;
      return GetLocked(seq);
    });
  }

  absl::StatusOr<JobRecord> Get(const std::string& id) override {
    LCD_ASSIGN_OR_RETURN(int64_t seq, JobSeq(id));
    absl::MutexLock lock(&mu_);
    return GetLocked(seq);
  }

  absl::StatusOr<ListPage> List(const ListFilter& f) override {
    if (f.page_size < 1 || f.page_size > 1000) {
      return absl::InvalidArgumentError(absl::StrCat("page_size must be in [1, 1000], got ", f.page_size));
    }
    int64_t before = INT64_MAX;
    if (!f.page_token.empty() && (!absl::SimpleAtoi(f.page_token, &before) || before <= 0)) {
      return absl::InvalidArgumentError(absl::StrCat("bad page_token '", f.page_token, "'"));
    }
    absl::MutexLock lock(&mu_);
    Stmt q(db_, absl::StrCat("SELECT ", kJobColumns,
                             " FROM jobs WHERE seq < ? AND (? = '' OR state = ?) AND (? = '' OR target_model = ?)"
                             " ORDER BY seq DESC LIMIT ?")
                    .c_str());
    const std::string state = f.state ? std::string(JobStateName(*f.state)) : std::string();
    q.Bind(before).Bind(state).Bind(state).Bind(f.target_model).Bind(f.target_model);
    q.Bind(int64_t{f.page_size} + 1);
    ListPage page;
    LCD_ASSIGN_OR_RETURN(std::vector<JobRecord> rows, ReadJobs(q));
    if (static_cast<int>(rows.size()) > f.page_size) {
      rows.resize(f.page_size);
      LCD_ASSIGN_OR_RETURN(int64_t last, JobSeq(rows.back().id));
      page.next_page_token = absl::StrCat(last);
    }
    page.jobs = std::move(rows);
    return page;
  }

  absl::StatusOr<std::vector<JobRecord>> ListByState(JobState state) override {
    absl::MutexLock lock(&mu_);
    Stmt q(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE state = ? ORDER BY seq").c_str());
    q.Bind(std::string(JobStateName(state)));
    return ReadJobs(q);
  }

  absl::StatusOr<JobRecord> Transition(const std::string& id, JobState from, JobState to,
                                       const std::string& reason, int64_t now_ms) override {
    LCD_ASSIGN_OR_RETURN(int64_t seq, JobSeq(id));
    absl::MutexLock lock(&mu_);
    return InTransaction<JobRecord>([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<JobRecord> {
      return TransitionLocked(seq, from, to, reason, /*version=*/0, now_ms);
    });
  }

  absl::StatusOr<JobRecord> Succeed(const std::string& id, int64_t version, int64_t now_ms) override {
    LCD_ASSIGN_OR_RETURN(int64_t seq, JobSeq(id));
    absl::MutexLock lock(&mu_);
    return InTransaction<JobRecord>([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<JobRecord> {
      return TransitionLocked(seq, JobState::kRunning, JobState::kSucceeded, "", version, now_ms);
    });
  }

  absl::StatusOr<JobEvent> Progress(const std::string& id, const std::string& phase, double progress,
                                    const std::string& message, int64_t now_ms) override {
    LCD_ASSIGN_OR_RETURN(int64_t seq, JobSeq(id));
    absl::MutexLock lock(&mu_);
    return InTransaction<JobEvent>([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<JobEvent> {
      LCD_ASSIGN_OR_RETURN(JobRecord j, GetLocked(seq));
      if (j.state != JobState::kRunning) {
        return absl::FailedPreconditionError(
            absl::StrCat(id, " is ", JobStateName(j.state), ", not RUNNING: progress not recorded"));
      }
      Stmt up(db_, "UPDATE jobs SET phase = ?, progress = ?, updated_ms = ? WHERE seq = ?");
      LCD_RETURN_IF_ERROR(up.Bind(phase).Bind(progress).Bind(now_ms).Bind(seq).Run());
      return AppendEventLocked(seq, JobState::kRunning, phase, progress, message, now_ms);
    });
  }

  absl::Status RequestCancel(const std::string& id, int64_t now_ms) override {
    LCD_ASSIGN_OR_RETURN(int64_t seq, JobSeq(id));
    absl::MutexLock lock(&mu_);
    return InTransaction<bool>([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<bool> {
             LCD_ASSIGN_OR_RETURN(JobRecord j, GetLocked(seq));
             if (IsTerminal(j.state)) {
               return absl::FailedPreconditionError(
                   absl::StrCat(id, " already ended (", JobStateName(j.state), ")"));
             }
             Stmt up(db_, "UPDATE jobs SET cancel_requested = 1, updated_ms = ? WHERE seq = ?");
             LCD_RETURN_IF_ERROR(up.Bind(now_ms).Bind(seq).Run());
             return true;
           })
        .status();
  }

  absl::StatusOr<std::vector<JobEvent>> EventsSince(const std::string& id, int64_t after_seq,
                                                    int limit) override {
    LCD_ASSIGN_OR_RETURN(int64_t seq, JobSeq(id));
    absl::MutexLock lock(&mu_);
    LCD_RETURN_IF_ERROR(GetLocked(seq).status());
    Stmt q(db_,
           "SELECT seq, time_ms, state, phase, progress, message FROM job_events WHERE job_seq = ? AND seq > ? "
           "ORDER BY seq LIMIT ?");
    q.Bind(seq).Bind(after_seq).Bind(int64_t{limit});
    std::vector<JobEvent> events;
    for (;;) {
      LCD_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      JobEvent e;
      e.seq = q.Int(0);
      e.time_ms = q.Int(1);
      LCD_ASSIGN_OR_RETURN(e.state, ParseState(q.Text(2)));
      e.phase = q.Text(3);
      e.progress = q.Double(4);
      e.message = q.Text(5);
      events.push_back(std::move(e));
    }
    return events;
  }

  absl::StatusOr<int64_t> NextVersion(const std::string& model) override {
    absl::MutexLock lock(&mu_);
    return InTransaction<int64_t>([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<int64_t> {
      Stmt up(db_,
              "INSERT INTO model_versions(model, last_version) VALUES (?, 1) "
              "ON CONFLICT(model) DO UPDATE SET last_version = last_version + 1");
      LCD_RETURN_IF_ERROR(up.Bind(model).Run());
      Stmt q(db_, "SELECT last_version FROM model_versions WHERE model = ?");
      q.Bind(model);
      LCD_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return absl::InternalError("version counter vanished");
      return q.Int(0);
    });
  }

 private:
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      absl::Status st = absl::InternalError(absl::StrCat("job store: ", err ? err : sqlite3_errmsg(db_)));
      sqlite3_free(err);
      return st;
    }
    return absl::OkStatus();
  }

  // Runs fn inside BEGIN IMMEDIATE .. COMMIT; rolls back when it fails.
  template <typename T, typename Fn>
  absl::StatusOr<T> InTransaction(Fn fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LCD_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    absl::StatusOr<T> r = fn();
    if (!r.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return r;
    }
    if (absl::Status st = Exec("COMMIT"); !st.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return st;
    }
    return r;
  }

  absl::StatusOr<std::vector<JobRecord>> ReadJobs(Stmt& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<JobRecord> out;
    for (;;) {
      LCD_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      absl::Status st;
      out.push_back(ReadJob(q, &st));
      LCD_RETURN_IF_ERROR(st);
    }
    return out;
  }

  absl::StatusOr<JobRecord> GetLocked(int64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Stmt q(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE seq = ?").c_str());
    q.Bind(seq);
    LCD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no job 'job-", seq, "'"));
    absl::Status st;
    JobRecord j = ReadJob(q, &st);
    LCD_RETURN_IF_ERROR(st);
    return j;
  }

  absl::StatusOr<JobEvent> AppendEventLocked(int64_t seq, JobState state, const std::string& phase,
                                             double progress, const std::string& message, int64_t now_ms)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Stmt up(db_, "UPDATE jobs SET last_event = last_event + 1 WHERE seq = ?");
    LCD_RETURN_IF_ERROR(up.Bind(seq).Run());
    Stmt q(db_, "SELECT last_event FROM jobs WHERE seq = ?");
    q.Bind(seq);
    LCD_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no job 'job-", seq, "'"));
    JobEvent e;
    e.seq = q.Int(0);
    e.time_ms = now_ms;
    e.state = state;
    e.phase = phase;
    e.progress = progress;
    e.message = message;
    Stmt ins(db_,
             "INSERT INTO job_events(job_seq, seq, time_ms, state, phase, progress, message) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)");
    ins.Bind(seq).Bind(e.seq).Bind(now_ms).Bind(std::string(JobStateName(state))).Bind(phase).Bind(progress);
    LCD_RETURN_IF_ERROR(ins.Bind(message).Run());
    return e;
  }

  absl::StatusOr<JobRecord> TransitionLocked(int64_t seq, JobState from, JobState to, const std::string& reason,
                                             int64_t version, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Stmt up(db_,
            "UPDATE jobs SET state = ?, reason = ?, updated_ms = ?, version = ?, "
            "attempts = attempts + (CASE WHEN ? = 'RUNNING' THEN 1 ELSE 0 END), "
            "progress = (CASE WHEN ? = 'SUCCEEDED' THEN 1.0 ELSE progress END) "
            "WHERE seq = ? AND state = ?");
    const std::string to_name(JobStateName(to));
    up.Bind(to_name).Bind(reason).Bind(now_ms).Bind(version).Bind(to_name).Bind(to_name).Bind(seq);
    LCD_RETURN_IF_ERROR(up.Bind(std::string(JobStateName(from))).Run());
    if (sqlite3_changes(db_) != 1) {
      LCD_ASSIGN_OR_RETURN(JobRecord j, GetLocked(seq));  // NotFound for unknown ids
      return absl::FailedPreconditionError(absl::StrCat(j.id, " is ", JobStateName(j.state), ", not ",
                                                        JobStateName(from), ": cannot move it to ", to_name));
    }
    LCD_ASSIGN_OR_RETURN(JobRecord j, GetLocked(seq));
    LCD_RETURN_IF_ERROR(
        AppendEventLocked(seq, to, j.phase, j.progress, reason.empty() ? to_name : reason, now_ms).status());
    return GetLocked(seq);
  }

  absl::Mutex mu_;
  sqlite3* const db_;
};

}  // namespace

const char* JobStateName(JobState s) {
  switch (s) {
    case JobState::kQueued:
      return "QUEUED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
  }
  return "UNKNOWN";
}

bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

bool JobSpec::operator==(const JobSpec& o) const {
  return source_model == o.source_model && target_model == o.target_model && method == o.method &&
         bits == o.bits && group_size == o.group_size && calibration_file == o.calibration_file &&
         calibration_samples == o.calibration_samples && budget_seconds == o.budget_seconds &&
         idempotency_key == o.idempotency_key;
}

int SqliteJobStoreSchemaVersion() { return kSchemaVersion; }

absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteJobStore(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    absl::Status st = absl::FailedPreconditionError(
        absl::StrCat("cannot open job store ", path, ": ", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close_v2(db);
    return st;
  }
  sqlite3_busy_timeout(db, 5000);
  auto store = std::make_unique<SqliteJobStore>(db);
  if (absl::Status st = store->Migrate(); !st.ok()) {
    if (absl::StrContains(st.message(), "not a database") || absl::StrContains(st.message(), "malformed")) {
      return absl::DataLossError(absl::StrCat("job store ", path, " is not a usable SQLite database: ", st.message()));
    }
    return absl::Status(st.code(), absl::StrCat("job store ", path, ": ", st.message()));
  }
  return std::unique_ptr<JobStore>(std::move(store));
}

}  // namespace lcd::server::jobs
