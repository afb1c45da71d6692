#include "lcd/server/daemon.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "lcd/base/logging.h"
#include "lcd/server/artifact_watcher.h"
#include "lcd/server/credentials.h"
#include "lcd/server/generation_service.h"
#include "lcd/server/health.h"
#include "lcd/server/metrics_endpoint.h"
#include "lcd/server/model_registry.h"
#include "lcd/server/model_service.h"
#include "lcd/server/server_metrics.h"

namespace lcd::server {
namespace {

class DaemonImpl final : public Daemon {
 public:
  DaemonImpl(const ServerConfig& config, const std::atomic<bool>* stop)
      : config_(config), stop_(stop), registry_(std::make_shared<prometheus::Registry>()), metrics_(*registry_) {}
  ~DaemonImpl() override { Shutdown(); }

  absl::Status Init() {
    ModelRegistryOptions ropts;
    ropts.engine = config_.ToEngineOptions();
    ropts.backend = runtime::NewCpuBackend(config_.threads);
    LCD_LOG(INFO) << "backend: " << ropts.backend->Describe();
    ropts.metrics = &metrics_;
    ropts.on_serving_change = [this](const std::string& name, bool serving) {
      if (health_ != nullptr) health_->SetModel(name, serving);
    };
    ropts.model_roots = config_.model_roots;
    ropts.max_loaded_models = config_.max_loaded_models;
    ropts.max_model_memory_bytes = config_.max_model_memory_bytes;
    ropts.stop = stop_;
    std::string admin_token;
    if (!config_.admin_token_file.empty()) {
      auto token = LoadTokenFile("admin_token_file", config_.admin_token_file);
      if (!token.ok()) return token.status();
      admin_token = *token;
    }
    auto creds = ServerCredentialsFromFiles(config_.tls_cert_file, config_.tls_key_file);
    if (!creds.ok()) return creds.status();
    models_ = std::make_unique<ModelRegistry>(std::move(ropts));
    generation_ = std::make_unique<GenerationServiceImpl>(models_.get(), &metrics_);
    std::optional<ArtifactStoreControl> store;
    if (!config_.artifact_root.empty()) {
      // Created now (started in StartWatcher) so that ModelService can pin
      // and unpin models from its first call.
      watcher_ = std::make_unique<ArtifactWatcher>(
          config_.artifact_root, absl::Seconds(config_.artifact_rescan_seconds),
          [this](const std::string& name, const std::string& dir, int64_t version) {
            absl::Status st = models_->Load(name, dir, std::to_string(version), Drain());
            if (!st.ok()) metrics_.RecordVersionRefused(name);
            return st;
          });
      store = ArtifactStoreControl{config_.artifact_root, [w = watcher_.get()](const std::string& name,
                                                                               int64_t version, bool follow) {
                                     if (follow) {
                                       w->Follow(name, version);
                                     } else {
                                       w->Pin(name, version);
                                     }
                                   }};
    }
    model_service_ = std::make_unique<ModelServiceImpl>(models_.get(), Drain(), std::move(admin_token),
                                                        std::move(store));

    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat(config_.grpc_address, ":", config_.grpc_port),
                             *creds, &grpc_port_);
    builder.SetMaxReceiveMessageSize(static_cast<int>(config_.max_message_bytes));
    builder.RegisterService(generation_.get());
    builder.RegisterService(model_service_.get());
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || grpc_port_ == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", config_.grpc_address, ":", config_.grpc_port));
    }
    health_ = std::make_unique<HealthReporter>(server_->GetHealthCheckService(),
                                               [this] { return Ready(); });
    LCD_LOG(INFO) << "grpc: listening on " << config_.grpc_address << ":" << grpc_port_
                  << (config_.tls_cert_file.empty() ? " (plaintext)" : " (TLS)");

    if (config_.metrics_port >= 0) {
      auto http = MetricsEndpoint::Start(config_.metrics_address, config_.metrics_port, registry_,
                                         [this] { return Ready(); });
      if (!http.ok()) return http.status();
      http_ = std::move(*http);
    }
    sampler_ = std::thread([this] {
      while (!stop_sampler_.WaitForNotificationWithTimeout(absl::Milliseconds(200))) {
        models_->SampleStats();
      }
    });

    for (const ModelSpec& m : config_.models) {
      if (stop_ != nullptr && stop_->load()) return absl::CancelledError("stop requested during start-up");
      // A version of the artifact store is served under its version number.
      const int64_t store_version = StoreVersionOf(m);
      absl::Status st =
          models_->Load(m.name, m.path, store_version > 0 ? std::to_string(store_version) : "", Drain());
      if (!st.ok()) {
        return absl::Status(st.code(), absl::StrCat("model '", m.name, "': ", st.message()));
      }
    }
    if (!config_.artifact_root.empty()) StartWatcher();
    started_ = true;
    health_->Refresh();
    LCD_LOG(INFO) << "lcd-server: ready (" << config_.models.size() << " model(s))";
    return absl::OkStatus();
  }

  // Follows the artifact store for every configured model not pinned: a
  // newer <root>/<name>/<version> is hot-swapped in through the registry
  // (which keeps the old version serving when the new one fails to load).
  // The version a configured model's path names in the artifact store
  // (<artifact_root>/<name>/<version>), or 0 when it is not one.
  int64_t StoreVersionOf(const ModelSpec& m) const {
    if (config_.artifact_root.empty()) return 0;
    const std::filesystem::path p = std::filesystem::path(m.path).lexically_normal();
    int64_t version = 0;
    if (p.parent_path().parent_path() == std::filesystem::path(config_.artifact_root).lexically_normal() &&
        p.parent_path().filename() == m.name && absl::SimpleAtoi(p.filename().string(), &version) && version > 0) {
      return version;
    }
    return 0;
  }

  void StartWatcher() {
    for (const ModelSpec& m : config_.models) {
      // A model served from the store starts at the version it was given.
      const int64_t current = StoreVersionOf(m);
      const bool pinned = std::find(config_.pinned_models.begin(), config_.pinned_models.end(), m.name) !=
                          config_.pinned_models.end();
      if (pinned) {
        watcher_->Pin(m.name, current);
      } else {
        watcher_->Follow(m.name, current);
      }
    }
    if (absl::Status st = watcher_->Start(); !st.ok()) LCD_LOG(ERROR) << "artifact watcher: " << st;
    LCD_LOG(INFO) << "artifact watcher: following " << config_.artifact_root
                  << (watcher_->using_inotify() ? " (inotify" : " (rescans only")
                  << ", rescan every " << config_.artifact_rescan_seconds << " s)";
  }

  int grpc_port() const override { return grpc_port_; }
  int metrics_port() const override { return http_ != nullptr ? http_->port() : -1; }

  void Shutdown() override {
    if (shut_down_) return;
    shut_down_ = true;
    LCD_LOG(INFO) << "lcd-server: shutting down (drain up to " << config_.drain_timeout_seconds
                  << " s)";
    if (watcher_ != nullptr) watcher_->Stop();  // no new versions while draining
    if (health_ != nullptr) health_->Shutdown();
    // Draining the engines ends every accepted generation call; what is left
    // (calls arriving now) gets UNAVAILABLE from the registry.
    if (models_ != nullptr) models_->Shutdown(Drain());
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
      server_->Wait();
    }
    stop_sampler_.Notify();
    if (sampler_.joinable()) sampler_.join();
    if (http_ != nullptr) http_->Stop();
    models_.reset();  // Joins LoadModel/UnloadModel workers.
    LCD_LOG(INFO) << "lcd-server: stopped";
  }

 private:
  absl::Duration Drain() const { return absl::Seconds(config_.drain_timeout_seconds); }
  // Overall readiness: every configured model loaded, and one still serving.
  bool Ready() const { return started_.load() && models_ != nullptr && models_->AnyReady(); }

  const ServerConfig config_;
  const std::atomic<bool>* const stop_;
  const std::shared_ptr<prometheus::Registry> registry_;
  ServerMetrics metrics_;
  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<ArtifactWatcher> watcher_;
  std::unique_ptr<GenerationServiceImpl> generation_;
  std::unique_ptr<ModelServiceImpl> model_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HealthReporter> health_;
  std::unique_ptr<MetricsEndpoint> http_;
  std::thread sampler_;
  absl::Notification stop_sampler_;
  int grpc_port_ = 0;
  std::atomic<bool> started_{false};
  bool shut_down_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const ServerConfig& config,
                                                      const std::atomic<bool>* stop) {
  auto daemon = std::make_unique<DaemonImpl>(config, stop);
  absl::Status st = daemon->Init();
  if (!st.ok()) {
    daemon->Shutdown();
    return st;
  }
  return daemon;
}

}  // namespace lcd::server
