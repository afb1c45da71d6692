// `lcd bench-serve`: a load generator for lcd-server in the manner of vLLM's
// benchmarks/benchmark_serving.py. C client threads each send GenerateStream
// requests back to back until N have been sent; every prompt is P random
// token ids and every request asks for exactly O new tokens (ignore_eos, no
// stop strings), so the work per request is fixed. Per request it measures
// TTFT (send -> first chunk carrying tokens), inter-token latency (each gap
// between token-carrying chunks divided evenly over the chunk's tokens),
// TPOT ((E2E - TTFT) / (O - 1)) and end-to-end latency, and reports totals,
// throughputs and mean/median/p90/p99 as a table and optionally JSON.
//
// Exit code 0 when every request succeeded, 1 when any failed (the report is
// still printed), 2 on bad flags.
#ifdef LCD_WITH_SERVER

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cxxopts.hpp"
#include "grpcpp/grpcpp.h"
#include "lcd/subcommand.h"
#include "lcd/v1/generate.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace lcd::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchConfig {
  std::string server;
  std::string model;
  int concurrency = 1;
  int num_requests = 1;
  int prompt_tokens = 1;
  int output_tokens = 1;
  uint64_t seed = 0;
  double temperature = 0.0;
  double timeout_s = 300.0;
  std::string json_path;
};

// What one request measured. Times are seconds relative to its own send.
struct RequestResult {
  bool ok = false;
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error;
  int64_t output_tokens = 0;
  double ttft = 0;
  double e2e = 0;
  std::vector<double> itl;  // One entry per token after the first chunk.
};

struct Summary {
  double mean = 0, median = 0, p90 = 0, p99 = 0;
};

// Linear interpolation between closest ranks, as numpy.percentile does.
double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  const double pos = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

Summary Summarize(std::vector<double> values) {
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(values.size());
  s.median = Percentile(values, 50);
  s.p90 = Percentile(values, 90);
  s.p99 = Percentile(values, 99);
  return s;
}

nlohmann::json SummaryJson(const Summary& s) {
  return {{"mean", s.mean}, {"median", s.median}, {"p90", s.p90}, {"p99", s.p99}};
}

std::string GrpcCodeText(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                       "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  return c >= 0 && c <= 16 ? kNames[c] : std::to_string(c);
}

// Random prompt ids in [0, vocab) that avoid the model's BOS/EOS ids, so no
// prompt ends early or restarts a document in the middle.
std::vector<int32_t> RandomPrompt(std::mt19937_64& rng, const v1::ModelInfo& info, int length) {
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(info.vocab_size() - 1));
  std::vector<int32_t> ids;
  ids.reserve(length);
  while (static_cast<int>(ids.size()) < length) {
    const int32_t id = dist(rng);
    if (info.has_bos_token_id() && id == info.bos_token_id()) continue;
    if (std::find(info.eos_token_ids().begin(), info.eos_token_ids().end(), id) != info.eos_token_ids().end()) {
      continue;
    }
    ids.push_back(id);
  }
  return ids;
}

RequestResult RunOne(v1::GenerationService::Stub& stub, const v1::GenerateRequest& request, double timeout_s) {
  RequestResult r;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
  const Clock::time_point start = Clock::now();
  auto since = [&start](Clock::time_point t) { return std::chrono::duration<double>(t - start).count(); };
  std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader = stub.GenerateStream(&context, request);
  v1::GenerateStreamResponse chunk;
  bool have_first = false;
  Clock::time_point last;
  while (reader->Read(&chunk)) {
    const int n = chunk.token_ids_size();
    if (n == 0) continue;  // The final message may carry only usage/timing.
    const Clock::time_point now = Clock::now();
    if (!have_first) {
      r.ttft = since(now);
      have_first = true;
    } else {
      const double gap = std::chrono::duration<double>(now - last).count() / n;
      for (int i = 0; i < n; ++i) r.itl.push_back(gap);
    }
    last = now;
    r.output_tokens += n;
  }
  grpc::Status status = reader->Finish();
  r.e2e = since(Clock::now());
  r.code = status.error_code();
  r.ok = status.ok();
  if (!r.ok) r.error = status.error_message();
  if (r.ok && !have_first) {
    r.ok = false;
    r.error = "stream finished without any tokens";
  }
  return r;
}

int RunBenchServe(int argc, char** argv) {
  cxxopts::Options options("lcd bench-serve",
                           "Load-test a running lcd-server with concurrent GenerateStream clients.");
  options.add_options()
      ("server", "Server address HOST:PORT", cxxopts::value<std::string>()->default_value("127.0.0.1:50051"))
      ("model", "Model name as loaded by the server", cxxopts::value<std::string>())
      ("concurrency", "Client threads sending requests back to back", cxxopts::value<int>()->default_value("1"))
      ("num-requests", "Requests to send in total", cxxopts::value<int>()->default_value("32"))
      ("prompt-tokens", "Prompt length in tokens (random ids)", cxxopts::value<int>()->default_value("64"))
      ("output-tokens", "New tokens per request (ignore_eos)", cxxopts::value<int>()->default_value("64"))
      ("seed", "Seed for prompts and sampling", cxxopts::value<uint64_t>()->default_value("0"))
      ("temperature", "Sampling temperature (0 = greedy)", cxxopts::value<double>()->default_value("0"))
      ("timeout", "Per-request deadline in seconds", cxxopts::value<double>()->default_value("300"))
      ("json", "Also write the results as JSON to this file", cxxopts::value<std::string>())
      ("h,help", "Show this help");
  BenchConfig cfg;
  cxxopts::ParseResult flags;
  if (std::optional<int> exit = ParseFlags("bench-serve", options, argc, argv, {"model"}, &flags)) return *exit;
  cfg.server = flags["server"].as<std::string>();
  cfg.model = flags["model"].as<std::string>();
  cfg.concurrency = flags["concurrency"].as<int>();
  cfg.num_requests = flags["num-requests"].as<int>();
  cfg.prompt_tokens = flags["prompt-tokens"].as<int>();
  cfg.output_tokens = flags["output-tokens"].as<int>();
  cfg.seed = flags["seed"].as<uint64_t>();
  cfg.temperature = flags["temperature"].as<double>();
  cfg.timeout_s = flags["timeout"].as<double>();
  if (flags.count("json")) cfg.json_path = flags["json"].as<std::string>();
  const char* bad = nullptr;
  if (cfg.concurrency < 1 || cfg.concurrency > 4096) bad = "--concurrency must be in [1, 4096]";
  else if (cfg.num_requests < 1) bad = "--num-requests must be >= 1";
  else if (cfg.prompt_tokens < 1) bad = "--prompt-tokens must be >= 1";
  else if (cfg.output_tokens < 1) bad = "--output-tokens must be >= 1";
  else if (!(cfg.timeout_s > 0)) bad = "--timeout must be > 0 seconds";
  else if (!(cfg.temperature >= 0)) bad = "--temperature must be >= 0";
  if (bad != nullptr) {
    std::fprintf(stderr, "lcd bench-serve: %s\n", bad);
    return 2;
  }

  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(cfg.server, grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::GenerationService::Stub> stub = v1::GenerationService::NewStub(channel);
  // The model's vocabulary and limits shape the prompts; this call also
  // connects the channel, so connection setup is not charged to request 1.
  v1::ModelInfo info;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::GetModelInfoRequest req;
    req.set_model(cfg.model);
    grpc::Status st = stub->GetModelInfo(&context, req, &info);
    if (!st.ok()) {
      std::fprintf(stderr, "lcd bench-serve: GetModelInfo failed: %s (%d): %s\n",
                   GrpcCodeText(st.error_code()).c_str(), static_cast<int>(st.error_code()),
                   st.error_message().c_str());
      return 1;
    }
  }
  if (info.vocab_size() < 4) {
    std::fprintf(stderr, "lcd bench-serve: model vocabulary too small (%lld)\n",
                 static_cast<long long>(info.vocab_size()));
    return 1;
  }
  if (info.max_context() > 0 && cfg.prompt_tokens + cfg.output_tokens > info.max_context()) {
    std::fprintf(stderr, "lcd bench-serve: --prompt-tokens + --output-tokens = %d exceeds the model's context %lld\n",
                 cfg.prompt_tokens + cfg.output_tokens, static_cast<long long>(info.max_context()));
    return 2;
  }

  // All prompts are built up front so generating them is not timed.
  std::vector<v1::GenerateRequest> requests(cfg.num_requests);
  std::mt19937_64 rng(cfg.seed);
  for (int i = 0; i < cfg.num_requests; ++i) {
    v1::GenerateRequest& req = requests[i];
    req.set_model(cfg.model);
    for (int32_t id : RandomPrompt(rng, info, cfg.prompt_tokens)) req.mutable_token_ids()->add_ids(id);
    v1::SamplingParams* s = req.mutable_sampling();
    s->set_max_new_tokens(cfg.output_tokens);
    s->set_ignore_eos(true);
    s->set_temperature(cfg.temperature);
    s->set_seed(cfg.seed + static_cast<uint64_t>(i));
    req.set_request_id("bench-" + std::to_string(i));
  }

  std::vector<RequestResult> results(cfg.num_requests);
  std::atomic<int> next{0};
  std::atomic<int> done{0};
  std::mutex progress_mu;
  const int progress_every = std::max(1, cfg.num_requests / 10);
  const int threads_n = std::min(cfg.concurrency, cfg.num_requests);
  std::fprintf(stderr, "lcd bench-serve: %d requests, concurrency %d, prompt %d tokens, output %d tokens -> %s\n",
               cfg.num_requests, cfg.concurrency, cfg.prompt_tokens, cfg.output_tokens, cfg.server.c_str());
  const Clock::time_point bench_start = Clock::now();
  std::vector<std::thread> threads;
  threads.reserve(threads_n);
  for (int t = 0; t < threads_n; ++t) {
    threads.emplace_back([&] {
      for (int i = next.fetch_add(1); i < cfg.num_requests; i = next.fetch_add(1)) {
        results[i] = RunOne(*stub, requests[i], cfg.timeout_s);
        const int d = done.fetch_add(1) + 1;
        if (d % progress_every == 0 || d == cfg.num_requests || !results[i].ok) {
          std::lock_guard<std::mutex> lock(progress_mu);
          std::fprintf(stderr, "lcd bench-serve: %d/%d done%s%s\n", d, cfg.num_requests,
                       results[i].ok ? "" : " (request failed: ",
                       results[i].ok ? "" : (GrpcCodeText(results[i].code) + ": " + results[i].error + ")").c_str());
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double duration = std::chrono::duration<double>(Clock::now() - bench_start).count();

  int completed = 0;
  int64_t total_out = 0, total_in = 0;
  std::vector<double> ttft, itl, e2e, tpot;
  std::map<std::string, int> failures;
  for (int i = 0; i < cfg.num_requests; ++i) {
    const RequestResult& r = results[i];
    if (!r.ok) {
      ++failures[GrpcCodeText(r.code) + ": " + r.error];
      continue;
    }
    ++completed;
    total_out += r.output_tokens;
    total_in += cfg.prompt_tokens;
    ttft.push_back(r.ttft * 1e3);
    e2e.push_back(r.e2e * 1e3);
    for (double g : r.itl) itl.push_back(g * 1e3);
    if (r.output_tokens > 1) tpot.push_back((r.e2e - r.ttft) * 1e3 / static_cast<double>(r.output_tokens - 1));
  }
  const Summary s_ttft = Summarize(ttft), s_itl = Summarize(itl), s_e2e = Summarize(e2e), s_tpot = Summarize(tpot);
  const double req_tput = completed / duration;
  const double out_tput = static_cast<double>(total_out) / duration;
  const double total_tput = static_cast<double>(total_out + total_in) / duration;

  std::printf("============ Serving Benchmark Result ============\n");
  std::printf("%-36s %14s\n", "Model:", cfg.model.c_str());
  std::printf("%-36s %14d\n", "Concurrency:", cfg.concurrency);
  std::printf("%-36s %14d\n", "Successful requests:", completed);
  std::printf("%-36s %14d\n", "Failed requests:", cfg.num_requests - completed);
  std::printf("%-36s %14.3f\n", "Benchmark duration (s):", duration);
  std::printf("%-36s %14lld\n", "Total input tokens:", static_cast<long long>(total_in));
  std::printf("%-36s %14lld\n", "Total generated tokens:", static_cast<long long>(total_out));
  std::printf("%-36s %14.3f\n", "Request throughput (req/s):", req_tput);
  std::printf("%-36s %14.2f\n", "Output token throughput (tok/s):", out_tput);
  std::printf("%-36s %14.2f\n", "Total token throughput (tok/s):", total_tput);
  std::printf("%-12s %10s %10s %10s %10s\n", "(ms)", "mean", "median", "p90", "p99");
  for (const auto& [name, s] : {std::pair<const char*, const Summary&>{"TTFT", s_ttft},
                                {"ITL", s_itl},
                                {"TPOT", s_tpot},
                                {"E2E", s_e2e}}) {
    std::printf("%-12s %10.2f %10.2f %10.2f %10.2f\n", name, s.mean, s.median, s.p90, s.p99);
  }
  std::printf("==================================================\n");
  std::fflush(stdout);

  if (!cfg.json_path.empty()) {
    nlohmann::json failed = nlohmann::json::object();
    for (const auto& [why, n] : failures) failed[why] = n;
    nlohmann::json j = {{"server", cfg.server},
                        {"model", cfg.model},
                        {"concurrency", cfg.concurrency},
                        {"num_requests", cfg.num_requests},
                        {"prompt_tokens", cfg.prompt_tokens},
                        {"output_tokens", cfg.output_tokens},
                        {"seed", cfg.seed},
                        {"temperature", cfg.temperature},
                        {"completed", completed},
                        {"failed", cfg.num_requests - completed},
                        {"failures", failed},
                        {"duration_s", duration},
                        {"total_input_tokens", total_in},
                        {"total_output_tokens", total_out},
                        {"request_throughput", req_tput},
                        {"output_throughput", out_tput},
                        {"total_token_throughput", total_tput},
                        {"ttft_ms", SummaryJson(s_ttft)},
                        {"itl_ms", SummaryJson(s_itl)},
                        {"tpot_ms", SummaryJson(s_tpot)},
                        {"e2e_ms", SummaryJson(s_e2e)}};
    std::ofstream out(cfg.json_path);
    out << j.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "lcd bench-serve: cannot write %s\n", cfg.json_path.c_str());
      return 1;
    }
  }
  if (completed != cfg.num_requests) {
    for (const auto& [why, n] : failures) std::fprintf(stderr, "lcd bench-serve: %d failed with %s\n", n, why.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

LCD_REGISTER_SUBCOMMAND(bench_serve, "bench-serve",
                        "load-test a running lcd-server (throughput, TTFT, inter-token latency)", RunBenchServe);

}  // namespace lcd::tools

#endif  // LCD_WITH_SERVER
