// A small HTTP/1.1 endpoint for operators: GET /metrics serves a Registry in
// the Prometheus text format; GET /healthz answers 200 "ok" while the
// readiness callback says so and 503 otherwise (Kubernetes HTTP probes).
// Every other path is 404, every other method 405. Built on cpp-httplib
// (Debian's libcpp-httplib-dev) with bounded request size and read/write
// timeouts, so a slow or hostile client cannot tie it up for long.
//
// Thread safety: Start/Stop from one thread; requests are served on the
// server's own threads and only read the Registry (itself thread-safe).
#ifndef LCD_SERVER_METRICS_HTTP_H_
#define LCD_SERVER_METRICS_HTTP_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "lcd/server/metrics.h"

namespace lcd::server {

class MetricsHttpServer {
 public:
  // Binds host:port (port 0 picks a free one; see port()) and starts serving
  // on a background thread. `registry` is not owned and must outlive the
  // server; `ready` may be empty (then /healthz is always 200). Errors:
  // Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host, int port,
                                                                  const Registry* registry,
                                                                  std::function<bool()> ready);
  virtual ~MetricsHttpServer() = default;  // Stops and joins.

  virtual int port() const = 0;
  // Stops accepting and joins the serving thread. Idempotent.
  virtual void Stop() = 0;
};

}  // namespace lcd::server

#endif  // LCD_SERVER_METRICS_HTTP_H_
