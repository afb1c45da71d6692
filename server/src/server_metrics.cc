#include "lcd/server/server_metrics.h"

#include "absl/time/time.h"

namespace lcd::server {
namespace {

// Latency buckets in the spirit of vLLM's: fine below 100 ms where token
// latencies live, coarse up to a minute for whole requests.
const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
                                        0.1,   0.15,   0.2,   0.3,  0.5,   0.75, 1.0,
                                        2.5,   5.0,    7.5,   10.0, 20.0,  40.0, 60.0};
  return b;
}

class MetricsObserver final : public runtime::EngineObserver {
 public:
  MetricsObserver(ServerMetrics* m, const std::string& model)
      : batch_size_(m->batch_size().WithLabels({model})),
        iteration_tokens_(m->iteration_tokens().WithLabels({model})),
        ttft_(m->ttft().WithLabels({model})),
        itl_(m->inter_token_latency().WithLabels({model})),
        e2e_(m->request_duration().WithLabels({model})),
        queue_(m->queue_time().WithLabels({model})),
        prompt_tokens_(m->prompt_tokens().WithLabels({model})),
        generation_tokens_(m->generation_tokens().WithLabels({model})),
        preemptions_(m->preemptions().WithLabels({model})) {}

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
  // Children resolved once: the engine thread then only touches atomics.
  Histogram& batch_size_;
  Histogram& iteration_tokens_;
  Histogram& ttft_;
  Histogram& itl_;
  Histogram& e2e_;
  Histogram& queue_;
  Counter& prompt_tokens_;
  Counter& generation_tokens_;
  Counter& preemptions_;
};

}  // namespace

ServerMetrics::ServerMetrics(Registry* r) {
  requests_total_ = &r->AddCounter("lcd_requests_total",
                                   "Finished generation requests by model and final status.",
                                   {"model", "status"});
  request_duration_ =
      &r->AddHistogram("lcd_request_duration_seconds", "End-to-end request latency in the engine.",
                       {"model"}, LatencyBuckets());
  queue_time_ =
      &r->AddHistogram("lcd_request_queue_seconds", "Time from submission to first scheduling.",
                       {"model"}, LatencyBuckets());
  ttft_ = &r->AddHistogram("lcd_time_to_first_token_seconds",
                           "Time from submission to the first generated token.", {"model"},
                           LatencyBuckets());
  itl_ = &r->AddHistogram("lcd_inter_token_latency_seconds",
                          "Time between consecutive generated tokens of a request.", {"model"},
                          LatencyBuckets());
  prompt_tokens_ = &r->AddCounter("lcd_prompt_tokens_total", "Prompt tokens processed.", {"model"});
  generation_tokens_ =
      &r->AddCounter("lcd_generation_tokens_total", "Tokens generated.", {"model"});
  running_ = &r->AddGauge("lcd_requests_running", "Requests in the running batch.", {"model"});
  waiting_ = &r->AddGauge("lcd_requests_waiting", "Requests waiting to be scheduled.", {"model"});
  kv_usage_ =
      &r->AddGauge("lcd_kv_cache_usage_ratio", "Fraction of KV cache blocks in use.", {"model"});
  batch_size_ = &r->AddHistogram("lcd_batch_size", "Sequences per engine iteration.", {"model"},
                                 {1, 2, 4, 8, 16, 32, 64, 128, 256});
  iteration_tokens_ = &r->AddHistogram("lcd_iteration_tokens", "Tokens per engine iteration.",
                                       {"model"}, ExponentialBuckets(1, 2, 13));
  model_load_ = &r->AddHistogram("lcd_model_load_seconds", "Time to load a model.", {"model"},
                                 {0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600});
  preemptions_ = &r->AddCounter("lcd_preemptions_total",
                                "Sequences preempted for lack of KV blocks.", {"model"});
}

std::unique_ptr<runtime::EngineObserver> ServerMetrics::NewObserver(const std::string& model) {
  return std::make_unique<MetricsObserver>(this, model);
}

void ServerMetrics::RecordRequest(const std::string& model, const std::string& status) {
  requests_total_->WithLabels({model, status}).Increment();
}

void ServerMetrics::RecordModelLoad(const std::string& model, double seconds) {
  model_load_->WithLabels({model}).Observe(seconds);
}

void ServerMetrics::RecordEngineStats(const std::string& model, const runtime::EngineStats& s) {
  running_->WithLabels({model}).Set(static_cast<double>(s.running));
  waiting_->WithLabels({model}).Set(static_cast<double>(s.waiting));
  kv_usage_->WithLabels({model}).Set(
      s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0.0);
}

}  // namespace lcd::server
