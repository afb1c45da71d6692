// The daemon's metric set, named in the conventions of vLLM/TGI with an lcd_
// prefix, and the EngineObserver that feeds it from each engine thread.
//
//   lcd_requests_total{model,status}            counter  finished requests by status
//                                                        (ok|cancelled|error|rejected)
//   lcd_request_duration_seconds{model}         histogram end-to-end latency
//   lcd_request_queue_seconds{model}            histogram submit -> first scheduled
//   lcd_time_to_first_token_seconds{model}      histogram
//   lcd_inter_token_latency_seconds{model}      histogram
//   lcd_prompt_tokens_total{model}              counter
//   lcd_generation_tokens_total{model}          counter
//   lcd_requests_running{model}                 gauge    (sampled from Engine::Stats)
//   lcd_requests_waiting{model}                 gauge
//   lcd_kv_cache_usage_ratio{model}             gauge    used / total KV blocks, 0..1
//   lcd_batch_size{model}                       histogram sequences per engine iteration
//   lcd_iteration_tokens{model}                 histogram tokens per engine iteration
//   lcd_model_load_seconds{model}               histogram
//   lcd_preemptions_total{model}                counter
//
// Every family is a prometheus-cpp one in the Registry given; the Exposer
// (metrics_endpoint.h) serves it. tests/server/server_metrics_test.cc pins
// the names, types and label names above (dashboards depend on them).
//
// Thread safety: all methods are thread-safe (prometheus-cpp's guarantees:
// Family::Add locks, metric updates are atomic).
#ifndef LCD_SERVER_SERVER_METRICS_H_
#define LCD_SERVER_SERVER_METRICS_H_

#include <memory>
#include <string>

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

  // An observer recording engine events under label model=`model`. Owned by
  // the caller, who must keep it alive as long as the engine using it.
  std::unique_ptr<runtime::EngineObserver> NewObserver(const std::string& model);

  // A request that ended at the gRPC layer: `status` is one of ok,
  // cancelled, error, rejected (refused before reaching the engine).
  void RecordRequest(const std::string& model, const std::string& status);
  void RecordModelLoad(const std::string& model, double seconds);
  // A new artifact version of `model` the watcher could not load (corrupt,
  // incomplete, over the memory budget); the old version kept serving.
  void RecordVersionRefused(const std::string& model);
  // Samples the engine's gauges (called periodically and on scrape).
  void RecordEngineStats(const std::string& model, const runtime::EngineStats& stats);

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
  HistogramFamily& batch_size_;
  HistogramFamily& iteration_tokens_;
  HistogramFamily& model_load_;
  CounterFamily& preemptions_;
  CounterFamily& versions_refused_;
};

}  // namespace lcd::server

#endif  // LCD_SERVER_SERVER_METRICS_H_
