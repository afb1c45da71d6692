// `lcd generate`: loads a model directory and generates a continuation of a
// prompt on the CPU, streaming tokens to stdout as they are produced.
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "cxxopts.hpp"
#include "lcd/runtime/generator.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/tokenizer.h"
#include "lcd/subcommand.h"

namespace lcd::tools {
namespace {

int RunGenerate(int argc, char** argv) {
  cxxopts::Options options("lcd generate", "Generate text from a prompt with a local model (CPU).");
  options.add_options()
      ("model", "Hugging Face model directory", cxxopts::value<std::string>())
      ("prompt", "Prompt text", cxxopts::value<std::string>())
      ("max-new-tokens", "Maximum tokens to generate", cxxopts::value<int64_t>()->default_value("128"))
      ("temperature", "Sampling temperature (0 = greedy)", cxxopts::value<double>()->default_value("0.8"))
      ("top-k", "Top-k (0 = off)", cxxopts::value<int64_t>()->default_value("0"))
      ("top-p", "Nucleus top-p (1 = off)", cxxopts::value<double>()->default_value("1.0"))
      ("min-p", "Min-p (0 = off)", cxxopts::value<double>()->default_value("0.0"))
      ("repetition-penalty", "Repetition penalty (1 = off)", cxxopts::value<double>()->default_value("1.0"))
      ("seed", "RNG seed (default: random)", cxxopts::value<uint64_t>())
      ("stop", "Stop string (repeatable)", cxxopts::value<std::vector<std::string>>())
      ("ignore-eos", "Keep generating past EOS")
      ("threads", "Worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
      ("kv-dtype", "KV cache element type: f16, bf16 or f32", cxxopts::value<std::string>()->default_value("f16"))
      ("no-bos", "Do not prepend the BOS token")
      ("h,help", "Show this help");
  runtime::SamplingParams params;
  std::string model_dir, prompt;
  int threads = 0;
  runtime::GenerateOptions gen_options;
  bool add_bos = true;
  cxxopts::ParseResult flags;
  if (std::optional<int> exit = ParseFlags("generate", options, argc, argv, {"model", "prompt"}, &flags)) return *exit;
  model_dir = flags["model"].as<std::string>();
  prompt = flags["prompt"].as<std::string>();
  params.max_new_tokens = flags["max-new-tokens"].as<int64_t>();
  params.temperature = flags["temperature"].as<double>();
  params.top_k = flags["top-k"].as<int64_t>();
  params.top_p = flags["top-p"].as<double>();
  params.min_p = flags["min-p"].as<double>();
  params.repetition_penalty = flags["repetition-penalty"].as<double>();
  if (flags.count("seed")) params.seed = flags["seed"].as<uint64_t>();
  if (flags.count("stop")) params.stop_strings = flags["stop"].as<std::vector<std::string>>();
  params.ignore_eos = flags.count("ignore-eos") > 0;
  threads = flags["threads"].as<int>();
  if (!kernels::DTypeFromName(flags["kv-dtype"].as<std::string>(), &gen_options.kv_dtype)) {
    std::fprintf(stderr, "lcd generate: --kv-dtype must be f16, bf16 or f32\n");
    return 2;
  }
  add_bos = flags.count("no-bos") == 0;
  if (absl::Status st = params.Validate(); !st.ok()) return ReportError("generate", st);

  absl::StatusOr<std::unique_ptr<runtime::Tokenizer>> tokenizer = runtime::LoadTokenizer(model_dir);
  if (!tokenizer.ok()) return ReportError("generate", tokenizer.status());
  absl::StatusOr<std::unique_ptr<runtime::Model>> model = runtime::Model::Load(model_dir, {threads});
  if (!model.ok()) return ReportError("generate", model.status());
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(prompt, add_bos);
  if (!ids.ok()) return ReportError("generate", ids.status());

  absl::StatusOr<runtime::GenerationResult> result =
      runtime::Generate(**model, tokenizer->get(), *ids, params, [](int32_t, std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
        return true;
      }, gen_options);
  std::printf("\n");
  if (!result.ok()) return ReportError("generate", result.status());
  const runtime::GenerationResult& r = *result;
  const double prefill_tps = r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0.0;
  const double decode_tps = r.decode_seconds > 0 ? (r.generated_tokens - 1) / r.decode_seconds : 0.0;
  std::fprintf(stderr,
               "[lcd generate] prompt tokens: %lld, generated tokens: %lld, finish: %s, "
               "prefill: %.2f s (%.1f tok/s), decode: %.2f s (%.2f tok/s)\n",
               static_cast<long long>(r.prompt_tokens), static_cast<long long>(r.generated_tokens),
               std::string(runtime::FinishReasonName(r.finish_reason)).c_str(), r.prefill_seconds, prefill_tps,
               r.decode_seconds, decode_tps);
  return 0;
}

}  // namespace

LCD_REGISTER_SUBCOMMAND(generate, "generate", "generate text from a prompt with a local model", RunGenerate);

}  // namespace lcd::tools
