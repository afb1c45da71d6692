#include "lcd/server/server_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace lcd::server {
namespace {

// Latency buckets in the spirit of vLLM's: fine below 100 ms where token
// latencies live, coarse up to a minute for whole requests.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3,
      0.5,   0.75,   1.0,   2.5,  5.0,   7.5,  10.0,  20.0, 40.0, 60.0};
  return b;
}

// 1, 2, 4, ..., 4096.
prometheus::Histogram::BucketBoundaries PowersOfTwo(int count) {
  prometheus::Histogram::BucketBoundaries b;
  for (int i = 0; i < count; ++i) b.push_back(static_cast<double>(1 << i));
  return b;
}

prometheus::Family<prometheus::Counter>& Counter(prometheus::Registry& r, const char* name,
                                                 const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}
prometheus::Family<prometheus::Gauge>& Gauge(prometheus::Registry& r, const char* name,
                                             const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}
prometheus::Family<prometheus::Histogram>& Histogram(prometheus::Registry& r, const char* name,
                                                     const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r);
}

std::map<std::string, std::string> Labels(const std::string& model, const std::string& version) {
  return {{"model", model}, {"version", version}};
}

}  // namespace

// The engine's hooks; children are resolved once, so the engine thread then
// only touches atomics.
class MetricsObserver final : public runtime::EngineObserver {
 public:
  MetricsObserver(ServerMetrics* m, const std::string& model, const std::string& version)
      : batch_size_(m->batch_size_.Add(Labels(model, version), BatchSizeBuckets())),
        iteration_tokens_(m->iteration_tokens_.Add(Labels(model, version), PowersOfTwo(13))),
        ttft_(m->ttft_.Add(Labels(model, version), LatencyBuckets())),
        itl_(m->itl_.Add(Labels(model, version), LatencyBuckets())),
        e2e_(m->request_duration_.Add(Labels(model, version), LatencyBuckets())),
        queue_(m->queue_time_.Add(Labels(model, version), LatencyBuckets())),
        prompt_tokens_(m->prompt_tokens_.Add(Labels(model, version))),
        generation_tokens_(m->generation_tokens_.Add(Labels(model, version))),
        preemptions_(m->preemptions_.Add(Labels(model, version))) {}

  static prometheus::Histogram::BucketBoundaries BatchSizeBuckets() {
    return {1, 2, 4, 8, 16, 32, 64, 128, 256};
  }

  void OnIteration(int64_t num_seqs, int64_t num_tokens, absl::Duration) override {
    batch_size_.Observe(static_cast<double>(num_seqs));
    iteration_tokens_.Observe(static_cast<double>(num_tokens));
  }
  void OnFirstToken(absl::Duration ttft) override { ttft_.Observe(absl::ToDoubleSeconds(ttft)); }
  void OnToken(absl::Duration itl) override { itl_.Observe(absl::ToDoubleSeconds(itl)); }
  void OnRequestFinished(runtime::FinishReason, int64_t prompt_tokens, int64_t completion_tokens,
                         absl::Duration e2e, absl::Duration queue_time) override {
    prompt_tokens_.Increment(static_cast<double>(prompt_tokens));
    generation_tokens_.Increment(static_cast<double>(completion_tokens));
    e2e_.Observe(absl::ToDoubleSeconds(e2e));
    queue_.Observe(absl::ToDoubleSeconds(queue_time));
  }
  void OnPreemption() override { preemptions_.Increment(); }

 private:
  prometheus::Histogram& batch_size_;
  prometheus::Histogram& iteration_tokens_;
  prometheus::Histogram& ttft_;
  prometheus::Histogram& itl_;
  prometheus::Histogram& e2e_;
  prometheus::Histogram& queue_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  prometheus::Counter& preemptions_;
};

ServerMetrics::ServerMetrics(prometheus::Registry& r)
    : requests_total_(Counter(r, "lcd_requests_total",
                              "Finished generation requests by model and final status.")),
      request_duration_(Histogram(r, "lcd_request_duration_seconds",
                                  "End-to-end request latency in the engine.")),
      queue_time_(Histogram(r, "lcd_request_queue_seconds",
                            "Time from submission to first scheduling.")),
      ttft_(Histogram(r, "lcd_time_to_first_token_seconds",
                      "Time from submission to the first generated token.")),
      itl_(Histogram(r, "lcd_inter_token_latency_seconds",
                     "Time between consecutive generated tokens of a request.")),
      prompt_tokens_(Counter(r, "lcd_prompt_tokens_total", "Prompt tokens processed.")),
      generation_tokens_(Counter(r, "lcd_generation_tokens_total", "Tokens generated.")),
      running_(Gauge(r, "lcd_requests_running", "Requests in the running batch.")),
      waiting_(Gauge(r, "lcd_requests_waiting", "Requests waiting to be scheduled.")),
      kv_usage_(Gauge(r, "lcd_kv_cache_usage_ratio", "Fraction of KV cache blocks in use.")),
      model_info_(Gauge(r, "lcd_model_info", "1 for each model version serving, with its quantization.")),
      batch_size_(Histogram(r, "lcd_batch_size", "Sequences per engine iteration.")),
      iteration_tokens_(Histogram(r, "lcd_iteration_tokens", "Tokens per engine iteration.")),
      model_load_(Histogram(r, "lcd_model_load_seconds", "Time to load a model.")),
      preemptions_(Counter(r, "lcd_preemptions_total",
                           "Sequences preempted for lack of KV blocks.")),
      versions_refused_(Counter(r, "lcd_model_versions_refused_total",
                                "New artifact versions that failed to load; the old one kept serving.")) {}

std::unique_ptr<runtime::EngineObserver> ServerMetrics::NewObserver(const std::string& model,
                                                                     const std::string& version) {
  return std::make_unique<MetricsObserver>(this, model, version);
}

void ServerMetrics::RecordRequest(const std::string& model, const std::string& version, const std::string& status) {
  requests_total_.Add({{"model", model}, {"version", version}, {"status", status}}).Increment();
}

void ServerMetrics::RecordModelLoad(const std::string& model, double seconds) {
  model_load_
      .Add({{"model", model}},
           prometheus::Histogram::BucketBoundaries{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600})
      .Observe(seconds);
}

void ServerMetrics::RecordVersionRefused(const std::string& model) {
  versions_refused_.Add({{"model", model}}).Increment();
}

void ServerMetrics::RecordEngineStats(const std::string& model, const std::string& version,
                                      const runtime::EngineStats& s) {
  running_.Add(Labels(model, version)).Set(static_cast<double>(s.running));
  waiting_.Add(Labels(model, version)).Set(static_cast<double>(s.waiting));
  kv_usage_.Add(Labels(model, version))
      .Set(s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total
                                 : 0.0);
}

void ServerMetrics::RecordServing(const std::string& model, const std::string& version, const std::string& method,
                                  int bits, int group_size) {
  prometheus::Gauge& g = model_info_.Add({{"model", model},
                                          {"version", version},
                                          {"method", method},
                                          {"bits", std::to_string(bits)},
                                          {"group_size", std::to_string(group_size)}});
  g.Set(1);
  // The refusal counter exists (at 0) from the first version on, so that
  // rate()/increase() see the first refusal.
  versions_refused_.Add({{"model", model}});
  absl::MutexLock lock(&info_mu_);
  info_[{model, version}] = &g;
}

void ServerMetrics::ForgetVersion(const std::string& model, const std::string& version) {
  for (GaugeFamily* f : {&running_, &waiting_, &kv_usage_}) {
    if (f->Has(Labels(model, version))) f->Remove(&f->Add(Labels(model, version)));
  }
  absl::MutexLock lock(&info_mu_);
  auto it = info_.find({model, version});
  if (it != info_.end()) {
    model_info_.Remove(it->second);
    info_.erase(it);
  }
}

}  // namespace lcd::server
