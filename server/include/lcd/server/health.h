// Bridges the daemon's state to the standard grpc.health.v1.Health service
// (grpc::EnableDefaultHealthCheckService). Each name means one thing, and the
// Kubernetes probes in deploy/k8s and helm/ ask for exactly these (checked by
// tests/python/test_probes.py, which reads the names from the YAML files):
//
//   ""                          liveness/startup: the process is up and
//                               healthy. SERVING from the start, with or
//                               without a model; NOT_SERVING only after
//                               Shutdown. Never depends on the models, so a
//                               pod whose last model is unloaded is not
//                               restarted.
//   "lcd.v1.GenerationService"  readiness: can serve generation now, i.e.
//                               `ready()` (the daemon: start-up loading done
//                               and some model READY). Starts NOT_SERVING.
//   "<model name>"              that model is READY.
//
// Any other name answers NOT_FOUND.
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

// The health service names above (the readiness one is the GenerationService's
// full name; health.cc checks that against the generated code).
inline constexpr char kLivenessService[] = "";
inline constexpr char kReadinessService[] = "lcd.v1.GenerationService";

class HealthReporter {
 public:
  // `service` is the server's (not owned; may be null, then this is a no-op).
  HealthReporter(grpc::HealthCheckServiceInterface* service, std::function<bool()> ready);

  // A model became able (or unable) to serve; also re-evaluates readiness.
  void SetModel(const std::string& name, bool serving);
  // Re-evaluates the readiness entry from `ready()`.
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
