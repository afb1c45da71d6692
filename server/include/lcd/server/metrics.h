// A small metrics library: counters, gauges and histograms with labels,
// collected in a Registry that renders the Prometheus text exposition format
// version 0.0.4 (what GET /metrics serves; see metrics_http.h).
//
//   Registry registry;
//   CounterFamily& requests = registry.AddCounter(
//       "lcd_requests_total", "Finished requests.", {"model", "status"});
//   requests.WithLabels({"tiny", "ok"}).Increment();
//   std::string text = registry.Render();
//
// Names: metric and label names must match [a-zA-Z_:][a-zA-Z0-9_:]* (labels:
// no ':' and no leading "__"); a bad name, a duplicate family name, or a
// label-value count that differs from the family's label names is a
// programmer error (LCD_CHECK), never user input.
//
// Thread safety: every method of every class here is thread-safe. Updating a
// metric is lock-free (atomics); WithLabels takes the family's lock only to
// find or create the child, so hot paths should keep the returned reference
// (children live as long as the Registry and never move).
#ifndef LCD_SERVER_METRICS_H_
#define LCD_SERVER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace lcd::server {

// Monotonically increasing value (resets only when the process restarts).
class Counter {
 public:
  // `v` must be >= 0; negative increments are ignored (a counter never goes
  // down, and Prometheus' rate() would read a decrease as a reset).
  void Increment(double v = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into buckets with fixed upper bounds (le), plus their
// sum and count. Rendering makes the bucket counts cumulative and adds the
// +Inf bucket, as the format requires.
class Histogram {
 public:
  // `bounds` must be strictly increasing and finite (CHECKed).
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);

  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative count of bucket i (i == bounds().size() is the overflow).
  uint64_t bucket_count(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1 entries.
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

// Bucket bounds helpers.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
std::vector<double> LinearBuckets(double start, double width, int count);

// A named metric with a fixed set of label names and one child per distinct
// label-value tuple. T is Counter, Gauge or Histogram.
template <typename T>
class Family {
 public:
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // The child for these label values (created at zero on first use). The
  // number of values must equal label_names().size().
  T& WithLabels(const std::vector<std::string>& values);
  // For a family without labels.
  T& Get() { return WithLabels({}); }

  // Snapshot of children, ordered by label values (for rendering).
  std::vector<std::pair<std::vector<std::string>, const T*>> Children() const;

 private:
  friend class Registry;
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bounds)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        bounds_(std::move(bounds)) {}

  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // Histograms only.
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// Owns the families and renders them. Families are rendered in the order
// they were added.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  CounterFamily& AddCounter(std::string name, std::string help,
                            std::vector<std::string> label_names = {});
  GaugeFamily& AddGauge(std::string name, std::string help,
                        std::vector<std::string> label_names = {});
  // A label named "le" is reserved for histograms and refused.
  HistogramFamily& AddHistogram(std::string name, std::string help,
                                std::vector<std::string> label_names, std::vector<double> bounds);

  // The text exposition format 0.0.4: for each family "# HELP" and "# TYPE"
  // lines, then one sample line per child (histograms: name_bucket{...,le="x"}
  // cumulative up to le="+Inf", name_sum, name_count). Families without
  // children render only their HELP/TYPE lines.
  std::string Render() const;

  // The Content-Type to serve Render()'s output with.
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  void CheckNewFamily(const std::string& name, const std::vector<std::string>& labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  struct Entry {
    enum class Kind { kCounter, kGauge, kHistogram } kind;
    std::unique_ptr<CounterFamily> counter;
    std::unique_ptr<GaugeFamily> gauge;
    std::unique_ptr<HistogramFamily> histogram;
  };
  mutable absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
};

// Text-format helpers, exposed for tests.
// Label values: backslash, double quote and newline are escaped.
std::string EscapeLabelValue(std::string_view v);
// HELP text: backslash and newline are escaped.
std::string EscapeHelp(std::string_view v);
// Sample values: shortest round-trip decimal, "+Inf", "-Inf", "NaN".
std::string FormatValue(double v);

}  // namespace lcd::server

#endif  // LCD_SERVER_METRICS_H_
