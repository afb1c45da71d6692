// The Prometheus text format writer: exact output for each metric type,
// escaping, cumulative histogram buckets, and concurrent updates.
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd/server/metrics.h"

namespace lcd::server {
namespace {

using ::testing::HasSubstr;

TEST(MetricsText, CounterWithLabels) {
  Registry r;
  auto& c = r.AddCounter("lcd_requests_total", "Finished requests.", {"model", "status"});
  c.WithLabels({"tiny", "ok"}).Increment();
  c.WithLabels({"tiny", "ok"}).Increment(2);
  c.WithLabels({"big", "error"}).Increment(0.5);
  c.WithLabels({"big", "error"}).Increment(-3);  // Ignored: counters never go down.
  EXPECT_EQ(r.Render(),
            "# HELP lcd_requests_total Finished requests.\n"
            "# TYPE lcd_requests_total counter\n"
            "lcd_requests_total{model=\"big\",status=\"error\"} 0.5\n"
            "lcd_requests_total{model=\"tiny\",status=\"ok\"} 3\n");
}

TEST(MetricsText, GaugeWithoutLabels) {
  Registry r;
  auto& g = r.AddGauge("lcd_requests_running", "Running.");
  g.Get().Set(7);
  g.Get().Add(-2.25);
  EXPECT_EQ(r.Render(),
            "# HELP lcd_requests_running Running.\n"
            "# TYPE lcd_requests_running gauge\n"
            "lcd_requests_running 4.75\n");
}

TEST(MetricsText, HistogramCumulativeWithInf) {
  Registry r;
  auto& h = r.AddHistogram("lcd_batch_size", "Sequences per iteration.", {"model"}, {1, 2, 4});
  auto& child = h.WithLabels({"m"});
  for (double v : {1.0, 1.0, 2.0, 3.0, 4.0, 9.0}) child.Observe(v);
  EXPECT_EQ(r.Render(),
            "# HELP lcd_batch_size Sequences per iteration.\n"
            "# TYPE lcd_batch_size histogram\n"
            "lcd_batch_size_bucket{model=\"m\",le=\"1\"} 2\n"
            "lcd_batch_size_bucket{model=\"m\",le=\"2\"} 3\n"
            "lcd_batch_size_bucket{model=\"m\",le=\"4\"} 5\n"
            "lcd_batch_size_bucket{model=\"m\",le=\"+Inf\"} 6\n"
            "lcd_batch_size_sum{model=\"m\"} 20\n"
            "lcd_batch_size_count{model=\"m\"} 6\n");
}

TEST(MetricsText, HistogramWithoutLabelsAndFractionalBounds) {
  Registry r;
  auto& h = r.AddHistogram("lat_seconds", "Latency.", {}, {0.005, 0.25});
  h.Get().Observe(0.005);  // Inclusive upper bound.
  h.Get().Observe(0.3);
  const std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{le=\"0.005\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{le=\"0.25\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{le=\"+Inf\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_sum 0.305\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_count 2\n"));
}

TEST(MetricsText, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(EscapeHelp("line1\nback\\slash \"quoted\""), "line1\\nback\\\\slash \"quoted\"");
  Registry r;
  r.AddCounter("x_total", "Help with\nnewline.", {"path"})
      .WithLabels({"C:\\dir\"q\"\n"})
      .Increment();
  EXPECT_EQ(r.Render(),
            "# HELP x_total Help with\\nnewline.\n"
            "# TYPE x_total counter\n"
            "x_total{path=\"C:\\\\dir\\\"q\\\"\\n\"} 1\n");
}

TEST(MetricsText, FormatsSpecialValues) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(1e-9), "1e-09");
  EXPECT_EQ(FormatValue(123456789.0), "123456789");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatValue(0.0 / 0.0), "NaN");
  EXPECT_EQ(std::stod(FormatValue(0.1 + 0.2)), 0.1 + 0.2);  // Round-trips exactly.
}

TEST(MetricsText, FamilyWithoutChildrenRendersHeaderOnly) {
  Registry r;
  r.AddCounter("a_total", "A.", {"model"});
  r.AddGauge("b", "B.");
  EXPECT_EQ(r.Render(), "# HELP a_total A.\n# TYPE a_total counter\n# HELP b B.\n# TYPE b gauge\n");
}

TEST(MetricsText, ConcurrentUpdatesAreNotLost) {
  Registry r;
  auto& c = r.AddCounter("c_total", "C.", {"k"});
  auto& h = r.AddHistogram("h", "H.", {}, {0.5});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        c.WithLabels({t % 2 ? "odd" : "even"}).Increment();
        h.Get().Observe(i % 2 ? 1.0 : 0.0);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(c.WithLabels({"odd"}).value(), 20000);
  EXPECT_EQ(c.WithLabels({"even"}).value(), 20000);
  EXPECT_EQ(h.Get().count(), 40000u);
  EXPECT_EQ(h.Get().bucket_count(0), 20000u);
  EXPECT_EQ(h.Get().sum(), 20000.0);
}

TEST(MetricsTextDeathTest, ProgrammerErrorsAbort) {
  Registry r;
  EXPECT_DEATH(r.AddCounter("bad-name", "x"), "bad metric name");
  r.AddCounter("dup_total", "x");
  EXPECT_DEATH(r.AddGauge("dup_total", "x"), "registered twice");
  EXPECT_DEATH(r.AddHistogram("h2", "x", {"le"}, {1}), "reserved");
  EXPECT_DEATH(r.AddHistogram("h3", "x", {}, {2, 1}), "must increase");
  auto& f = r.AddCounter("f_total", "x", {"a", "b"});
  EXPECT_DEATH(f.WithLabels({"only-one"}), "label values");
}

TEST(MetricsText, Buckets) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(LinearBuckets(0.5, 1, 3), (std::vector<double>{0.5, 1.5, 2.5}));
}

}  // namespace
}  // namespace lcd::server
