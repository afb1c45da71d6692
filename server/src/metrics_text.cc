// Metric types and the Prometheus text exposition format 0.0.4 writer.
// Reference: https://prometheus.io/docs/instrumenting/exposition_formats/
#include <charconv>
#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"
#include "lcd/server/metrics.h"

namespace lcd::server {
namespace {

bool IsValidName(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

// Atomic add on a double; std::atomic<double>::fetch_add is C++20 but a CAS
// loop keeps this portable to older libstdc++.
void AtomicAdd(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

// `{a="x",b="y"` without the closing brace, or "" when there are no labels
// and no extra label follows.
std::string LabelPairs(const std::vector<std::string>& names,
                       const std::vector<std::string>& values) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ",", names[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  return out;
}

std::string Braced(const std::string& pairs) { return pairs.empty() ? "" : "{" + pairs + "}"; }

}  // namespace

void Counter::Increment(double v) {
  if (!(v >= 0.0)) return;  // Also drops NaN.
  AtomicAdd(value_, v);
}

void Gauge::Add(double v) { AtomicAdd(value_, v); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    LCD_CHECK(std::isfinite(bounds_[i])) << "histogram bound " << i << " is not finite";
    LCD_CHECK(i == 0 || bounds_[i] > bounds_[i - 1]) << "histogram bounds must increase";
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  // Bucket i counts v <= bounds_[i] (Prometheus' "le" is inclusive).
  size_t i = 0;
  while (i < bounds_.size() && !(v <= bounds_[i])) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  LCD_CHECK(start > 0 && factor > 1 && count >= 1) << "bad exponential buckets";
  std::vector<double> out;
  for (int i = 0; i < count; ++i, start *= factor) out.push_back(start);
  return out;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  LCD_CHECK(width > 0 && count >= 1) << "bad linear buckets";
  std::vector<double> out;
  for (int i = 0; i < count; ++i) out.push_back(start + width * i);
  return out;
}

template <typename T>
T& Family<T>::WithLabels(const std::vector<std::string>& values) {
  LCD_CHECK(values.size() == label_names_.size())
      << name_ << ": " << values.size() << " label values for " << label_names_.size()
      << " label names";
  absl::MutexLock lock(&mu_);
  auto& slot = children_[values];
  if (slot == nullptr) {
    if constexpr (std::is_same_v<T, Histogram>) {
      slot = std::make_unique<Histogram>(bounds_);
    } else {
      slot = std::make_unique<T>();
    }
  }
  return *slot;
}

template <typename T>
std::vector<std::pair<std::vector<std::string>, const T*>> Family<T>::Children() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::vector<std::string>, const T*>> out;
  out.reserve(children_.size());
  for (const auto& [labels, child] : children_) out.emplace_back(labels, child.get());
  return out;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

void Registry::CheckNewFamily(const std::string& name, const std::vector<std::string>& labels) {
  LCD_CHECK(IsValidName(name, /*allow_colon=*/true)) << "bad metric name '" << name << "'";
  for (const auto& l : labels) {
    LCD_CHECK(IsValidName(l, /*allow_colon=*/false) && l.rfind("__", 0) != 0)
        << "bad label name '" << l << "' in " << name;
  }
  for (const auto& e : entries_) {
    const std::string& other = e.counter ? e.counter->name()
                               : e.gauge ? e.gauge->name()
                                         : e.histogram->name();
    LCD_CHECK(other != name) << "metric '" << name << "' registered twice";
  }
}

CounterFamily& Registry::AddCounter(std::string name, std::string help,
                                    std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  CheckNewFamily(name, label_names);
  Entry e{Entry::Kind::kCounter, nullptr, nullptr, nullptr};
  e.counter.reset(new CounterFamily(std::move(name), std::move(help), std::move(label_names), {}));
  entries_.push_back(std::move(e));
  return *entries_.back().counter;
}

GaugeFamily& Registry::AddGauge(std::string name, std::string help,
                                std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  CheckNewFamily(name, label_names);
  Entry e{Entry::Kind::kGauge, nullptr, nullptr, nullptr};
  e.gauge.reset(new GaugeFamily(std::move(name), std::move(help), std::move(label_names), {}));
  entries_.push_back(std::move(e));
  return *entries_.back().gauge;
}

HistogramFamily& Registry::AddHistogram(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  CheckNewFamily(name, label_names);
  for (const auto& l : label_names) LCD_CHECK(l != "le") << name << ": label 'le' is reserved";
  Histogram check(bounds);  // Validates the bounds now rather than at first use.
  Entry e{Entry::Kind::kHistogram, nullptr, nullptr, nullptr};
  e.histogram.reset(new HistogramFamily(std::move(name), std::move(help), std::move(label_names),
                                        std::move(bounds)));
  entries_.push_back(std::move(e));
  return *entries_.back().histogram;
}

std::string Registry::Render() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  auto header = [&out](const std::string& name, const std::string& help, const char* type) {
    absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(help), "\n# TYPE ", name, " ", type,
                    "\n");
  };
  for (const auto& e : entries_) {
    if (e.counter) {
      header(e.counter->name(), e.counter->help(), "counter");
      for (const auto& [values, c] : e.counter->Children()) {
        absl::StrAppend(&out, e.counter->name(),
                        Braced(LabelPairs(e.counter->label_names(), values)), " ",
                        FormatValue(c->value()), "\n");
      }
    } else if (e.gauge) {
      header(e.gauge->name(), e.gauge->help(), "gauge");
      for (const auto& [values, g] : e.gauge->Children()) {
        absl::StrAppend(&out, e.gauge->name(), Braced(LabelPairs(e.gauge->label_names(), values)),
                        " ", FormatValue(g->value()), "\n");
      }
    } else {
      const HistogramFamily& f = *e.histogram;
      header(f.name(), f.help(), "histogram");
      for (const auto& [values, h] : f.Children()) {
        const std::string pairs = LabelPairs(f.label_names(), values);
        const std::string sep = pairs.empty() ? "" : ",";
        // Read the buckets once; the cumulative sum makes +Inf consistent
        // with the buckets even while other threads observe concurrently.
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= h->bounds().size(); ++i) {
          cumulative += h->bucket_count(i);
          const std::string le = i < h->bounds().size() ? FormatValue(h->bounds()[i]) : "+Inf";
          absl::StrAppend(&out, f.name(), "_bucket{", pairs, sep, "le=\"", le, "\"} ", cumulative,
                          "\n");
        }
        absl::StrAppend(&out, f.name(), "_sum", Braced(pairs), " ", FormatValue(h->sum()), "\n");
        absl::StrAppend(&out, f.name(), "_count", Braced(pairs), " ", cumulative, "\n");
      }
    }
  }
  return out;
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

}  // namespace lcd::server
