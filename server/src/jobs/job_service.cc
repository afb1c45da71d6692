#include "lcd/server/jobs/job_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lcd/server/credentials.h"
#include "lcd/server/jobs/submit_validation.h"
#include "lcd/base/status_macros.h"
#include "lcd/server/request_validation.h"
#include "lcd/server/status_mapping.h"

namespace lcd::server::jobs {
namespace {

lcd::v1::JobState ToProto(JobState s) {
  switch (s) {
    case JobState::kQueued:
      return lcd::v1::JOB_STATE_QUEUED;
    case JobState::kRunning:
      return lcd::v1::JOB_STATE_RUNNING;
    case JobState::kSucceeded:
      return lcd::v1::JOB_STATE_SUCCEEDED;
    case JobState::kFailed:
      return lcd::v1::JOB_STATE_FAILED;
    case JobState::kCancelled:
      return lcd::v1::JOB_STATE_CANCELLED;
  }
  return lcd::v1::JOB_STATE_UNSPECIFIED;
}

void ToProto(const JobRecord& j, lcd::v1::Job* out) {
  out->set_id(j.id);
  lcd::v1::SubmitJobRequest* s = out->mutable_spec();
  s->set_source_model(j.spec.source_model);
  s->set_target_model(j.spec.target_model);
  s->set_method(j.spec.method);
  s->set_bits(j.spec.bits);
  s->set_group_size(j.spec.group_size);
  s->set_calibration_file(j.spec.calibration_file);
  s->set_calibration_samples(j.spec.calibration_samples);
  s->set_budget_seconds(j.spec.budget_seconds);
  s->set_idempotency_key(j.spec.idempotency_key);
  out->set_state(ToProto(j.state));
  out->set_reason(j.reason);
  out->set_attempts(j.attempts);
  out->set_created_unix_ms(j.created_ms);
  out->set_updated_unix_ms(j.updated_ms);
  out->set_phase(j.phase);
  out->set_progress(j.progress);
  out->set_version(j.version);
  out->set_last_event_seq(j.last_event);
}

}  // namespace

JobServiceImpl::JobServiceImpl(JobStore* store, JobScheduler* scheduler, JobServiceOptions options)
    : store_(store), scheduler_(scheduler), options_(std::move(options)) {}

absl::Status JobServiceImpl::Authorize(const grpc::ServerContext& ctx) const {
  if (options_.token.empty()) return absl::OkStatus();
  return CheckBearer(ctx, options_.token, "JobService");
}

absl::Status JobServiceImpl::ValidateSubmit(const lcd::v1::SubmitJobRequest& r) const {
  return ValidateSubmitJobRequest(r, options_.methods);
}

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* ctx, const lcd::v1::SubmitJobRequest* req,
                                       lcd::v1::Job* out) {
  if (absl::Status st = Authorize(*ctx); !st.ok()) return ToGrpcStatus(st);
  if (absl::Status st = ValidateSubmit(*req); !st.ok()) return ToGrpcStatus(st);
  // Resolve now, so a path outside the roots is refused before anything is stored.
  if (absl::StatusOr<std::string> m = options_.resolve_model(req->source_model()); !m.ok()) {
    return ToGrpcStatus(m.status());
  }
  if (!req->calibration_file().empty()) {
    if (absl::StatusOr<std::string> d = options_.resolve_data(req->calibration_file()); !d.ok()) {
      return ToGrpcStatus(d.status());
    }
  }
  JobSpec spec;
  spec.source_model = req->source_model();
  spec.target_model = req->target_model();
  spec.method = req->method();
  spec.bits = req->bits();
  spec.group_size = req->group_size();
  spec.calibration_file = req->calibration_file();
  spec.calibration_samples = req->calibration_samples();
  spec.budget_seconds = req->budget_seconds();
  spec.idempotency_key = req->idempotency_key();
  bool created = false;
  absl::StatusOr<JobRecord> j = store_->Create(spec, absl::ToUnixMillis(absl::Now()), &created);
  if (!j.ok()) return ToGrpcStatus(j.status());
  if (created) scheduler_->Notify();
  ToProto(*j, out);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext*, const lcd::v1::GetJobRequest* req, lcd::v1::Job* out) {
  if (absl::Status st = ValidateJobText("id", req->id(), 64); !st.ok()) return ToGrpcStatus(st);
  absl::StatusOr<JobRecord> j = store_->Get(req->id());
  if (!j.ok()) return ToGrpcStatus(j.status());
  ToProto(*j, out);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext*, const lcd::v1::ListJobsRequest* req,
                                      lcd::v1::ListJobsResponse* out) {
  ListFilter f;
  switch (req->state()) {
    case lcd::v1::JOB_STATE_UNSPECIFIED:
      break;
    case lcd::v1::JOB_STATE_QUEUED:
      f.state = JobState::kQueued;
      break;
    case lcd::v1::JOB_STATE_RUNNING:
      f.state = JobState::kRunning;
      break;
    case lcd::v1::JOB_STATE_SUCCEEDED:
      f.state = JobState::kSucceeded;
      break;
    case lcd::v1::JOB_STATE_FAILED:
      f.state = JobState::kFailed;
      break;
    case lcd::v1::JOB_STATE_CANCELLED:
      f.state = JobState::kCancelled;
      break;
    default:
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat("unknown job state ", req->state())));
  }
  if (!req->target_model().empty()) {
    if (absl::Status st = ValidateModelName(req->target_model(), "target_model"); !st.ok()) return ToGrpcStatus(st);
  }
  f.target_model = req->target_model();
  f.page_size = req->page_size() == 0 ? 50 : req->page_size();
  if (absl::Status st = ValidateJobText("page_token", req->page_token(), 32); !st.ok()) return ToGrpcStatus(st);
  f.page_token = req->page_token();
  absl::StatusOr<ListPage> page = store_->List(f);
  if (!page.ok()) return ToGrpcStatus(page.status());
  for (const JobRecord& j : page->jobs) ToProto(j, out->add_jobs());
  out->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* ctx, const lcd::v1::WatchJobRequest* req,
                                      grpc::ServerWriter<lcd::v1::JobEvent>* writer) {
  if (absl::Status st = ValidateJobText("id", req->id(), 64); !st.ok()) return ToGrpcStatus(st);
  if (req->after_seq() < 0) return ToGrpcStatus(absl::InvalidArgumentError("after_seq must be >= 0"));
  int64_t after = req->after_seq();
  for (;;) {
    absl::StatusOr<std::vector<JobEvent>> events = store_->EventsSince(req->id(), after, 100);
    if (!events.ok()) return ToGrpcStatus(events.status());
    for (const JobEvent& e : *events) {
      lcd::v1::JobEvent msg;
      msg.set_job_id(req->id());
      msg.set_seq(e.seq);
      msg.set_time_unix_ms(e.time_ms);
      msg.set_state(ToProto(e.state));
      msg.set_phase(e.phase);
      msg.set_progress(e.progress);
      msg.set_message(e.message);
      if (!writer->Write(msg)) return grpc::Status::OK;  // the client went away
      after = e.seq;
      if (IsTerminal(e.state)) return grpc::Status::OK;  // the terminal event is the last
    }
    if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
    if (events->empty()) scheduler_->WaitForEvent(req->id(), after, absl::Now() + absl::Seconds(1));
  }
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* ctx, const lcd::v1::CancelJobRequest* req,
                                       lcd::v1::Job* out) {
  if (absl::Status st = Authorize(*ctx); !st.ok()) return ToGrpcStatus(st);
  if (absl::Status st = ValidateJobText("id", req->id(), 64); !st.ok()) return ToGrpcStatus(st);
  if (absl::Status st = store_->RequestCancel(req->id(), absl::ToUnixMillis(absl::Now())); !st.ok()) {
    return ToGrpcStatus(st);
  }
  scheduler_->Notify();
  absl::StatusOr<JobRecord> j = store_->Get(req->id());
  if (!j.ok()) return ToGrpcStatus(j.status());
  ToProto(*j, out);
  return grpc::Status::OK;
}

}  // namespace lcd::server::jobs
