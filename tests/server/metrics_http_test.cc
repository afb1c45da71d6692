// The /metrics HTTP endpoint over a real socket: status codes, content type,
// body, and that oversized or garbage requests are refused without harm.
#include "lcd/server/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lcd::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Sends `request` raw and returns everything the server wrote back.
std::string RawRequest(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  // Read one response: headers, then Content-Length bytes of body. Not
  // waiting for the close keeps the test fast when the server keeps the
  // connection alive after an error response.
  std::string out;
  char buf[4096];
  size_t body_start = std::string::npos, content_length = 0;
  for (;;) {
    if (body_start == std::string::npos) {
      body_start = out.find("\r\n\r\n");
      if (body_start != std::string::npos) {
        body_start += 4;
        const size_t cl = out.find("Content-Length: ");
        if (cl != std::string::npos && cl < body_start) {
          content_length = std::stoul(out.substr(cl + 16));
        }
      }
    }
    if (body_start != std::string::npos && out.size() >= body_start + content_length) break;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string Get(int port, const std::string& path) {
  return RawRequest(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

class MetricsHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.AddCounter("lcd_requests_total", "Requests.", {"model", "status"})
        .WithLabels({"tiny", "ok"})
        .Increment(3);
    auto s = MetricsHttpServer::Start("127.0.0.1", 0, &registry_, [this] { return ready_.load(); });
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    ASSERT_GT(server_->port(), 0);
  }
  Registry registry_;
  std::atomic<bool> ready_{false};
  std::unique_ptr<MetricsHttpServer> server_;
};

TEST_F(MetricsHttpTest, ServesMetrics) {
  const std::string r = Get(server_->port(), "/metrics");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(r, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(r, HasSubstr("lcd_requests_total{model=\"tiny\",status=\"ok\"} 3\n"));
}

TEST_F(MetricsHttpTest, HealthzFollowsReadiness) {
  EXPECT_THAT(Get(server_->port(), "/healthz"), StartsWith("HTTP/1.1 503"));
  ready_ = true;
  EXPECT_THAT(Get(server_->port(), "/healthz"), StartsWith("HTTP/1.1 200"));
}

TEST_F(MetricsHttpTest, OtherPathsAndMethods) {
  EXPECT_THAT(Get(server_->port(), "/nope"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(RawRequest(server_->port(),
                         "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n"),
              StartsWith("HTTP/1.1 405"));
}

TEST_F(MetricsHttpTest, RefusesOversizedAndGarbageRequests) {
  const std::string huge_header =
      "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(100000, 'a') +
      "\r\nConnection: close\r\n\r\n";
  const std::string r1 = RawRequest(server_->port(), huge_header);
  EXPECT_THAT(r1, ::testing::Not(StartsWith("HTTP/1.1 200")));
  const std::string r2 =
      RawRequest(server_->port(),
                 "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                 "Connection: close\r\n\r\n" +
                     std::string(100000, 'b'));
  EXPECT_THAT(r2, ::testing::Not(StartsWith("HTTP/1.1 200")));
  RawRequest(server_->port(), "\x01\x02garbage\r\n\r\n");
  // Still serving afterwards.
  EXPECT_THAT(Get(server_->port(), "/metrics"), StartsWith("HTTP/1.1 200"));
}

TEST(MetricsHttp, BadPortAndBusyPort) {
  Registry registry;
  EXPECT_EQ(MetricsHttpServer::Start("127.0.0.1", 70000, &registry, {}).status().code(),
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
  auto b = MetricsHttpServer::Start("127.0.0.1", ntohs(addr.sin_port), &registry, {});
  EXPECT_EQ(b.status().code(), absl::StatusCode::kUnavailable);
  ::close(fd);
  auto a = MetricsHttpServer::Start("127.0.0.1", 0, &registry, {});
  ASSERT_TRUE(a.ok());
  (*a)->Stop();
  (*a)->Stop();  // Idempotent.
}

}  // namespace
}  // namespace lcd::server
