// The daemon's metric set on prometheus-cpp: every name, type and label name
// the server exported before the move to prometheus-cpp (dashboards and
// alerts depend on them), and the values the observer and the Record*
// calls produce, read back through prometheus-cpp's text serializer.
#include "lcd/server/server_metrics.h"

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lcd::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Shape {
  prometheus::MetricType type;
  std::set<std::string> labels;
  bool operator==(const Shape& o) const { return type == o.type && labels == o.labels; }
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << "type " << static_cast<int>(s.type) << " labels {";
  for (const auto& l : s.labels) *os << l << ",";
  *os << "}";
}

std::string Text(prometheus::Registry& r) { return prometheus::TextSerializer().Serialize(r.Collect()); }

// Every family once, with one child each.
void Exercise(ServerMetrics& m) {
  auto obs = m.NewObserver("m", "3");
  obs->OnIteration(3, 17, absl::Milliseconds(5));
  obs->OnFirstToken(absl::Milliseconds(20));
  obs->OnToken(absl::Milliseconds(4));
  obs->OnRequestFinished(runtime::FinishReason::kLength, 11, 7, absl::Milliseconds(300),
                         absl::Milliseconds(2));
  obs->OnPreemption();
  m.RecordRequest("m", "3", "ok");
  m.RecordServing("m", "3", "lcd", 2, 64);
  m.RecordModelLoad("m", 1.5);
  m.RecordVersionRefused("m");
  runtime::EngineStats stats;
  stats.running = 2;
  stats.waiting = 5;
  stats.kv_blocks_used = 3;
  stats.kv_blocks_total = 12;
  m.RecordEngineStats("m", "3", stats);
}

TEST(ServerMetrics, KeepsEveryNameTypeAndLabel) {
  using T = prometheus::MetricType;
  const std::map<std::string, Shape> expected = {
      {"lcd_requests_total", {T::Counter, {"model", "version", "status"}}},
      {"lcd_model_info", {T::Gauge, {"model", "version", "method", "bits", "group_size"}}},
      {"lcd_request_duration_seconds", {T::Histogram, {"model", "version"}}},
      {"lcd_request_queue_seconds", {T::Histogram, {"model", "version"}}},
      {"lcd_time_to_first_token_seconds", {T::Histogram, {"model", "version"}}},
      {"lcd_inter_token_latency_seconds", {T::Histogram, {"model", "version"}}},
      {"lcd_prompt_tokens_total", {T::Counter, {"model", "version"}}},
      {"lcd_generation_tokens_total", {T::Counter, {"model", "version"}}},
      {"lcd_requests_running", {T::Gauge, {"model", "version"}}},
      {"lcd_requests_waiting", {T::Gauge, {"model", "version"}}},
      {"lcd_kv_cache_usage_ratio", {T::Gauge, {"model", "version"}}},
      {"lcd_batch_size", {T::Histogram, {"model", "version"}}},
      {"lcd_iteration_tokens", {T::Histogram, {"model", "version"}}},
      {"lcd_model_load_seconds", {T::Histogram, {"model"}}},
      {"lcd_model_versions_refused_total", {T::Counter, {"model"}}},
      {"lcd_preemptions_total", {T::Counter, {"model", "version"}}},
  };
  prometheus::Registry registry;
  ServerMetrics m(registry);
  Exercise(m);
  std::map<std::string, Shape> got;
  for (const auto& family : registry.Collect()) {
    ASSERT_EQ(family.metric.size(), 1u) << family.name;
    std::set<std::string> labels;
    for (const auto& l : family.metric[0].label) labels.insert(l.name);
    got[family.name] = {family.type, labels};
    EXPECT_FALSE(family.help.empty()) << family.name;
  }
  EXPECT_EQ(got, expected);
}

TEST(ServerMetrics, ValuesAndBuckets) {
  prometheus::Registry registry;
  ServerMetrics m(registry);
  Exercise(m);
  m.RecordRequest("m", "3", "ok");
  m.RecordRequest("other", "", "rejected");
  const std::string text = Text(registry);
  EXPECT_THAT(text, HasSubstr("lcd_requests_total{model=\"m\",status=\"ok\",version=\"3\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("lcd_requests_total{model=\"other\",status=\"rejected\",version=\"\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_prompt_tokens_total{model=\"m\",version=\"3\"} 11\n"));
  EXPECT_THAT(text, HasSubstr("lcd_generation_tokens_total{model=\"m\",version=\"3\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("lcd_preemptions_total{model=\"m\",version=\"3\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_requests_running{model=\"m\",version=\"3\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("lcd_requests_waiting{model=\"m\",version=\"3\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("lcd_kv_cache_usage_ratio{model=\"m\",version=\"3\"} 0.25\n"));
  // Cumulative buckets with the old bounds: batch of 3 is in le=4, not le=2.
  EXPECT_THAT(text, HasSubstr("lcd_batch_size_bucket{model=\"m\",version=\"3\",le=\"2\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("lcd_batch_size_bucket{model=\"m\",version=\"3\",le=\"4\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_batch_size_bucket{model=\"m\",version=\"3\",le=\"256\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_batch_size_bucket{model=\"m\",version=\"3\",le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_iteration_tokens_bucket{model=\"m\",version=\"3\",le=\"16\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("lcd_iteration_tokens_bucket{model=\"m\",version=\"3\",le=\"32\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_iteration_tokens_bucket{model=\"m\",version=\"3\",le=\"4096\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_time_to_first_token_seconds_bucket{model=\"m\",version=\"3\",le=\"0.025\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_time_to_first_token_seconds_bucket{model=\"m\",version=\"3\",le=\"0.01\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("lcd_request_duration_seconds_sum{model=\"m\",version=\"3\"} 0.3\n"));
  EXPECT_THAT(text, HasSubstr("lcd_model_load_seconds_bucket{model=\"m\",le=\"2.5\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_model_load_seconds_bucket{model=\"m\",le=\"1\"} 0\n"));
  // An empty KV cache reads 0, not NaN.
  m.RecordEngineStats("m", "3", runtime::EngineStats{});
  EXPECT_THAT(Text(registry), HasSubstr("lcd_kv_cache_usage_ratio{model=\"m\",version=\"3\"} 0\n"));
  EXPECT_THAT(Text(registry),
              HasSubstr("lcd_model_info{bits=\"2\",group_size=\"64\",method=\"lcd\",model=\"m\",version=\"3\"} 1\n"));
}

// A hot swap: version 4 serves, version 3 is retired. Its gauges (engine
// samples and info) go; its counters and histograms stay; version 4's
// series are its own.
TEST(ServerMetrics, RetiredVersionsLoseTheirGaugesOnly) {
  prometheus::Registry registry;
  ServerMetrics m(registry);
  Exercise(m);  // Version 3 of "m".
  auto obs4 = m.NewObserver("m", "4");
  obs4->OnRequestFinished(runtime::FinishReason::kLength, 5, 2, absl::Milliseconds(10), absl::Milliseconds(1));
  m.RecordServing("m", "4", "lcd", 2, 64);
  m.RecordEngineStats("m", "4", runtime::EngineStats{});
  m.ForgetVersion("m", "3");
  m.ForgetVersion("m", "never-served");  // Unknown versions are a no-op.
  const std::string text = Text(registry);
  for (const char* gone : {"lcd_requests_running{model=\"m\",version=\"3\"}",
                           "lcd_requests_waiting{model=\"m\",version=\"3\"}",
                           "lcd_kv_cache_usage_ratio{model=\"m\",version=\"3\"}",
                           "lcd_model_info{bits=\"2\",group_size=\"64\",method=\"lcd\",model=\"m\",version=\"3\"}"}) {
    EXPECT_THAT(text, Not(HasSubstr(gone))) << gone;
  }
  EXPECT_THAT(text, HasSubstr("lcd_requests_total{model=\"m\",status=\"ok\",version=\"3\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_prompt_tokens_total{model=\"m\",version=\"3\"} 11\n"));
  EXPECT_THAT(text, HasSubstr("lcd_prompt_tokens_total{model=\"m\",version=\"4\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("lcd_requests_running{model=\"m\",version=\"4\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("method=\"lcd\",model=\"m\",version=\"4\"} 1\n"));
}

TEST(ServerMetrics, ConcurrentObserversLoseNothing) {
  prometheus::Registry registry;
  ServerMetrics m(registry);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&m, t] {
      auto obs = m.NewObserver(t % 2 ? "odd" : "even", "1");
      for (int i = 0; i < 5000; ++i) {
        obs->OnToken(absl::Milliseconds(1));
        m.RecordRequest(t % 2 ? "odd" : "even", "1", "ok");
      }
    });
  }
  for (auto& th : threads) th.join();
  const std::string text = Text(registry);
  EXPECT_THAT(text, HasSubstr("lcd_requests_total{model=\"odd\",status=\"ok\",version=\"1\"} 10000\n"));
  EXPECT_THAT(text, HasSubstr("lcd_requests_total{model=\"even\",status=\"ok\",version=\"1\"} 10000\n"));
  EXPECT_THAT(text, HasSubstr("lcd_inter_token_latency_seconds_count{model=\"odd\",version=\"1\"} 10000\n"));
}

}  // namespace
}  // namespace lcd::server
