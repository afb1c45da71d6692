#include "lcd/quantizer/perplexity.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/kv_cache.h"

namespace lcd::quantizer {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr int64_t kForwardChunk = 512;  // Tokens per Forward call (bounds logits memory).

absl::Status EvalWindow(runtime::Model& model, runtime::KvCache& cache, const std::vector<int32_t>& table,
                        const std::vector<int32_t>& window, double& nll_sum, int64_t& predicted) {
  const int64_t vocab = model.config().vocab_size;
  const int64_t n = static_cast<int64_t>(window.size());
  for (int64_t start = 0; start < n; start += kForwardChunk) {
    const int64_t end = std::min(n, start + kForwardChunk);
    runtime::SeqBatchEntry e;
    e.tokens.assign(window.begin() + start, window.begin() + end);
    e.start_pos = start;
    e.block_table = &table;
    e.all_logits = true;
    LCD_ASSIGN_OR_RETURN(runtime::ForwardOutput out, model.Forward({e}, cache));
    for (int64_t i = start; i < end && i + 1 < n; ++i) {
      const float* row = out.logits.data() + (i - start) * vocab;
      const float mx = *std::max_element(row, row + vocab);
      double z = 0.0;
      for (int64_t v = 0; v < vocab; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
      nll_sum += std::log(z) + mx - row[window[i + 1]];
      ++predicted;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PerplexityResult> EvaluatePerplexity(runtime::Model& model, const std::vector<int32_t>& tokens,
                                                    std::optional<int32_t> bos, int64_t window,
                                                    int64_t max_windows, const PerplexityProgress& progress) {
  const runtime::ModelConfig& config = model.config();
  if (window == 0) window = std::min<int64_t>(2048, config.max_position_embeddings);
  if (window < 2 || window > config.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity: window must be in [2, ", config.max_position_embeddings, "], got ", window));
  }
  const int64_t text_per_window = bos ? window - 1 : window;
  const int64_t total = static_cast<int64_t>(tokens.size());
  int64_t num_windows = (total + text_per_window - 1) / text_per_window;
  if (!bos && total % text_per_window == 1) --num_windows;  // A 1-token tail predicts nothing.
  if (max_windows > 0) num_windows = std::min(num_windows, max_windows);
  if (num_windows <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("perplexity: text has ", total, " tokens, too few to predict any"));
  }
  const int64_t num_blocks = (window + kBlockSize - 1) / kBlockSize;
  LCD_ASSIGN_OR_RETURN(runtime::KvCache cache,
                       model.backend().CreateKvCache(config.num_layers,
                                                                   model.KvLayoutFor(kBlockSize, kernels::DType::kF32), num_blocks));
  std::vector<int32_t> table(static_cast<size_t>(num_blocks));
  for (int64_t b = 0; b < num_blocks; ++b) table[b] = static_cast<int32_t>(b);

  double nll_sum = 0.0;
  int64_t predicted = 0;
  for (int64_t w = 0; w < num_windows; ++w) {
    const int64_t begin = w * text_per_window;
    const int64_t end = std::min(total, begin + text_per_window);
    std::vector<int32_t> win;
    if (bos) win.push_back(*bos);
    win.insert(win.end(), tokens.begin() + begin, tokens.begin() + end);
    LCD_RETURN_IF_ERROR(EvalWindow(model, cache, table, win, nll_sum, predicted));
    if (progress) progress(w + 1, num_windows, std::exp(nll_sum / static_cast<double>(predicted)));
  }
  PerplexityResult r;
  r.mean_nll = nll_sum / static_cast<double>(predicted);
  r.ppl = std::exp(r.mean_nll);
  r.predicted_tokens = predicted;
  r.windows = num_windows;
  r.window = window;
  return r;
}

}  // namespace lcd::quantizer
