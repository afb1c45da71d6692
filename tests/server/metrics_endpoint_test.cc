// The /metrics and /healthz endpoint (prometheus-cpp's Exposer on civetweb)
// over real sockets: status codes, content, refusal of oversized or garbage
// requests, bind errors, and that idle ("slowloris") connections cannot
// starve scrapes and probes.
#include "lcd/server/metrics_endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lcd::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A connected TCP socket to 127.0.0.1:port with a receive timeout, or -1.
int Connect(int port, int recv_timeout_s = 10) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{recv_timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// Sends `request` raw and returns everything the server wrote back until it
// closed the connection (the endpoint closes after each response).
std::string RawRequest(int port, const std::string& request) {
  const int fd = Connect(port);
  if (fd < 0) return "connect failed";
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string Get(int port, const std::string& path) {
  return RawRequest(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
}

// One endpoint for the suite: civetweb takes about 2 s to stop (its accept
// loop polls in 2 s quanta), so each test starting its own would add that.
class MetricsEndpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    registry_ = new std::shared_ptr<prometheus::Registry>(std::make_shared<prometheus::Registry>());
    prometheus::BuildCounter()
        .Name("lcd_requests_total")
        .Help("Requests.")
        .Register(**registry_)
        .Add({{"model", "tiny"}, {"status", "ok"}})
        .Increment(3);
    auto s = MetricsEndpoint::Start("127.0.0.1", 0, *registry_, [] { return ready_.load(); });
    ASSERT_TRUE(s.ok()) << s.status();
    endpoint_ = s->release();
  }
  static void TearDownTestSuite() {
    delete endpoint_;
    delete registry_;
  }
  void SetUp() override {
    ASSERT_NE(endpoint_, nullptr);
    ASSERT_GT(endpoint_->port(), 0);
    ready_ = false;
  }
  static std::shared_ptr<prometheus::Registry>* registry_;
  static std::atomic<bool> ready_;
  static MetricsEndpoint* endpoint_;
};
std::shared_ptr<prometheus::Registry>* MetricsEndpointTest::registry_ = nullptr;
std::atomic<bool> MetricsEndpointTest::ready_{false};
MetricsEndpoint* MetricsEndpointTest::endpoint_ = nullptr;

TEST_F(MetricsEndpointTest, ServesMetrics) {
  const std::string r = Get(endpoint_->port(), "/metrics");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(r, HasSubstr("Content-Type: text/plain"));
  EXPECT_THAT(r, HasSubstr("# TYPE lcd_requests_total counter\n"));
  EXPECT_THAT(r, HasSubstr("lcd_requests_total{model=\"tiny\",status=\"ok\"} 3\n"));
}

TEST_F(MetricsEndpointTest, HealthzFollowsReadiness) {
  const std::string down = Get(endpoint_->port(), "/healthz");
  EXPECT_THAT(down, StartsWith("HTTP/1.1 503"));
  EXPECT_THAT(down, HasSubstr("\r\n\r\nnot ready\n"));
  ready_ = true;
  const std::string up = Get(endpoint_->port(), "/healthz");
  EXPECT_THAT(up, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(up, HasSubstr("\r\n\r\nok\n"));
  const std::string head = RawRequest(endpoint_->port(), "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(head, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(head, Not(HasSubstr("ok\n")));
}

TEST_F(MetricsEndpointTest, OtherPathsAndMethods) {
  EXPECT_THAT(Get(endpoint_->port(), "/nope"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Get(endpoint_->port(), "/nope"), HasSubstr("the paths are /metrics and /healthz"));
  EXPECT_THAT(Get(endpoint_->port(), "/"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(RawRequest(endpoint_->port(),
                         "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
              StartsWith("HTTP/1.1 405"));
  EXPECT_THAT(RawRequest(endpoint_->port(),
                         "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
              StartsWith("HTTP/1.1 405"));
}

TEST_F(MetricsEndpointTest, RefusesOversizedAndGarbageRequests) {
  const std::string huge_header =
      "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(100000, 'a') + "\r\n\r\n";
  // Our own minimal error responses (civetweb's error pages overflow its
  // worker stack): a 4xx status line, never a crash.
  EXPECT_THAT(RawRequest(endpoint_->port(), huge_header), StartsWith("HTTP/1.1 4"));
  EXPECT_THAT(RawRequest(endpoint_->port(), "\x01\x02garbage\r\n\r\n"), StartsWith("HTTP/1.1 4"));
  // Still serving afterwards.
  EXPECT_THAT(Get(endpoint_->port(), "/metrics"), StartsWith("HTTP/1.1 200"));
}

// Idle connections that never send a byte: 32 of them (4x the old server's
// whole pool) cost a scrape and a probe nothing.
TEST_F(MetricsEndpointTest, SlowClientsDoNotStarveScrapes) {
  std::vector<int> idle;
  for (int i = 0; i < 32; ++i) idle.push_back(Connect(endpoint_->port()));
  for (int fd : idle) ASSERT_GE(fd, 0);
  ::usleep(200 * 1000);  // Let the server accept them all.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THAT(Get(endpoint_->port(), "/metrics"), StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(Get(endpoint_->port(), "/healthz"), StartsWith("HTTP/1.1 503"));
  // Loopback requests take milliseconds; 1 s is far below the 3 s request
  // timeout, so these were not served by waiting the idle ones out.
  EXPECT_LT(SecondsSince(t0), 1.0);
  for (int fd : idle) ::close(fd);
}

// More idle connections than worker threads: each is dropped after the
// request timeout, which bounds how long a scrape can be held up.
TEST_F(MetricsEndpointTest, IdleConnectionsAreClosedAfterTheRequestTimeout) {
  const double timeout_s = MetricsEndpoint::kRequestTimeoutMs / 1000.0;
  std::vector<int> idle;
  for (int i = 0; i < MetricsEndpoint::kHttpThreads + 16; ++i) {
    idle.push_back(Connect(endpoint_->port()));
    ASSERT_GE(idle.back(), 0);
  }
  ::usleep(200 * 1000);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THAT(Get(endpoint_->port(), "/metrics"), StartsWith("HTTP/1.1 200"));
  EXPECT_LT(SecondsSince(t0), timeout_s + 2.0);
  // The first idle connection was closed by the server (recv sees EOF, not
  // our 10 s receive timeout) within the request timeout plus slack.
  char c;
  t0 = std::chrono::steady_clock::now();
  EXPECT_LE(::recv(idle.front(), &c, 1, 0), 0);
  EXPECT_LT(SecondsSince(t0), timeout_s + 2.0);
  for (int fd : idle) ::close(fd);
}

TEST(MetricsEndpoint, BadPortAndBusyPort) {
  auto registry = std::make_shared<prometheus::Registry>();
  EXPECT_EQ(MetricsEndpoint::Start("127.0.0.1", 70000, registry, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A port held by another listener is refused.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto busy = MetricsEndpoint::Start("127.0.0.1", ntohs(addr.sin_port), registry, {});
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kUnavailable);
  ::close(fd);
  auto a = MetricsEndpoint::Start("127.0.0.1", 0, registry, {});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(Get((*a)->port(), "/healthz"), StartsWith("HTTP/1.1 200"));  // No callback: ready.
  (*a)->Stop();
  (*a)->Stop();  // Idempotent.
}

// Two endpoints in one process each answer /healthz from their own callback.
TEST(MetricsEndpoint, TwoEndpointsKeepTheirOwnReadiness) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto up = MetricsEndpoint::Start("127.0.0.1", 0, registry, [] { return true; });
  auto down = MetricsEndpoint::Start("127.0.0.1", 0, registry, [] { return false; });
  ASSERT_TRUE(up.ok() && down.ok());
  EXPECT_THAT(Get((*up)->port(), "/healthz"), StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(Get((*down)->port(), "/healthz"), StartsWith("HTTP/1.1 503"));
}

}  // namespace
}  // namespace lcd::server
