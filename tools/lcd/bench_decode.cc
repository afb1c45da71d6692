// `lcd bench-decode`: prefill and single-sequence decode throughput of a
// model on this machine, with the weight bandwidth that decode implies
// (every decoded token reads all linear weights once). No tokenizer needed:
// the prompt is random token ids from a fixed seed.
#include <cstdio>
#include <exception>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cxxopts.hpp"
#include "lcd/runtime/generator.h"
#include "lcd/runtime/model.h"
#include "lcd/subcommand.h"

namespace lcd::tools {
namespace {

int RunBenchDecode(int argc, char** argv) {
  cxxopts::Options options("lcd bench-decode", "Measure prefill and decode throughput of a model (CPU).");
  options.add_options()
      ("model", "Hugging Face model directory", cxxopts::value<std::string>())
      ("tokens", "Tokens to decode", cxxopts::value<int64_t>()->default_value("64"))
      ("prompt-tokens", "Prompt length (random ids)", cxxopts::value<int64_t>()->default_value("128"))
      ("threads", "Worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
      ("kv-dtype", "KV cache element type: f16, bf16 or f32", cxxopts::value<std::string>()->default_value("f16"))
      ("h,help", "Show this help");
  std::string model_dir;
  int64_t tokens = 0, prompt_tokens = 0;
  int threads = 0;
  runtime::GenerateOptions gen_options;
  cxxopts::ParseResult flags;
  if (std::optional<int> exit = ParseFlags("bench-decode", options, argc, argv, {"model"}, &flags)) return *exit;
  model_dir = flags["model"].as<std::string>();
  tokens = flags["tokens"].as<int64_t>();
  prompt_tokens = flags["prompt-tokens"].as<int64_t>();
  threads = flags["threads"].as<int>();
  if (!kernels::DTypeFromName(flags["kv-dtype"].as<std::string>(), &gen_options.kv_dtype)) {
    std::fprintf(stderr, "lcd bench-decode: --kv-dtype must be f16, bf16 or f32\n");
    return 2;
  }
  if (prompt_tokens < 1 || tokens < 1) {
    return ReportError("bench-decode", absl::InvalidArgumentError("--tokens and --prompt-tokens must be >= 1"));
  }
  absl::StatusOr<std::unique_ptr<runtime::Model>> model = runtime::Model::Load(model_dir, {threads});
  if (!model.ok()) return ReportError("bench-decode", model.status());

  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>((*model)->config().vocab_size - 1));
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_tokens));
  for (int32_t& t : prompt) t = id(rng);
  runtime::SamplingParams params;
  params.temperature = 0.0;
  params.ignore_eos = true;
  params.max_new_tokens = tokens;
  absl::StatusOr<runtime::GenerationResult> r = runtime::Generate(
      **model, nullptr, prompt, params, [](int32_t, std::string_view) { return true; }, gen_options);
  if (!r.ok()) return ReportError("bench-decode", r.status());
  const double prefill_tps = r->prompt_tokens / r->prefill_seconds;
  const double decode_tps = r->decode_seconds > 0 ? (r->generated_tokens - 1) / r->decode_seconds : 0.0;
  std::printf(
      "prompt %lld tokens: prefill %.1f tok/s | decode %lld tokens: %.2f tok/s, %.2f ms/token, "
      "weights %.1f MB -> %.2f GB/s\n",
      static_cast<long long>(r->prompt_tokens), prefill_tps, static_cast<long long>(r->generated_tokens),
      decode_tps, decode_tps > 0 ? 1000.0 / decode_tps : 0.0, (*model)->WeightBytes() / 1e6,
      (*model)->WeightBytes() * decode_tps / 1e9);
  return 0;
}

}  // namespace

LCD_REGISTER_SUBCOMMAND(bench_decode, "bench-decode", "measure prefill/decode throughput of a local model",
                        RunBenchDecode);

}  // namespace lcd::tools
