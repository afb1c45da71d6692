#include "lcd/server/metrics_endpoint.h"

#include <CivetServer.h>  // CivetCallbacks, what the Exposer takes.
#include <civetweb.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <exception>
#include <map>
#include <string>
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

// One complete response, written with mg_write from a heap string. Never
// mg_printf, and never civetweb's own error pages: Debian's civetweb runs its
// workers on a ~100 KB stack, and its error-page path (mg_send_http_error ->
// mg_printf under the request handler's large frames) overflows it: a GET of
// an unknown path crashed the whole daemon.
void Respond(mg_connection* conn, std::string_view status, std::string_view extra_headers, std::string_view body,
             bool with_body) {
  std::string out = absl::StrCat("HTTP/1.1 ", std::string(status),
                                 "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ", body.size(),
                                 "\r\nCache-Control: no-store\r\nConnection: close\r\n",
                                 std::string(extra_headers), "\r\n");
  if (with_body) out.append(body);
  mg_write(conn, out.data(), out.size());
}

// Serves /healthz, 405 for methods the two paths do not take and 404 for
// every other path, ahead of civetweb's routing; only a GET /metrics goes on
// to the Exposer's handler. The endpoint outlives every request: Stop joins
// civetweb's workers before unregistering.
int BeginRequest(mg_connection* conn) {
  const mg_request_info* req = mg_get_request_info(conn);
  if (req == nullptr || req->local_uri == nullptr) {
    Respond(conn, "400 Bad Request", "", "bad request\n", true);
    return 400;
  }
  const std::string_view path = req->local_uri;
  const std::string_view method = req->request_method != nullptr ? req->request_method : "";
  const bool healthz = path == "/healthz";
  if (!healthz && path != "/metrics") {
    Respond(conn, "404 Not Found", "", "not found: the paths are /metrics and /healthz\n", method != "HEAD");
    return 404;
  }
  if (method != "GET" && !(healthz && method == "HEAD")) {
    Respond(conn, "405 Method Not Allowed", healthz ? "Allow: GET, HEAD\r\n" : "Allow: GET\r\n", "", false);
    return 405;
  }
  if (!healthz) return 0;
  const MetricsEndpoint* endpoint = Find(mg_get_context(conn));
  const bool ok = endpoint != nullptr && endpoint->Ready();
  Respond(conn, ok ? "200 OK" : "503 Service Unavailable", "", ok ? "ok\n" : "not ready\n", method == "GET");
  return ok ? 200 : 503;
}

// Errors civetweb finds itself (a request too large or not HTTP): our own
// minimal response instead of its error page (see Respond).
int HttpError(mg_connection* conn, int status, const char* /*errmsg*/) {
  const std::string line = absl::StrCat(status, status == 431   ? " Request Header Fields Too Large"
                                                : status == 413 ? " Payload Too Large"
                                                : status == 408 ? " Request Timeout"
                                                : status >= 500 ? " Internal Server Error"
                                                                : " Bad Request");
  Respond(conn, line, "", absl::StrCat(line, "\n"), true);
  return 0;  // Handled: civetweb sends nothing more.
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
  callbacks.http_error = HttpError;
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
