// `lcd eval-ppl`: perplexity of a model on a text file, with the protocol of
// quantizer::EvaluatePerplexity (lcd/quantizer/perplexity.h).
#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cxxopts.hpp"
#include "lcd/quantizer/perplexity.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/tokenizer.h"
#include "lcd/subcommand.h"

namespace lcd::tools {
namespace {

int RunEvalPpl(int argc, char** argv) {
  cxxopts::Options options("lcd eval-ppl", "Perplexity of a model on a text file (non-overlapping windows).");
  options.add_options()
      ("model", "Hugging Face model directory", cxxopts::value<std::string>())
      ("text", "UTF-8 text file", cxxopts::value<std::string>())
      ("window", "Tokens per window (0 = min(2048, max_position_embeddings))",
       cxxopts::value<int64_t>()->default_value("0"))
      ("max-windows", "Evaluate at most this many windows (0 = all)", cxxopts::value<int64_t>()->default_value("0"))
      ("reference", "Also report KL(P_reference || P_model) per token and top-1 agreement against this model "
                    "(e.g. the full-precision source of an artifact; same vocabulary)",
       cxxopts::value<std::string>())
      ("score-from", "Score only positions >= N of each window, the rest is context (llama-perplexity: --no-bos "
                     "--score-from WINDOW/2)", cxxopts::value<int64_t>()->default_value("0"))
      ("no-bos", "Do not start windows with BOS even if the tokenizer has one")
      ("threads", "Worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
      ("json", "Print the result as one JSON object on stdout")
      ("h,help", "Show this help");
  std::string model_dir, text_path, reference_dir;
  int64_t window = 0, max_windows = 0, score_from = 0;
  int threads = 0;
  bool use_bos = true, json = false;
  cxxopts::ParseResult flags;
  if (std::optional<int> exit = ParseFlags("eval-ppl", options, argc, argv, {"model", "text"}, &flags)) return *exit;
  model_dir = flags["model"].as<std::string>();
  text_path = flags["text"].as<std::string>();
  if (flags.count("reference")) reference_dir = flags["reference"].as<std::string>();
  window = flags["window"].as<int64_t>();
  max_windows = flags["max-windows"].as<int64_t>();
  score_from = flags["score-from"].as<int64_t>();
  threads = flags["threads"].as<int>();
  use_bos = flags.count("no-bos") == 0;
  json = flags.count("json") > 0;

  std::ifstream in(text_path, std::ios::binary);
  if (!in) return ReportError("eval-ppl", absl::NotFoundError(absl::StrCat("cannot read ", text_path)));
  std::stringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<std::unique_ptr<runtime::Tokenizer>> tokenizer = runtime::LoadTokenizer(model_dir);
  if (!tokenizer.ok()) return ReportError("eval-ppl", tokenizer.status());
  absl::StatusOr<std::unique_ptr<runtime::Model>> model = runtime::Model::Load(model_dir, {threads});
  if (!model.ok()) return ReportError("eval-ppl", model.status());
  std::unique_ptr<runtime::Model> reference;
  if (!reference_dir.empty()) {
    absl::StatusOr<std::unique_ptr<runtime::Model>> ref = runtime::Model::Load(reference_dir, {threads});
    if (!ref.ok()) return ReportError("eval-ppl", ref.status());
    reference = *std::move(ref);
  }
  absl::StatusOr<std::vector<int32_t>> tokens = (*tokenizer)->Encode(buffer.str(), /*add_bos=*/false);
  if (!tokens.ok()) return ReportError("eval-ppl", tokens.status());

  const std::optional<int32_t> bos = use_bos ? (*tokenizer)->bos_id() : std::nullopt;
  std::fprintf(stderr, "[eval-ppl] %zu tokens%s\n", tokens->size(), bos ? " (windows start with BOS)" : "");
  quantizer::PerplexityOptions popts;
  popts.bos = bos;
  popts.window = window;
  popts.max_windows = max_windows;
  popts.score_from = score_from;
  popts.reference = reference.get();
  popts.progress = [](int64_t done, int64_t total, double running) {
    std::fprintf(stderr, "[eval-ppl] window %lld/%lld: running ppl %.4f\n", static_cast<long long>(done),
                 static_cast<long long>(total), running);
  };
  absl::StatusOr<quantizer::PerplexityResult> r = quantizer::EvaluatePerplexity(**model, *tokens, popts);
  if (!r.ok()) return ReportError("eval-ppl", r.status());
  const double ppl = r->ppl;
  if (json) {
    std::string kl;
    if (r->mean_kl) kl = absl::StrFormat(", \"kl\": %.10g, \"top1_agreement\": %.10g", *r->mean_kl, *r->top1_agreement);
    std::printf("{\"ppl\": %.10g, \"mean_nll\": %.10g, \"predicted_tokens\": %lld, \"windows\": %lld, \"window\": %lld, "
                "\"score_from\": %lld%s}\n",
                ppl, r->mean_nll, static_cast<long long>(r->predicted_tokens), static_cast<long long>(r->windows),
                static_cast<long long>(r->window), static_cast<long long>(score_from), kl.c_str());
  } else {
    std::printf("perplexity: %.4f (%lld predicted tokens, %lld windows of %lld)\n", ppl,
                static_cast<long long>(r->predicted_tokens), static_cast<long long>(r->windows),
                static_cast<long long>(r->window));
    if (r->mean_kl) {
      std::printf("KL(reference || model): %.6f nats/token, top-1 agreement %.4f\n", *r->mean_kl, *r->top1_agreement);
    }
  }
  return 0;
}

}  // namespace

LCD_REGISTER_SUBCOMMAND(eval_ppl, "eval-ppl", "perplexity of a local model on a text file", RunEvalPpl);

}  // namespace lcd::tools
