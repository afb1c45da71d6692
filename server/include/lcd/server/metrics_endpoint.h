// The HTTP endpoint for operators, on prometheus-cpp's Exposer (civetweb):
//   GET /metrics  the prometheus::Registry in the Prometheus text format
//                 (prometheus-cpp's serializer; gzip when the scraper asks),
//                 plus the Exposer's own exposer_* scrape metrics.
//   GET /healthz  200 "ok" while `ready()` says so, else 503 (Kubernetes HTTP
//                 probes; the same readiness as the gRPC health service's
//                 lcd.v1.GenerationService entry, see health.h).
// Other paths answer 404, other methods on these paths 405.
//
// Slow clients: civetweb gives each connection a worker thread while it is
// open. The endpoint runs kHttpThreads workers (far more than scrapers and
// probes need), reads each request within kRequestTimeoutMs (a connection
// that sends nothing, or too slowly, is closed then, freeing its worker),
// closes every connection after one response (no keep-alive to hold a worker),
// and caps the request at kMaxRequestBytes. So up to kHttpThreads - 1 stalled
// connections cost a scrape nothing, and beyond that a scrape waits at most
// kRequestTimeoutMs per kHttpThreads stalled connections.
// (tests/server/metrics_endpoint_test.cc: SlowClientsDoNotStarveScrapes.)
//
// Thread safety: Start and Stop from one thread; requests are served on
// civetweb's threads, which only read the Registry (itself thread-safe) and
// call `ready`.
#ifndef LCD_SERVER_METRICS_ENDPOINT_H_
#define LCD_SERVER_METRICS_ENDPOINT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace lcd::server {

class MetricsEndpoint {
 public:
  static constexpr int kHttpThreads = 64;
  static constexpr int kRequestTimeoutMs = 3000;
  static constexpr int kMaxRequestBytes = 8192;

  // Binds host:port (port 0 picks a free one; see port()) and starts serving.
  // `ready` may be empty (then /healthz is always 200). Errors:
  // InvalidArgument for a port outside 0..65535, Unavailable when the
  // address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry,
      std::function<bool()> ready);
  ~MetricsEndpoint();  // Stops.

  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  int port() const { return port_; }
  // Stops accepting, finishes the requests in progress and joins civetweb's
  // threads. Idempotent.
  void Stop();

  // Serves /healthz (public for civetweb's C callback; not for callers).
  bool Ready() const { return !ready_ || ready_(); }

 private:
  MetricsEndpoint(std::shared_ptr<prometheus::Registry> registry, std::function<bool()> ready);

  const std::shared_ptr<prometheus::Registry> registry_;
  const std::function<bool()> ready_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  const void* context_ = nullptr;  // civetweb's mg_context, the key of this endpoint.
  int port_ = -1;
};

}  // namespace lcd::server

#endif  // LCD_SERVER_METRICS_ENDPOINT_H_
