#include "lcd/server/jobs/jobs_daemon.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"
#include "lcd/server/credentials.h"
#include "lcd/server/jobs/artifact_store.h"
#include "lcd/server/jobs/job_scheduler.h"
#include "lcd/server/jobs/job_service.h"
#include "lcd/server/jobs/job_store.h"
#include "lcd/server/metrics_endpoint.h"
#include "lcd/server/roots.h"

namespace lcd::server::jobs {
namespace {

namespace fs = std::filesystem;

// The `lcd` executable beside this one (build tree: server/lcd-jobs and
// tools/lcd; installed: both in one bin directory).
std::string DefaultWorkerBinary() {
  std::error_code ec;
  const fs::path self = fs::canonical("/proc/self/exe", ec);
  if (ec) return "lcd";
  for (const fs::path& candidate : {self.parent_path() / "lcd", self.parent_path().parent_path() / "tools" / "lcd"}) {
    if (fs::exists(candidate, ec)) return candidate.string();
  }
  return "lcd";
}

class Metrics {
 public:
  explicit Metrics(prometheus::Registry& r)
      : jobs_(prometheus::BuildGauge().Name("lcd_jobs").Help("Jobs in each state").Register(r)),
        duration_(prometheus::BuildHistogram()
                      .Name("lcd_job_duration_seconds")
                      .Help("Submit to terminal state, by method and final state")
                      .Register(r)),
        restarts_(prometheus::BuildCounter()
                      .Name("lcd_job_worker_restarts_total")
                      .Help("Attempts retried after a worker failed")
                      .Register(r)
                      .Add({})) {}

  void Refresh(JobStore& store) {
    for (JobState s : {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                       JobState::kCancelled}) {
      absl::StatusOr<std::vector<JobRecord>> jobs = store.ListByState(s);
      if (jobs.ok()) jobs_.Add({{"state", JobStateName(s)}}).Set(static_cast<double>(jobs->size()));
    }
  }

  void OnChange(const JobRecord& j) {
    if (j.state == JobState::kQueued && j.attempts > 0) restarts_.Increment();
    if (IsTerminal(j.state)) {
      duration_
          .Add({{"method", j.spec.method}, {"state", JobStateName(j.state)}},
               prometheus::Histogram::BucketBoundaries{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400})
          .Observe(static_cast<double>(j.updated_ms - j.created_ms) / 1000.0);
    }
  }

 private:
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Counter& restarts_;
};

class JobsDaemonImpl final : public JobsDaemon {
 public:
  explicit JobsDaemonImpl(const JobsConfig& config) : config_(config) {}
  ~JobsDaemonImpl() override { Shutdown(); }

  absl::Status Init() {
    std::string token;
    if (!config_.token_file.empty()) {
      absl::StatusOr<std::string> t = LoadTokenFile("token_file", config_.token_file);
      if (!t.ok()) return t.status();
      token = *t;
    }
    std::error_code ec;
    fs::create_directories(config_.artifact_root, ec);
    if (ec) return absl::FailedPreconditionError(absl::StrCat("artifact_root '", config_.artifact_root, "': ", ec.message()));
    absl::StatusOr<std::unique_ptr<JobStore>> store = OpenSqliteJobStore(config_.store);
    if (!store.ok()) return store.status();
    store_ = std::move(*store);
    artifacts_ = std::make_unique<ArtifactStore>(config_.artifact_root);

    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<Metrics>(*registry_);

    const std::vector<std::string> model_roots = config_.model_roots, data_roots = config_.data_roots;
    auto resolve_model = [model_roots](const std::string& p) {
      return ResolveUnderRoots(model_roots, p, PathKind::kDirectory, "source model", "model roots");
    };
    auto resolve_data = [data_roots](const std::string& p) {
      return ResolveUnderRoots(data_roots, p, PathKind::kFile, "calibration file", "data roots");
    };
    SchedulerOptions so;
    so.worker_binary = config_.worker_binary.empty() ? DefaultWorkerBinary() : config_.worker_binary;
    so.log_dir = config_.log_dir.empty()
                     ? (fs::absolute(config_.store).parent_path() / "worker-logs").string()
                     : config_.log_dir;
    so.checkpoint_dir = config_.checkpoint_dir.empty()
                            ? (fs::absolute(config_.store).parent_path() / "worker-checkpoints").string()
                            : config_.checkpoint_dir;
    so.max_workers = config_.max_workers;
    so.max_attempts = config_.max_attempts;
    so.worker_threads = config_.worker_threads;
    so.default_time_limit = absl::Seconds(config_.job_time_limit_seconds);
    so.retry_backoff = absl::Seconds(config_.retry_backoff_seconds);
    so.resolve_model = resolve_model;
    so.resolve_data = resolve_data;
    so.on_change = [this](const JobRecord& j) {
      metrics_->OnChange(j);
      metrics_->Refresh(*store_);
    };
    scheduler_ = std::make_unique<JobScheduler>(store_.get(), artifacts_.get(), so);
    JobServiceOptions jo;
    jo.token = token;
    jo.resolve_model = resolve_model;
    jo.resolve_data = resolve_data;
    service_ = std::make_unique<JobServiceImpl>(store_.get(), scheduler_.get(), jo);

    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds =
        ServerCredentialsFromFiles(config_.tls_cert_file, config_.tls_key_file);
    if (!creds.ok()) return creds.status();
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat(config_.grpc_address, ":", config_.grpc_port), *creds, &grpc_port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || grpc_port_ == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", config_.grpc_address, ":", config_.grpc_port));
    }
    if (config_.metrics_port >= 0) {
      absl::StatusOr<std::unique_ptr<MetricsEndpoint>> ep =
          MetricsEndpoint::Start(config_.metrics_address, config_.metrics_port, registry_, nullptr);
      if (!ep.ok()) return ep.status();
      metrics_endpoint_ = std::move(*ep);
    }
    if (absl::Status st = scheduler_->Start(); !st.ok()) return st;
    metrics_->Refresh(*store_);
    server_->GetHealthCheckService()->SetServingStatus("", true);
    server_->GetHealthCheckService()->SetServingStatus("lcd.v1.JobService", true);
    LCD_LOG(INFO) << "lcd-jobs: serving on " << config_.grpc_address << ":" << grpc_port_
                  << (config_.tls_cert_file.empty() ? " (plaintext)" : " (TLS)") << ", metrics on "
                  << config_.metrics_address << ":" << metrics_port() << ", store " << config_.store
                  << ", artifacts " << config_.artifact_root << ", worker " << so.worker_binary
                  << (token.empty() ? ", no token (loopback only)" : ", token required");
    return absl::OkStatus();
  }

  int grpc_port() const override { return grpc_port_; }
  int metrics_port() const override { return metrics_endpoint_ != nullptr ? metrics_endpoint_->port() : -1; }

  void Shutdown() override {
    if (shut_down_) return;
    shut_down_ = true;
    if (server_ != nullptr) {
      server_->GetHealthCheckService()->Shutdown();
      // Watch streams wake within a second (WaitForEvent's poll) and see the
      // deadline; unary calls are short.
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    }
    if (scheduler_ != nullptr) scheduler_->Shutdown();
    if (metrics_endpoint_ != nullptr) metrics_endpoint_->Stop();
    if (server_ != nullptr) server_->Wait();
    LCD_LOG(INFO) << "lcd-jobs: stopped";
  }

 private:
  const JobsConfig config_;
  bool shut_down_ = false;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<JobScheduler> scheduler_;
  std::unique_ptr<JobServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  int grpc_port_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<JobsDaemon>> JobsDaemon::Start(const JobsConfig& config) {
  auto d = std::make_unique<JobsDaemonImpl>(config);
  if (absl::Status st = d->Init(); !st.ok()) return st;
  return std::unique_ptr<JobsDaemon>(std::move(d));
}

}  // namespace lcd::server::jobs
