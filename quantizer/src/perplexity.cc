#include "lcd/quantizer/perplexity.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/kv_cache.h"

namespace lcd::quantizer {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr int64_t kForwardChunk = 512;  // Tokens per Forward call (bounds logits memory).

// Per-window sums, accumulated in double across windows.
struct Sums {
  double nll = 0.0;
  double kl = 0.0;
  int64_t agree = 0;
  int64_t predicted = 0;
};

// log(sum_v exp(row[v])) and the argmax of one logits row.
std::pair<double, int64_t> LogSumExp(const float* row, int64_t vocab) {
  const int64_t arg = std::max_element(row, row + vocab) - row;
  const double mx = row[arg];
  double z = 0.0;
  for (int64_t v = 0; v < vocab; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
  return {std::log(z) + mx, arg};
}

// One KV cache and block table per model driven by the evaluation.
struct Runner {
  runtime::Model* model;
  runtime::KvCache cache;
};

absl::StatusOr<std::vector<float>> ForwardChunk(Runner& r, const std::vector<int32_t>& table,
                                                const std::vector<int32_t>& window, int64_t start, int64_t end) {
  runtime::SeqBatchEntry e;
  e.tokens.assign(window.begin() + start, window.begin() + end);
  e.start_pos = start;
  e.block_table = &table;
  e.all_logits = true;
  LCD_ASSIGN_OR_RETURN(runtime::ForwardOutput out, r.model->Forward({e}, r.cache));
  return std::move(out.logits);
}

absl::Status EvalWindow(Runner& model, Runner* reference, const std::vector<int32_t>& table,
                        const std::vector<int32_t>& window, int64_t score_from, Sums& sums) {
  const int64_t vocab = model.model->config().vocab_size;
  const int64_t n = static_cast<int64_t>(window.size());
  for (int64_t start = 0; start < n; start += kForwardChunk) {
    const int64_t end = std::min(n, start + kForwardChunk);
    LCD_ASSIGN_OR_RETURN(std::vector<float> logits, ForwardChunk(model, table, window, start, end));
    std::vector<float> ref_logits;
    if (reference != nullptr) {
      LCD_ASSIGN_OR_RETURN(ref_logits, ForwardChunk(*reference, table, window, start, end));
    }
    for (int64_t i = std::max(start, score_from); i < end && i + 1 < n; ++i) {
      const float* row = logits.data() + (i - start) * vocab;
      const auto [lse, arg] = LogSumExp(row, vocab);
      sums.nll += lse - row[window[i + 1]];
      ++sums.predicted;
      if (reference == nullptr) continue;
      const float* ref = ref_logits.data() + (i - start) * vocab;
      const auto [ref_lse, ref_arg] = LogSumExp(ref, vocab);
      double kl = 0.0;
      for (int64_t v = 0; v < vocab; ++v) {
        const double log_p = static_cast<double>(ref[v]) - ref_lse;
        kl += std::exp(log_p) * (log_p - (static_cast<double>(row[v]) - lse));
      }
      sums.kl += kl;
      sums.agree += arg == ref_arg ? 1 : 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PerplexityResult> EvaluatePerplexity(runtime::Model& model, const std::vector<int32_t>& tokens,
                                                    const PerplexityOptions& options) {
  const std::optional<int32_t> bos = options.bos;
  runtime::Model* reference = options.reference;
  int64_t window = options.window;
  const runtime::ModelConfig& config = model.config();
  if (reference != nullptr && reference->config().vocab_size != config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("perplexity: the reference model's vocabulary (",
                                                   reference->config().vocab_size, ") differs from the model's (",
                                                   config.vocab_size, ")"));
  }
  if (window == 0) window = std::min<int64_t>(2048, config.max_position_embeddings);
  if (window < 2 || window > config.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity: window must be in [2, ", config.max_position_embeddings, "], got ", window));
  }
  if (options.score_from < 0 || options.score_from >= window - 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity: score-from must be in [0, ", window - 1, ") for window ", window, ", got ",
                     options.score_from));
  }
  const int64_t text_per_window = bos ? window - 1 : window;
  const int64_t total = static_cast<int64_t>(tokens.size());
  int64_t num_windows = (total + text_per_window - 1) / text_per_window;
  if (!bos && total % text_per_window == 1) --num_windows;  // A 1-token tail predicts nothing.
  if (options.max_windows > 0) num_windows = std::min(num_windows, options.max_windows);
  if (num_windows <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("perplexity: text has ", total, " tokens, too few to predict any"));
  }
  const int64_t num_blocks = (window + kBlockSize - 1) / kBlockSize;
  auto make_runner = [&](runtime::Model& m) -> absl::StatusOr<Runner> {
    LCD_ASSIGN_OR_RETURN(runtime::KvCache cache,
                         m.backend().CreateKvCache(m.config().num_layers,
                                                   m.KvLayoutFor(kBlockSize, kernels::DType::kF32), num_blocks));
    return Runner{&m, std::move(cache)};
  };
  LCD_ASSIGN_OR_RETURN(Runner runner, make_runner(model));
  std::optional<Runner> ref_runner;
  if (reference != nullptr) {
    LCD_ASSIGN_OR_RETURN(ref_runner, make_runner(*reference));
  }
  std::vector<int32_t> table(static_cast<size_t>(num_blocks));
  for (int64_t b = 0; b < num_blocks; ++b) table[b] = static_cast<int32_t>(b);

  Sums sums;
  for (int64_t w = 0; w < num_windows; ++w) {
    const int64_t begin = w * text_per_window;
    const int64_t end = std::min(total, begin + text_per_window);
    std::vector<int32_t> win;
    if (bos) win.push_back(*bos);
    win.insert(win.end(), tokens.begin() + begin, tokens.begin() + end);
    LCD_RETURN_IF_ERROR(EvalWindow(runner, ref_runner ? &*ref_runner : nullptr, table, win, options.score_from, sums));
    if (options.progress && sums.predicted > 0) {
      options.progress(w + 1, num_windows, std::exp(sums.nll / static_cast<double>(sums.predicted)));
    }
  }
  if (sums.predicted == 0) {
    return absl::InvalidArgumentError(absl::StrCat("perplexity: no position at or after score-from ",
                                                   options.score_from, " in ", num_windows, " window(s)"));
  }
  const double predicted = static_cast<double>(sums.predicted);
  PerplexityResult r;
  r.mean_nll = sums.nll / predicted;
  r.ppl = std::exp(r.mean_nll);
  r.predicted_tokens = sums.predicted;
  r.windows = num_windows;
  r.window = window;
  if (reference != nullptr) {
    r.mean_kl = sums.kl / predicted;
    r.top1_agreement = static_cast<double>(sums.agree) / predicted;
  }
  return r;
}

}  // namespace lcd::quantizer
