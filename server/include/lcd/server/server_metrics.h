// The daemon's metric set, named in the conventions of vLLM/TGI with an lcd_
// prefix, and the EngineObserver that feeds it from each engine thread.
//
//   lcd_requests_total{model,version,status}    counter  finished requests by status
//                                                        (ok|cancelled|error|rejected)
//   lcd_request_duration_seconds{model,version} histogram end-to-end latency
//   lcd_request_queue_seconds{model,version}    histogram submit -> first scheduled
//   lcd_time_to_first_token_seconds{model,version} histogram
//   lcd_inter_token_latency_seconds{model,version} histogram
//   lcd_prompt_tokens_total{model,version}      counter
//   lcd_generation_tokens_total{model,version}  counter
//   lcd_requests_running{model,version}         gauge    (sampled from Engine::Stats)
//   lcd_requests_waiting{model,version}         gauge
//   lcd_kv_cache_usage_ratio{model,version}     gauge    used / total KV blocks, 0..1
//   lcd_batch_size{model,version}               histogram sequences per engine iteration
//   lcd_iteration_tokens{model,version}         histogram tokens per engine iteration
//   lcd_preemptions_total{model,version}        counter
//   lcd_model_info{model,version,method,bits,group_size} gauge 1 per version serving
//   lcd_model_load_seconds{model}               histogram
//   lcd_model_versions_refused_total{model}     counter
//
// `version` is the model version that served (ModelInstance::version: the
// artifact store's version number, or "load-<n>"); a request refused before
// it reached a model has version="". A version's gauges (running, waiting,
// KV usage, info) are removed when it is retired (ForgetVersion), so a
// dashboard's "current" series are the serving ones; its counters and
// histograms stay, as Prometheus expects of cumulative series.
//
// Every family is a prometheus-cpp one in the Registry given; the Exposer
// (metrics_endpoint.h) serves it. tests/server/server_metrics_test.cc pins
// the names, types and label names above (dashboards depend on them).
//
// Thread safety: all methods are thread-safe (prometheus-cpp's guarantees:
// Family::Add locks, metric updates are atomic).
#ifndef LCD_SERVER_SERVER_METRICS_H_
#define LCD_SERVER_SERVER_METRICS_H_

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lcd/runtime/engine.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace lcd::server {

class ServerMetrics {
 public:
  // Adds the families to `registry` (not owned; must outlive this).
  explicit ServerMetrics(prometheus::Registry& registry);

  // An observer recording engine events under labels model, version. Owned
  // by the caller, who must keep it alive as long as the engine using it.
  std::unique_ptr<runtime::EngineObserver> NewObserver(const std::string& model, const std::string& version);

  // A request that ended at the gRPC layer: `status` is one of ok,
  // cancelled, error, rejected (refused before reaching the engine; then
  // version is "").
  void RecordRequest(const std::string& model, const std::string& version, const std::string& status);
  void RecordModelLoad(const std::string& model, double seconds);
  // A new artifact version of `model` the watcher could not load (corrupt,
  // incomplete, over the memory budget); the old version kept serving.
  void RecordVersionRefused(const std::string& model);
  // Samples the engine's gauges (called periodically and on scrape).
  void RecordEngineStats(const std::string& model, const std::string& version, const runtime::EngineStats& stats);
  // lcd_model_info = 1 for a version that became READY.
  void RecordServing(const std::string& model, const std::string& version, const std::string& method, int bits,
                     int group_size);
  // A retired version: its gauges (running, waiting, KV usage, info) go.
  void ForgetVersion(const std::string& model, const std::string& version);

 private:
  friend class MetricsObserver;
  using CounterFamily = prometheus::Family<prometheus::Counter>;
  using GaugeFamily = prometheus::Family<prometheus::Gauge>;
  using HistogramFamily = prometheus::Family<prometheus::Histogram>;

  CounterFamily& requests_total_;
  HistogramFamily& request_duration_;
  HistogramFamily& queue_time_;
  HistogramFamily& ttft_;
  HistogramFamily& itl_;
  CounterFamily& prompt_tokens_;
  CounterFamily& generation_tokens_;
  GaugeFamily& running_;
  GaugeFamily& waiting_;
  GaugeFamily& kv_usage_;
  GaugeFamily& model_info_;
  HistogramFamily& batch_size_;
  HistogramFamily& iteration_tokens_;
  HistogramFamily& model_load_;
  CounterFamily& preemptions_;
  CounterFamily& versions_refused_;
  absl::Mutex info_mu_;
  // The lcd_model_info child of each serving (model, version).
  std::map<std::pair<std::string, std::string>, prometheus::Gauge*> info_ ABSL_GUARDED_BY(info_mu_);
};

}  // namespace lcd::server

#endif  // LCD_SERVER_SERVER_METRICS_H_
