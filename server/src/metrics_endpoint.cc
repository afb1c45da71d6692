#include "lcd/server/metrics_endpoint.h"

#include <CivetServer.h>  // CivetCallbacks, what the Exposer takes.
#include <civetweb.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <exception>
#include <map>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lcd/base/logging.h"

namespace lcd::server {
namespace {

// civetweb's C callbacks get only the connection; its context's user data is
// the Exposer's CivetServer, not ours. So each endpoint is found through its
// context: init_context (called by mg_start on the constructing thread,
// before any worker starts) registers the endpoint under construction.
absl::Mutex g_endpoints_mu;
std::map<const mg_context*, MetricsEndpoint*>& Endpoints()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_endpoints_mu) {
  static auto* endpoints = new std::map<const mg_context*, MetricsEndpoint*>;
  return *endpoints;
}
thread_local MetricsEndpoint* t_constructing = nullptr;
thread_local const mg_context* t_constructed = nullptr;

void InitContext(const mg_context* ctx) {
  if (t_constructing == nullptr) return;
  absl::MutexLock lock(&g_endpoints_mu);
  Endpoints()[ctx] = t_constructing;
  t_constructed = ctx;
}

void Unregister(const mg_context* ctx) {
  absl::MutexLock lock(&g_endpoints_mu);
  Endpoints().erase(ctx);
}

MetricsEndpoint* Find(const mg_context* ctx) {
  absl::MutexLock lock(&g_endpoints_mu);
  auto it = Endpoints().find(ctx);
  return it == Endpoints().end() ? nullptr : it->second;
}

// Serves /healthz, and 405 for methods the two paths do not take, ahead of
// civetweb's routing; a GET /metrics goes on to the Exposer's handler, any
// other path to civetweb's 404. The endpoint outlives every request: Stop
// joins civetweb's workers before unregistering.
int BeginRequest(mg_connection* conn) {
  const mg_request_info* req = mg_get_request_info(conn);
  if (req == nullptr || req->local_uri == nullptr) return 0;
  const std::string_view path = req->local_uri;
  const std::string_view method = req->request_method != nullptr ? req->request_method : "";
  const bool healthz = path == "/healthz";
  if (!healthz && path != "/metrics") return 0;
  if (method != "GET" && !(healthz && method == "HEAD")) {
    mg_printf(conn,
              "HTTP/1.1 405 Method Not Allowed\r\nAllow: %s\r\nContent-Length: 0\r\n"
              "Connection: close\r\n\r\n",
              healthz ? "GET, HEAD" : "GET");
    return 405;
  }
  if (!healthz) return 0;
  const MetricsEndpoint* endpoint = Find(mg_get_context(conn));
  const bool ok = endpoint != nullptr && endpoint->Ready();
  const std::string_view body = ok ? "ok\n" : "not ready\n";
  mg_printf(conn,
            "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            ok ? "200 OK" : "503 Service Unavailable", body.size());
  if (method == "GET") mg_write(conn, body.data(), body.size());
  return ok ? 200 : 503;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry,
    std::function<bool()> ready) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port ", port, " out of range"));
  }
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint(registry, std::move(ready)));
  const std::string address = host.find(':') != std::string::npos
                                  ? absl::StrCat("[", host, "]:", port)  // IPv6 literal.
                                  : absl::StrCat(host, ":", port);
  std::vector<std::string> options = {
      "listening_ports", address,
      "num_threads", std::to_string(kHttpThreads),
      "request_timeout_ms", std::to_string(kRequestTimeoutMs),
      "enable_keep_alive", "no",
      "max_request_size", std::to_string(kMaxRequestBytes),
  };
  CivetCallbacks callbacks{};
  callbacks.begin_request = BeginRequest;
  callbacks.init_context = InitContext;
  t_constructing = endpoint.get();
  t_constructed = nullptr;
  try {
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(std::move(options), &callbacks);
  } catch (const std::exception& e) {
    if (t_constructed != nullptr) Unregister(t_constructed);
    t_constructing = nullptr;
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot serve on ", address, ": ", e.what()));
  }
  t_constructing = nullptr;
  endpoint->context_ = t_constructed;
  if (endpoint->context_ == nullptr) {
    return absl::InternalError("metrics: civetweb did not call init_context");
  }
  endpoint->exposer_->RegisterCollectable(registry);
  const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (ports.empty() || ports.front() <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics: no listening port for ", address));
  }
  endpoint->port_ = ports.front();
  LCD_LOG(INFO) << "metrics: serving http://" << host << ":" << endpoint->port_
                << "/metrics and /healthz (" << kHttpThreads << " threads)";
  return endpoint;
}

MetricsEndpoint::MetricsEndpoint(std::shared_ptr<prometheus::Registry> registry,
                                 std::function<bool()> ready)
    : registry_(std::move(registry)), ready_(std::move(ready)) {}

MetricsEndpoint::~MetricsEndpoint() { Stop(); }

void MetricsEndpoint::Stop() {
  exposer_.reset();  // mg_stop: joins civetweb's threads.
  if (context_ != nullptr) {
    Unregister(static_cast<const mg_context*>(context_));
    context_ = nullptr;
  }
}

}  // namespace lcd::server
