// The durable record of quantization jobs: what lcd-jobs was asked to do,
// where each job stands, and the progress events its watchers replay.
//
// One small interface with one embedded implementation (SQLite, WAL, a single
// file). Everything the service needs is expressed as short transactions
// with compare-and-set state changes, so a PostgreSQL implementation can
// replace SQLite for scale-out (several lcd-jobs replicas sharing a store)
// without touching the service: a claim is "UPDATE ... WHERE state='QUEUED'",
// an idempotent submit is a unique index on the key, versions come from a
// per-model counter row updated in the same transaction.
//
// Thread safety: every method may be called from any thread.
#ifndef LCD_SERVER_JOBS_JOB_STORE_H_
#define LCD_SERVER_JOBS_JOB_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lcd::server::jobs {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };
const char* JobStateName(JobState s);  // "QUEUED", "RUNNING", ...
bool IsTerminal(JobState s);                // SUCCEEDED, FAILED, CANCELLED

// What a client asked for. Stored verbatim; validated by the service.
struct JobSpec {
  std::string source_model;     // path inside the configured model roots
  std::string target_model;     // name the artifact is published under
  std::string method;           // rtn, kmeans, lcd, ...
  int bits = 0;
  int group_size = 0;
  std::string calibration_file; // empty: teacher-generated
  int64_t calibration_samples = 0;
  double budget_seconds = 0;    // 0: no time limit beyond the service's
  std::string idempotency_key;  // empty: none
  // Two specs are the same request when every field matches.
  bool operator==(const JobSpec& o) const;
};

struct JobRecord {
  std::string id;  // "job-<n>", n from a store-wide counter
  JobSpec spec;
  JobState state = JobState::kQueued;
  std::string reason;        // why FAILED / CANCELLED
  int attempts = 0;          // worker starts so far
  int64_t created_ms = 0;    // unix milliseconds
  int64_t updated_ms = 0;
  std::string phase;         // last progress phase ("calibrate", "layer 3/30", ...)
  double progress = 0;       // 0..1
  int64_t version = 0;       // artifact version published (SUCCEEDED), else 0
  int64_t last_event = 0;    // sequence number of the newest event
  bool cancel_requested = false;
};

// One progress or state event; seq grows by one per job from 1.
struct JobEvent {
  int64_t seq = 0;
  int64_t time_ms = 0;
  JobState state = JobState::kQueued;
  std::string phase;
  double progress = 0;
  std::string message;
};

struct ListFilter {
  std::optional<JobState> state;
  std::string target_model;  // empty: any
  int page_size = 50;        // 1..1000
  std::string page_token;    // from the previous page; empty: first page
};

struct ListPage {
  std::vector<JobRecord> jobs;  // newest first
  std::string next_page_token;  // empty: no more
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Stores a new QUEUED job (with its first event), or, when the spec's
  // idempotency key was used before with the same spec, returns that job
  // (*created = false). AlreadyExists when the key was used with another spec.
  virtual absl::StatusOr<JobRecord> Create(const JobSpec& spec, int64_t now_ms, bool* created) = 0;
  virtual absl::StatusOr<JobRecord> Get(const std::string& id) = 0;
  virtual absl::StatusOr<ListPage> List(const ListFilter& filter) = 0;
  // Every job in `state`, oldest first (start-up recovery, the scheduler).
  virtual absl::StatusOr<std::vector<JobRecord>> ListByState(JobState state) = 0;

  // Compare-and-set: moves `id` from `from` to `to` and appends the event.
  // FailedPrecondition (nothing changed) when the job is not in `from`;
  // NotFound for an unknown id. Entering RUNNING counts an attempt.
  virtual absl::StatusOr<JobRecord> Transition(const std::string& id, JobState from, JobState to,
                                               const std::string& reason, int64_t now_ms) = 0;
  // Records progress of a RUNNING job (FailedPrecondition otherwise).
  virtual absl::StatusOr<JobEvent> Progress(const std::string& id, const std::string& phase,
                                            double progress, const std::string& message,
                                            int64_t now_ms) = 0;
  // Marks a cancel request (the scheduler stops the worker); the job's state
  // changes only through Transition. FailedPrecondition for a terminal job.
  virtual absl::Status RequestCancel(const std::string& id, int64_t now_ms) = 0;
  // A SUCCEEDED transition that also records the published version.
  virtual absl::StatusOr<JobRecord> Succeed(const std::string& id, int64_t version, int64_t now_ms) = 0;

  // Events of `id` with seq > after_seq, oldest first, at most `limit`.
  virtual absl::StatusOr<std::vector<JobEvent>> EventsSince(const std::string& id, int64_t after_seq,
                                                            int limit) = 0;

  // The next artifact version of `model`: 1, 2, 3, ... never reused, even
  // when a job that took a number fails.
  virtual absl::StatusOr<int64_t> NextVersion(const std::string& model) = 0;
};

// Opens (creating if needed) an SQLite job store at `path`, in WAL mode, and
// applies the schema migrations it has not seen (versioned in the
// schema_migrations table, each in its own transaction). FailedPrecondition
// for a database written by a newer lcd-jobs (unknown migration), DataLoss
// for a file that is not an SQLite database.
absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteJobStore(const std::string& path);

// The schema version OpenSqliteJobStore migrates to.
int SqliteJobStoreSchemaVersion();

}  // namespace lcd::server::jobs

#endif  // LCD_SERVER_JOBS_JOB_STORE_H_
