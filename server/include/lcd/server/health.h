// Bridges model readiness to the standard grpc.health.v1.Health service
// (grpc::EnableDefaultHealthCheckService): one entry per model name plus the
// overall entry "" (what Kubernetes gRPC probes ask). The overall status is
// SERVING only while `ready()` says so (the daemon: start-up loading finished
// and a model is READY); it is
// set NOT_SERVING as soon as the server starts, before any model loads,
// because the default service reports "" SERVING from the start.
//
// Thread safety: all methods are thread-safe. After Shutdown every entry is
// NOT_SERVING and further updates are ignored.
#ifndef LCD_SERVER_HEALTH_H_
#define LCD_SERVER_HEALTH_H_

#include <grpcpp/health_check_service_interface.h>

#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace lcd::server {

class HealthReporter {
 public:
  // `service` is the server's (not owned; may be null, then this is a no-op).
  HealthReporter(grpc::HealthCheckServiceInterface* service, std::function<bool()> ready);

  // A model became able (or unable) to serve; also re-evaluates "".
  void SetModel(const std::string& name, bool serving);
  // Re-evaluates the overall entry from `ready()`.
  void Refresh();
  void Shutdown();

 private:
  grpc::HealthCheckServiceInterface* const service_;
  const std::function<bool()> ready_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace lcd::server

#endif  // LCD_SERVER_HEALTH_H_
