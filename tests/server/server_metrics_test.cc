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
  auto obs = m.NewObserver("m");
  obs->OnIteration(3, 17, absl::Milliseconds(5));
  obs->OnFirstToken(absl::Milliseconds(20));
  obs->OnToken(absl::Milliseconds(4));
  obs->OnRequestFinished(runtime::FinishReason::kLength, 11, 7, absl::Milliseconds(300),
                         absl::Milliseconds(2));
  obs->OnPreemption();
  m.RecordRequest("m", "ok");
  m.RecordModelLoad("m", 1.5);
  m.RecordVersionRefused("m");
  runtime::EngineStats stats;
  stats.running = 2;
  stats.waiting = 5;
  stats.kv_blocks_used = 3;
  stats.kv_blocks_total = 12;
  m.RecordEngineStats("m", stats);
}

TEST(ServerMetrics, KeepsEveryNameTypeAndLabel) {
  using T = prometheus::MetricType;
  const std::map<std::string, Shape> expected = {
      {"lcd_requests_total", {T::Counter, {"model", "status"}}},
      {"lcd_request_duration_seconds", {T::Histogram, {"model"}}},
      {"lcd_request_queue_seconds", {T::Histogram, {"model"}}},
      {"lcd_time_to_first_token_seconds", {T::Histogram, {"model"}}},
      {"lcd_inter_token_latency_seconds", {T::Histogram, {"model"}}},
      {"lcd_prompt_tokens_total", {T::Counter, {"model"}}},
      {"lcd_generation_tokens_total", {T::Counter, {"model"}}},
      {"lcd_requests_running", {T::Gauge, {"model"}}},
      {"lcd_requests_waiting", {T::Gauge, {"model"}}},
      {"lcd_kv_cache_usage_ratio", {T::Gauge, {"model"}}},
      {"lcd_batch_size", {T::Histogram, {"model"}}},
      {"lcd_iteration_tokens", {T::Histogram, {"model"}}},
      {"lcd_model_load_seconds", {T::Histogram, {"model"}}},
      {"lcd_model_versions_refused_total", {T::Counter, {"model"}}},
      {"lcd_preemptions_total", {T::Counter, {"model"}}},
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
  m.RecordRequest("m", "ok");
  m.RecordRequest("other", "rejected");
  const std::string text = Text(registry);
  EXPECT_THAT(text, HasSubstr("lcd_requests_total{model=\"m\",status=\"ok\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("lcd_requests_total{model=\"other\",status=\"rejected\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_prompt_tokens_total{model=\"m\"} 11\n"));
  EXPECT_THAT(text, HasSubstr("lcd_generation_tokens_total{model=\"m\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("lcd_preemptions_total{model=\"m\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_requests_running{model=\"m\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("lcd_requests_waiting{model=\"m\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("lcd_kv_cache_usage_ratio{model=\"m\"} 0.25\n"));
  // Cumulative buckets with the old bounds: batch of 3 is in le=4, not le=2.
  EXPECT_THAT(text, HasSubstr("lcd_batch_size_bucket{model=\"m\",le=\"2\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("lcd_batch_size_bucket{model=\"m\",le=\"4\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_batch_size_bucket{model=\"m\",le=\"256\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_batch_size_bucket{model=\"m\",le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_iteration_tokens_bucket{model=\"m\",le=\"16\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("lcd_iteration_tokens_bucket{model=\"m\",le=\"32\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_iteration_tokens_bucket{model=\"m\",le=\"4096\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_time_to_first_token_seconds_bucket{model=\"m\",le=\"0.025\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_time_to_first_token_seconds_bucket{model=\"m\",le=\"0.01\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("lcd_request_duration_seconds_sum{model=\"m\"} 0.3\n"));
  EXPECT_THAT(text, HasSubstr("lcd_model_load_seconds_bucket{model=\"m\",le=\"2.5\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lcd_model_load_seconds_bucket{model=\"m\",le=\"1\"} 0\n"));
  // An empty KV cache reads 0, not NaN.
  m.RecordEngineStats("m", runtime::EngineStats{});
  EXPECT_THAT(Text(registry), HasSubstr("lcd_kv_cache_usage_ratio{model=\"m\"} 0\n"));
}

TEST(ServerMetrics, ConcurrentObserversLoseNothing) {
  prometheus::Registry registry;
  ServerMetrics m(registry);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&m, t] {
      auto obs = m.NewObserver(t % 2 ? "odd" : "even");
      for (int i = 0; i < 5000; ++i) {
        obs->OnToken(absl::Milliseconds(1));
        m.RecordRequest(t % 2 ? "odd" : "even", "ok");
      }
    });
  }
  for (auto& th : threads) th.join();
  const std::string text = Text(registry);
  EXPECT_THAT(text, HasSubstr("lcd_requests_total{model=\"odd\",status=\"ok\"} 10000\n"));
  EXPECT_THAT(text, HasSubstr("lcd_requests_total{model=\"even\",status=\"ok\"} 10000\n"));
  EXPECT_THAT(text, HasSubstr("lcd_inter_token_latency_seconds_count{model=\"odd\"} 10000\n"));
}

}  // namespace
}  // namespace lcd::server
