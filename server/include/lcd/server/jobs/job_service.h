// lcd.v1.JobService on top of the job store and scheduler: validation of
// every request (clear INVALID_ARGUMENT / NOT_FOUND / UNAUTHENTICATED errors,
// nothing stored for a refused submit), bearer-token checks for the RPCs that
// change state, and WatchJob as a resumable stream of stored events.
#ifndef LCD_SERVER_JOBS_JOB_SERVICE_H_
#define LCD_SERVER_JOBS_JOB_SERVICE_H_

#include <functional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "lcd/quantizer/methods.h"
#include "lcd/server/jobs/job_scheduler.h"
#include "lcd/server/jobs/job_store.h"
#include "lcd/v1/jobs.grpc.pb.h"

namespace lcd::server::jobs {

// Every method lcd quantize implements.
inline std::set<std::string> DefaultMethods() {
  std::set<std::string> out;
  for (const quantizer::MethodInfo& m : quantizer::kMethods) out.emplace(m.name);
  return out;
}

struct JobServiceOptions {
  // Required on SubmitJob and CancelJob as "authorization: Bearer <token>".
  // Empty: no token is required (only for tests and loopback-only setups).
  std::string token;
  // The methods SubmitJob accepts: lcd quantize's (lcd/quantizer/methods.h).
  std::set<std::string> methods = DefaultMethods();
  // Resolve a client's source model / calibration file inside the configured
  // roots; the error (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED) is
  // returned to the client as it is.
  std::function<absl::StatusOr<std::string>(const std::string&)> resolve_model;
  std::function<absl::StatusOr<std::string>(const std::string&)> resolve_data;
};

class JobServiceImpl final : public lcd::v1::JobService::Service {
 public:
  JobServiceImpl(JobStore* store, JobScheduler* scheduler, JobServiceOptions options);

  grpc::Status SubmitJob(grpc::ServerContext* ctx, const lcd::v1::SubmitJobRequest* req, lcd::v1::Job* out) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const lcd::v1::GetJobRequest* req, lcd::v1::Job* out) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const lcd::v1::ListJobsRequest* req,
                        lcd::v1::ListJobsResponse* out) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const lcd::v1::WatchJobRequest* req,
                        grpc::ServerWriter<lcd::v1::JobEvent>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const lcd::v1::CancelJobRequest* req, lcd::v1::Job* out) override;

  // The checks SubmitJob applies before anything is stored (also the fuzz
  // target's entry point): OK or INVALID_ARGUMENT naming the field.
  absl::Status ValidateSubmit(const lcd::v1::SubmitJobRequest& req) const;

 private:
  absl::Status Authorize(const grpc::ServerContext& ctx) const;

  JobStore* const store_;
  JobScheduler* const scheduler_;
  const JobServiceOptions options_;
};

}  // namespace lcd::server::jobs

#endif  // LCD_SERVER_JOBS_JOB_SERVICE_H_
