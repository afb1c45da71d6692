// lcd-server wired together: the gRPC server (GenerationService,
// ModelService, grpc.health.v1.Health, server reflection), the model
// registry, the metrics registry with its HTTP endpoint, and a sampler that
// copies engine gauges into the metrics.
//
// Lifecycle: Start binds the ports and begins serving (liveness SERVING,
// readiness NOT_SERVING; see health.h), then loads the configured models
// (readiness turns SERVING once all are loaded and one is READY). Shutdown is
// the graceful path: health NOT_SERVING, stop admitting
// (new calls get UNAVAILABLE), drain running requests up to the drain
// timeout, cancel the rest, stop the gRPC and HTTP servers.
//
// Thread safety: Start, Shutdown and the destructor from one thread.
#ifndef LCD_SERVER_DAEMON_H_
#define LCD_SERVER_DAEMON_H_

#include <atomic>
#include <memory>

#include "absl/status/statusor.h"
#include "lcd/server/config.h"

namespace lcd::server {

class Daemon {
 public:
  // Errors: Unavailable when a port cannot be bound; the loader's error
  // (NotFound / InvalidArgument) when a configured model fails to load;
  // FailedPrecondition / InvalidArgument for an unreadable or weak admin
  // token or TLS file; Cancelled when `stop` turned true during start-up (a
  // model load in progress stops at its next phase). `stop` is not owned,
  // may be null, and must outlive the daemon.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const ServerConfig& config,
                                                       const std::atomic<bool>* stop = nullptr);
  virtual ~Daemon() = default;  // Calls Shutdown if it has not run.

  virtual int grpc_port() const = 0;
  virtual int metrics_port() const = 0;  // -1 when disabled.
  // Graceful shutdown as described above; idempotent; blocks until done.
  virtual void Shutdown() = 0;
};

}  // namespace lcd::server

#endif  // LCD_SERVER_DAEMON_H_
