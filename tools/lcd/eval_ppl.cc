// `lcd eval-ppl`: perplexity of a model on a text file.
//
// Protocol (HF "perplexity of fixed-length models" with stride = window,
// which is also what llama.cpp's wikitext-2 figures use): the whole file is
// tokenized once without BOS and cut into non-overlapping windows. When the
// tokenizer has a BOS token, each window is [BOS] + the next window-1 text
// tokens and every text token is predicted exactly once; otherwise a window
// is `window` text tokens and its first token is context only.
// ppl = exp(mean NLL over all predicted tokens), accumulated in double.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cxxopts.hpp"
#include "lcd/runtime/kv_cache.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/tokenizer.h"
#include "lcd/subcommand.h"

namespace lcd::tools {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr int64_t kForwardChunk = 512;  // Tokens per Forward call (bounds logits memory).

struct PplTotals {
  double nll_sum = 0.0;
  int64_t predicted = 0;
};

// Runs one window through the model and adds the NLL of tokens 1.. of
// `window` (each predicted from the ones before it).
absl::Status EvalWindow(runtime::Model& model, runtime::KvCache& cache, const std::vector<int32_t>& table,
                        const std::vector<int32_t>& window, PplTotals& totals) {
  const int64_t vocab = model.config().vocab_size;
  const int64_t n = static_cast<int64_t>(window.size());
  for (int64_t start = 0; start < n; start += kForwardChunk) {
    const int64_t end = std::min(n, start + kForwardChunk);
    runtime::SeqBatchEntry e;
    e.tokens.assign(window.begin() + start, window.begin() + end);
    e.start_pos = start;
    e.block_table = &table;
    e.all_logits = true;
    absl::StatusOr<runtime::ForwardOutput> out = model.Forward({e}, cache);
    if (!out.ok()) return out.status();
    for (int64_t i = start; i < end; ++i) {
      if (i + 1 >= n) break;  // The last token predicts nothing inside the window.
      const float* row = out->logits.data() + (i - start) * vocab;
      const float mx = *std::max_element(row, row + vocab);
      double z = 0.0;
      for (int64_t v = 0; v < vocab; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
      totals.nll_sum += std::log(z) + mx - row[window[i + 1]];
      ++totals.predicted;
    }
  }
  return absl::OkStatus();
}

int RunEvalPpl(int argc, char** argv) {
  cxxopts::Options options("lcd eval-ppl", "Perplexity of a model on a text file (non-overlapping windows).");
  options.add_options()
      ("model", "Hugging Face model directory", cxxopts::value<std::string>())
      ("text", "UTF-8 text file", cxxopts::value<std::string>())
      ("window", "Tokens per window (0 = min(2048, max_position_embeddings))",
       cxxopts::value<int64_t>()->default_value("0"))
      ("max-windows", "Evaluate at most this many windows (0 = all)", cxxopts::value<int64_t>()->default_value("0"))
      ("no-bos", "Do not start windows with BOS even if the tokenizer has one")
      ("threads", "Worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
      ("json", "Print the result as one JSON object on stdout")
      ("h,help", "Show this help");
  std::string model_dir, text_path;
  int64_t window = 0, max_windows = 0;
  int threads = 0;
  bool use_bos = true, json = false;
  try {
    cxxopts::ParseResult flags = options.parse(argc, argv);
    if (flags.count("help")) {
      std::printf("%s\n", options.help().c_str());
      return 0;
    }
    if (!flags.count("model") || !flags.count("text")) {
      std::fprintf(stderr, "lcd eval-ppl: --model and --text are required\n%s\n", options.help().c_str());
      return 2;
    }
    model_dir = flags["model"].as<std::string>();
    text_path = flags["text"].as<std::string>();
    window = flags["window"].as<int64_t>();
    max_windows = flags["max-windows"].as<int64_t>();
    threads = flags["threads"].as<int>();
    use_bos = flags.count("no-bos") == 0;
    json = flags.count("json") > 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lcd eval-ppl: %s\n", e.what());
    return 2;
  }

  std::ifstream in(text_path, std::ios::binary);
  if (!in) return ReportError("eval-ppl", absl::NotFoundError(absl::StrCat("cannot read ", text_path)));
  std::stringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<std::unique_ptr<runtime::Tokenizer>> tokenizer = runtime::LoadTokenizer(model_dir);
  if (!tokenizer.ok()) return ReportError("eval-ppl", tokenizer.status());
  absl::StatusOr<std::unique_ptr<runtime::Model>> model = runtime::Model::Load(model_dir, {threads});
  if (!model.ok()) return ReportError("eval-ppl", model.status());
  absl::StatusOr<std::vector<int32_t>> tokens = (*tokenizer)->Encode(buffer.str(), /*add_bos=*/false);
  if (!tokens.ok()) return ReportError("eval-ppl", tokens.status());

  const runtime::ModelConfig& config = (*model)->config();
  if (window == 0) window = std::min<int64_t>(2048, config.max_position_embeddings);
  if (window < 2 || window > config.max_position_embeddings) {
    return ReportError("eval-ppl", absl::InvalidArgumentError(absl::StrCat(
                                       "--window must be in [2, ", config.max_position_embeddings, "], got ", window)));
  }
  const std::optional<int32_t> bos = use_bos ? (*tokenizer)->bos_id() : std::nullopt;
  const int64_t text_per_window = bos ? window - 1 : window;
  const int64_t total = static_cast<int64_t>(tokens->size());
  int64_t num_windows = (total + text_per_window - 1) / text_per_window;
  if (!bos && total % text_per_window == 1) --num_windows;  // A 1-token tail predicts nothing.
  if (max_windows > 0) num_windows = std::min(num_windows, max_windows);
  if (num_windows <= 0) {
    return ReportError("eval-ppl", absl::InvalidArgumentError(absl::StrCat(
                                       "text has ", total, " tokens, too few to predict any")));
  }

  const int64_t num_blocks = (window + kBlockSize - 1) / kBlockSize;
  absl::StatusOr<runtime::KvCache> cache =
      runtime::KvCache::Create(config.num_layers, (*model)->KvLayoutFor(kBlockSize), num_blocks);
  if (!cache.ok()) return ReportError("eval-ppl", cache.status());
  std::vector<int32_t> table(static_cast<size_t>(num_blocks));
  for (int64_t b = 0; b < num_blocks; ++b) table[b] = static_cast<int32_t>(b);

  std::fprintf(stderr, "[eval-ppl] %lld tokens, window %lld%s, %lld windows\n", static_cast<long long>(total),
               static_cast<long long>(window), bos ? " (BOS + text)" : "", static_cast<long long>(num_windows));
  PplTotals totals;
  for (int64_t w = 0; w < num_windows; ++w) {
    const int64_t begin = w * text_per_window;
    const int64_t end = std::min(total, begin + text_per_window);
    std::vector<int32_t> win;
    if (bos) win.push_back(*bos);
    win.insert(win.end(), tokens->begin() + begin, tokens->begin() + end);
    if (absl::Status st = EvalWindow(**model, *cache, table, win, totals); !st.ok()) {
      return ReportError("eval-ppl", st);
    }
    std::fprintf(stderr, "[eval-ppl] window %lld/%lld: running ppl %.4f\n", static_cast<long long>(w + 1),
                 static_cast<long long>(num_windows), std::exp(totals.nll_sum / totals.predicted));
  }
  const double ppl = std::exp(totals.nll_sum / static_cast<double>(totals.predicted));
  if (json) {
    std::printf("{\"ppl\": %.10g, \"mean_nll\": %.10g, \"predicted_tokens\": %lld, \"windows\": %lld, \"window\": %lld}\n",
                ppl, totals.nll_sum / totals.predicted, static_cast<long long>(totals.predicted),
                static_cast<long long>(num_windows), static_cast<long long>(window));
  } else {
    std::printf("perplexity: %.4f (%lld predicted tokens, %lld windows of %lld)\n", ppl,
                static_cast<long long>(totals.predicted), static_cast<long long>(num_windows),
                static_cast<long long>(window));
  }
  return 0;
}

}  // namespace

LCD_REGISTER_SUBCOMMAND(eval_ppl, "eval-ppl", "perplexity of a local model on a text file", RunEvalPpl);

}  // namespace lcd::tools
