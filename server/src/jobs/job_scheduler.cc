#include "lcd/server/jobs/job_scheduler.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lcd/base/logging.h"
#include "lcd/quantizer/methods.h"

namespace lcd::server::jobs {
namespace {

std::string LastLine(const std::string& text) {
  const size_t nl = text.rfind('\n');
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

}  // namespace

JobScheduler::JobScheduler(JobStore* store, const ArtifactStore* artifacts, SchedulerOptions options)
    : store_(store), artifacts_(artifacts), options_(std::move(options)) {}

JobScheduler::~JobScheduler() { Shutdown(); }

int64_t JobScheduler::NowMs() { return absl::ToUnixMillis(absl::Now()); }

absl::Status JobScheduler::Start() {
  std::error_code ec;
  std::filesystem::create_directories(options_.log_dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot create log dir ", options_.log_dir, ": ", ec.message()));
  absl::StatusOr<int> cleaned = artifacts_->CleanPartials();
  if (!cleaned.ok()) return cleaned.status();
  if (*cleaned > 0) LCD_LOG(INFO) << "jobs: removed " << *cleaned << " partial artifact directories";
  absl::StatusOr<std::vector<JobRecord>> left = store_->ListByState(JobState::kRunning);
  if (!left.ok()) return left.status();
  for (const JobRecord& j : *left) {
    const bool spent = j.attempts >= options_.max_attempts;
    const std::string reason =
        absl::StrCat("lcd-jobs stopped during attempt ", j.attempts,
                     spent ? "; no attempts left" : "; queued again (resumes from its last checkpoint, if any)");
    Changed(store_->Transition(j.id, JobState::kRunning, spent ? JobState::kFailed : JobState::kQueued, reason,
                               NowMs()));
    LCD_LOG(WARNING) << "jobs: " << j.id << ": " << reason;
  }
  if (!options_.checkpoint_dir.empty()) {
    std::filesystem::create_directories(options_.checkpoint_dir, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create checkpoint dir ", options_.checkpoint_dir, ": ", ec.message()));
    }
    // Checkpoints of jobs that ended (or are unknown) are of no further use.
    for (const std::filesystem::directory_entry& e : std::filesystem::directory_iterator(options_.checkpoint_dir, ec)) {
      absl::StatusOr<JobRecord> j = store_->Get(e.path().filename().string());
      if (!j.ok() || IsTerminal(j->state)) DropCheckpoint(e.path().filename().string());
    }
  }
  absl::MutexLock lock(&mu_);
  if (started_) return absl::FailedPreconditionError("scheduler already started");
  started_ = true;
  loop_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void JobScheduler::Shutdown() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& [id, r] : running_) {
      if (r.worker != nullptr) r.worker->Cancel();
    }
    wake_.SignalAll();
    events_.SignalAll();
  }
  if (loop_.joinable()) loop_.join();
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, r] : running_) {
      if (r.thread.joinable()) threads.push_back(std::move(r.thread));
    }
  }
  for (std::thread& t : threads) t.join();
  absl::MutexLock lock(&mu_);
  running_.clear();
}

void JobScheduler::Notify() {
  absl::MutexLock lock(&mu_);
  wake_.Signal();
}

void JobScheduler::WaitForEvent(const std::string& id, int64_t after_seq, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (!stopping_ && absl::Now() < deadline) {
    absl::StatusOr<JobRecord> j = store_->Get(id);
    if (!j.ok() || j->last_event > after_seq) return;
    events_.WaitWithDeadline(&mu_, std::min(deadline, absl::Now() + absl::Seconds(1)));
  }
}

void JobScheduler::Changed(const absl::StatusOr<JobRecord>& job) {
  if (!job.ok()) {
    LCD_LOG(ERROR) << "jobs: store update failed: " << job.status();
    return;
  }
  if (options_.on_change) options_.on_change(*job);
  SignalEvent();
}

void JobScheduler::SignalEvent() {
  absl::MutexLock lock(&mu_);
  events_.SignalAll();
}

void JobScheduler::Loop() {
  for (;;) {
    ScheduleOnce();
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    wake_.WaitWithTimeout(&mu_, options_.poll_interval);
    if (stopping_) return;
  }
}

void JobScheduler::ScheduleOnce() {
  // Reap finished attempts; pass cancel requests on to running workers.
  std::vector<std::thread> finished;
  std::vector<std::pair<std::string, WorkerProcess*>> live;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = running_.begin(); it != running_.end();) {
      if (it->second.done) {
        finished.push_back(std::move(it->second.thread));
        it = running_.erase(it);
      } else {
        if (it->second.worker != nullptr) live.emplace_back(it->first, it->second.worker.get());
        ++it;
      }
    }
  }
  for (std::thread& t : finished) t.join();
  for (const auto& [id, worker] : live) {
    absl::StatusOr<JobRecord> j = store_->Get(id);
    if (j.ok() && j->cancel_requested) worker->Cancel();
  }

  absl::StatusOr<std::vector<JobRecord>> queued = store_->ListByState(JobState::kQueued);
  if (!queued.ok()) {
    LCD_LOG(ERROR) << "jobs: cannot list queued jobs: " << queued.status();
    return;
  }
  for (const JobRecord& j : *queued) {
    if (j.cancel_requested) {
      DropCheckpoint(j.id);  // Before the state says the job ended.
      Changed(store_->Transition(j.id, JobState::kQueued, JobState::kCancelled, "cancelled by client", NowMs()));
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || static_cast<int>(running_.size()) >= options_.max_workers) return;
      auto nb = not_before_.find(j.id);
      if (nb != not_before_.end() && absl::Now() < nb->second) continue;
    }
    absl::StatusOr<JobRecord> claimed = store_->Transition(j.id, JobState::kQueued, JobState::kRunning, "", NowMs());
    if (!claimed.ok()) continue;  // taken or cancelled meanwhile
    Changed(claimed);
    absl::MutexLock lock(&mu_);
    not_before_.erase(j.id);
    Running& r = running_[j.id];
    r.thread = std::thread([this, job = *claimed] { RunJob(job); });
  }
}

void JobScheduler::RunJob(JobRecord job) {
  const JobSpec& spec = job.spec;
  int64_t version = 0;
  WorkerExit exit;
  absl::Status setup = [&]() -> absl::Status {
    absl::StatusOr<std::string> source = options_.resolve_model(spec.source_model);
    if (!source.ok()) return source.status();
    std::string calib;
    if (!spec.calibration_file.empty()) {
      absl::StatusOr<std::string> c = options_.resolve_data(spec.calibration_file);
      if (!c.ok()) return c.status();
      calib = *c;
    }
    absl::StatusOr<int64_t> v = store_->NextVersion(spec.target_model);
    if (!v.ok()) return v.status();
    version = *v;
    absl::StatusOr<std::string> partial = artifacts_->PreparePartial(spec.target_model, version);
    if (!partial.ok()) return partial.status();
    WorkerSpec ws;
    ws.argv = {options_.worker_binary, "quantize", "--model", *source, "--out", *partial, "--method", spec.method,
               "--bits", std::to_string(spec.bits), "--group-size", std::to_string(spec.group_size),
               "--progress-fd", "3"};
    if (!calib.empty()) {
      ws.argv.push_back("--calib");
      ws.argv.push_back(calib);
    } else if (spec.calibration_samples > 0) {
      ws.argv.push_back("--samples");
      ws.argv.push_back(std::to_string(spec.calibration_samples));
    }
    const quantizer::MethodInfo* method = quantizer::FindMethod(spec.method);
    if (!options_.checkpoint_dir.empty() && method != nullptr && method->distills) {
      ws.argv.push_back("--resume");
      ws.argv.push_back(CheckpointDir(job.id));
    }
    ws.time_limit = spec.budget_seconds > 0 ? absl::Seconds(spec.budget_seconds) : options_.default_time_limit;
    if (method != nullptr && method->distills && ws.time_limit != absl::InfiniteDuration()) {
      // The worker checks its projected time against the limit after its
      // first steps and fails at once (exit 3) when it cannot make it.
      ws.argv.push_back("--time-budget");
      ws.argv.push_back(absl::StrCat(absl::ToDoubleSeconds(ws.time_limit)));
    }
    if (options_.worker_threads > 0) {
      ws.argv.push_back("--threads");
      ws.argv.push_back(std::to_string(options_.worker_threads));
    }
    ws.log_path = absl::StrCat(options_.log_dir, "/", job.id, ".log");
    absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
        WorkerProcess::Start(ws, [this, id = job.id](const WorkerProgress& p) {
          absl::StatusOr<JobEvent> e = store_->Progress(id, p.phase, p.progress, p.message, NowMs());
          if (e.ok()) {
            SignalEvent();
          } else {
            LCD_LOG(WARNING) << "jobs: " << id << ": progress not recorded: " << e.status();
          }
        });
    if (!worker.ok()) return worker.status();
    WorkerProcess* w = worker->get();
    {
      absl::MutexLock lock(&mu_);
      running_[job.id].worker = std::move(*worker);
      if (stopping_) w->Cancel();
    }
    LCD_LOG(INFO) << "jobs: " << job.id << " attempt " << job.attempts << ": worker pid " << w->pid() << " -> "
                  << spec.target_model << " version " << version;
    exit = w->Wait();
    return absl::OkStatus();
  }();
  Finish(job, version, exit, setup);
  absl::MutexLock lock(&mu_);
  running_[job.id].done = true;
  wake_.Signal();
}

std::string JobScheduler::CheckpointDir(const std::string& id) const {
  return (std::filesystem::path(options_.checkpoint_dir) / id).string();
}

void JobScheduler::DropCheckpoint(const std::string& id) const {
  if (options_.checkpoint_dir.empty() || id.empty() || id.find('/') != std::string::npos || id == "." || id == "..") {
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(CheckpointDir(id), ec);
  if (ec) LCD_LOG(WARNING) << "jobs: cannot remove checkpoint " << CheckpointDir(id) << ": " << ec.message();
}

void JobScheduler::Finish(const JobRecord& job, int64_t version, const WorkerExit& exit,
                          const absl::Status& setup_error) {
  const std::string& model = job.spec.target_model;
  auto discard = [&] {
    if (version > 0) {
      if (absl::Status st = artifacts_->Discard(model, version); !st.ok()) LCD_LOG(ERROR) << "jobs: " << st;
    }
  };
  if (!setup_error.ok()) {
    discard();
    DropCheckpoint(job.id);  // Before the state says the job ended.
    Changed(store_->Transition(job.id, JobState::kRunning, JobState::kFailed,
                               absl::StrCat("cannot start the worker: ", setup_error.message()), NowMs()));
    return;
  }
  if (exit.kind == WorkerExit::Kind::kSucceeded) {
    absl::StatusOr<std::string> published = artifacts_->Publish(model, version);
    if (published.ok()) {
      LCD_LOG(INFO) << "jobs: " << job.id << " published " << *published;
      DropCheckpoint(job.id);  // Before the state says the job ended.
      Changed(store_->Succeed(job.id, version, NowMs()));
    } else {
      DropCheckpoint(job.id);  // Before the state says the job ended.
      Changed(store_->Transition(job.id, JobState::kRunning, JobState::kFailed,
                                 absl::StrCat("the worker's artifact was refused: ", published.status().message()),
                                 NowMs()));
    }
    return;
  }
  discard();
  absl::StatusOr<JobRecord> now = store_->Get(job.id);
  const bool cancel_requested = now.ok() && now->cancel_requested;
  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    stopping = stopping_;
  }
  if (cancel_requested) {
    DropCheckpoint(job.id);  // Before the state says the job ended.
    Changed(store_->Transition(job.id, JobState::kRunning, JobState::kCancelled, "cancelled by client", NowMs()));
    return;
  }
  if (exit.kind == WorkerExit::Kind::kCancelled && stopping) {
    Changed(store_->Transition(job.id, JobState::kRunning, JobState::kQueued,
                               absl::StrCat("lcd-jobs stopped during attempt ", job.attempts, "; will resume"),
                               NowMs()));
    return;
  }
  std::string reason = absl::StrCat("attempt ", job.attempts, ": worker ", exit.Describe());
  if (exit.kind == WorkerExit::Kind::kTimedOut) {
    absl::StrAppend(&reason, " (limit ",
                    job.spec.budget_seconds > 0 ? job.spec.budget_seconds
                                                : absl::ToDoubleSeconds(options_.default_time_limit),
                    " s)");
  }
  const std::string last = LastLine(exit.log_tail);
  if (!last.empty()) absl::StrAppend(&reason, ": ", last.substr(0, 500));
  // `lcd quantize` exits 2 (bad flags) or 3 (bad input, settings or a budget
  // it cannot meet) when the same attempt would fail again: no retry.
  const bool permanent = exit.kind == WorkerExit::Kind::kExitCode && (exit.code == 2 || exit.code == 3);
  if (permanent) absl::StrAppend(&reason, " (not retried: the same attempt would fail again)");
  if (!permanent && job.attempts < options_.max_attempts) {
    const absl::Duration backoff = options_.retry_backoff * std::pow(2.0, job.attempts - 1);
    {
      absl::MutexLock lock(&mu_);
      not_before_[job.id] = absl::Now() + backoff;
    }
    LCD_LOG(WARNING) << "jobs: " << job.id << " " << reason << "; retrying in " << backoff;
    Changed(store_->Transition(job.id, JobState::kRunning, JobState::kQueued, reason, NowMs()));
  } else {
    LCD_LOG(WARNING) << "jobs: " << job.id << " failed: " << reason;
    DropCheckpoint(job.id);  // Before the state says the job ended.
    Changed(store_->Transition(job.id, JobState::kRunning, JobState::kFailed, reason, NowMs()));
  }
}

}  // namespace lcd::server::jobs
