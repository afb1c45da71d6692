#include "lcd/server/metrics_http.h"

#include <httplib.h>

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lcd/base/logging.h"

namespace lcd::server {
namespace {

class HttplibMetricsServer final : public MetricsHttpServer {
 public:
  HttplibMetricsServer(const Registry* registry, std::function<bool()> ready)
      : registry_(registry), ready_(std::move(ready)) {}
  ~HttplibMetricsServer() override { Stop(); }

  absl::Status Bind(const std::string& host, int port) {
    // Scrapes are tiny GETs: cap the body, and time out idle or slow peers so
    // the small thread pool cannot be exhausted by stalled connections.
    server_.set_payload_max_length(4096);
    server_.set_read_timeout(5, 0);
    server_.set_write_timeout(5, 0);
    server_.set_idle_interval(0, 100000);
    server_.set_keep_alive_max_count(100);
    server_.set_keep_alive_timeout(5);
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(registry_->Render(), std::string(Registry::kContentType).c_str());
    });
    server_.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      const bool ok = !ready_ || ready_();
      res.status = ok ? 200 : 503;
      res.set_content(ok ? "ok\n" : "not ready\n", "text/plain");
    });
    // cpp-httplib answers unknown paths with 404 already; other methods on
    // the known paths get 405 here.
    auto not_allowed = [](const httplib::Request& req, httplib::Response& res) {
      if (req.path == "/metrics" || req.path == "/healthz") {
        res.status = 405;
        res.set_header("Allow", "GET");
      } else {
        res.status = 404;
      }
    };
    server_.Post(".*", not_allowed);
    server_.Put(".*", not_allowed);
    server_.Delete(".*", not_allowed);
    server_.Patch(".*", not_allowed);
    if (port == 0) {
      port_ = server_.bind_to_any_port(host);
      if (port_ < 0) return absl::UnavailableError(absl::StrCat("metrics: cannot bind ", host));
    } else {
      if (!server_.bind_to_port(host, port)) {
        return absl::UnavailableError(absl::StrCat("metrics: cannot bind ", host, ":", port));
      }
      port_ = port;
    }
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() is a no-op until the listen loop runs; wait for it so an early
    // Stop cannot leave the thread listening forever.
    for (int i = 0; i < 5000 && !server_.is_running(); ++i) absl::SleepFor(absl::Milliseconds(1));
    return absl::OkStatus();
  }

  int port() const override { return port_; }

  void Stop() override {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  const Registry* registry_;
  std::function<bool()> ready_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = -1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& host, int port, const Registry* registry, std::function<bool()> ready) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port ", port, " out of range"));
  }
  auto server = std::make_unique<HttplibMetricsServer>(registry, std::move(ready));
  absl::Status st = server->Bind(host, port);
  if (!st.ok()) return st;
  LCD_LOG(INFO) << "metrics: serving http://" << host << ":" << server->port() << "/metrics";
  return server;
}

}  // namespace lcd::server
