#include "lcd/quantizer/calibration.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string_view>

#include <cblas.h>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/kv_cache.h"

namespace lcd::quantizer {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr int64_t kForwardChunk = 256;  // Bounds the activations and logits one Forward holds.

struct Accumulator {
  std::vector<double> sum_sq;
  std::vector<float> max_abs;
  int64_t rows = 0;
};

// E[x x^T] of one input, shared by the weights that read it.
struct GramAccumulator {
  int64_t cols = 0;
  int64_t rows = 0;
  std::vector<double> sum;     // Upper triangle used while accumulating.
  std::vector<float> scratch;  // One call's X^T X (cblas_ssyrk, upper).
  void Add(const float* x, int64_t m) {
    scratch.assign(static_cast<size_t>(cols * cols), 0.0f);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(cols), static_cast<int>(m), 1.0f, x,
                static_cast<int>(cols), 0.0f, scratch.data(), static_cast<int>(cols));
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = i; j < cols; ++j) sum[i * cols + j] += scratch[i * cols + j];
    }
    rows += m;
  }
};

}  // namespace

const std::vector<float>* CalibrationStats::Find(std::string_view weight_name) const {
  auto it = mean_sq.find(weight_name);
  return it == mean_sq.end() ? nullptr : &it->second;
}

const std::vector<float>* CalibrationStats::FindMaxAbs(std::string_view weight_name) const {
  auto it = max_abs.find(weight_name);
  return it == max_abs.end() ? nullptr : &it->second;
}

const InputGram* CalibrationStats::FindGram(std::string_view weight_name) const {
  auto it = gram.find(weight_name);
  return it == gram.end() ? nullptr : it->second.get();
}

absl::StatusOr<CalibrationStats> CollectCalibrationStats(runtime::Model& model, const std::vector<int32_t>& tokens,
                                                         const CalibrationOptions& options) {
  const runtime::ModelConfig& config = model.config();
  if (tokens.empty()) return absl::InvalidArgumentError("calibration: no tokens");
  const int64_t window =
      options.window > 0 ? options.window : std::min<int64_t>(512, config.max_position_embeddings);
  const int64_t text_per_window = options.bos ? window - 1 : window;
  if (window < 2 || window > config.max_position_embeddings || text_per_window < 1) {
    return absl::InvalidArgumentError(absl::StrCat("calibration: window must be in [2, ",
                                                   config.max_position_embeddings, "], got ", window));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("calibration: token ", i, " is id ", tokens[i],
                                                     ", outside the vocabulary of ", config.vocab_size));
    }
  }

  std::map<std::string, Accumulator, std::less<>> acc;
  std::map<std::string, std::shared_ptr<GramAccumulator>, std::less<>> gram_of;
  const float* last_x = nullptr;  // The previous observer call, to find shared inputs.
  int64_t last_m = 0, last_cols = 0;
  GramAccumulator* last_gram = nullptr;
  std::string width_error;  // The observer cannot return a status: remember the first fault.
  model.SetLinearInputObserver([&](std::string_view name, const float* x, int64_t m, int64_t cols) {
    auto it = acc.find(name);
    if (it == acc.end()) {
      it = acc.emplace(std::string(name), Accumulator{}).first;
      it->second.sum_sq.assign(static_cast<size_t>(cols), 0.0);
      it->second.max_abs.assign(static_cast<size_t>(cols), 0.0f);
    }
    Accumulator& a = it->second;
    if (static_cast<int64_t>(a.sum_sq.size()) != cols) {
      if (width_error.empty()) {
        width_error = absl::StrCat("calibration: ", std::string(name), " reported ", cols, " columns after ", a.sum_sq.size());
      }
      return;
    }
    for (int64_t r = 0; r < m; ++r) {
      const float* row = x + r * cols;
      for (int64_t j = 0; j < cols; ++j) {
        a.sum_sq[j] += static_cast<double>(row[j]) * row[j];
        a.max_abs[j] = std::max(a.max_abs[j], std::abs(row[j]));
      }
    }
    a.rows += m;
    if (!options.gram_for) return;
    // Weights reported one after the other with the same input share one
    // matrix; it is accumulated by the first of them only.
    GramAccumulator* previous = last_gram;
    const bool same_input = x == last_x && m == last_m && cols == last_cols;
    last_x = x, last_m = m, last_cols = cols, last_gram = nullptr;
    auto g = gram_of.find(name);
    if (g == gram_of.end()) {
      if (!options.gram_for(name)) return;
      std::shared_ptr<GramAccumulator> shared;
      if (same_input && previous != nullptr) {
        for (auto& [unused, p] : gram_of) {
          if (p.get() == previous) shared = p;
        }
      }
      if (!shared) {
        shared = std::make_shared<GramAccumulator>();
        shared->cols = cols;
        shared->sum.assign(static_cast<size_t>(cols * cols), 0.0);
      }
      g = gram_of.emplace(std::string(name), std::move(shared)).first;
    }
    last_gram = g->second.get();
    if (same_input && previous == last_gram) return;  // Already added for this input.
    last_gram->Add(x, m);
  });
  // Whatever happens below, the model must not keep a hook into this frame.
  struct Uninstall {
    runtime::Model& model;
    ~Uninstall() { model.SetLinearInputObserver(nullptr); }
  } uninstall{model};

  const int64_t num_blocks = (window + kBlockSize - 1) / kBlockSize;
  LCD_ASSIGN_OR_RETURN(runtime::KvCache cache,
                       model.backend().CreateKvCache(config.num_layers,
                                                                   model.KvLayoutFor(kBlockSize, kernels::DType::kF32), num_blocks));
  std::vector<int32_t> table(static_cast<size_t>(num_blocks));
  for (int64_t b = 0; b < num_blocks; ++b) table[b] = static_cast<int32_t>(b);

  CalibrationStats stats;
  const int64_t total = static_cast<int64_t>(tokens.size());
  const int64_t num_windows = (total + text_per_window - 1) / text_per_window;
  for (int64_t w = 0; w < num_windows; ++w) {
    const int64_t begin = w * text_per_window;
    const int64_t end = std::min(total, begin + text_per_window);
    std::vector<int32_t> seq;
    if (options.bos) seq.push_back(*options.bos);
    seq.insert(seq.end(), tokens.begin() + begin, tokens.begin() + end);
    const int64_t n = static_cast<int64_t>(seq.size());
    for (int64_t start = 0; start < n; start += kForwardChunk) {
      runtime::SeqBatchEntry e;
      e.tokens.assign(seq.begin() + start, seq.begin() + std::min(n, start + kForwardChunk));
      e.start_pos = start;
      e.block_table = &table;
      e.all_logits = true;  // lm_head sees (and reports) only the rows that produce logits.
      LCD_RETURN_IF_ERROR(model.Forward({e}, cache).status());
      if (!width_error.empty()) return absl::InvalidArgumentError(width_error);
    }
    stats.samples += n;
    stats.text_tokens += end - begin;
    ++stats.windows;
    if (options.progress) options.progress(w + 1, num_windows);
  }
  if (acc.empty()) {
    return absl::FailedPreconditionError(
        "calibration: the model reported no linear-layer inputs (its Model lacks the observer hook)");
  }
  for (auto& [name, a] : acc) {
    std::vector<float>& out = stats.mean_sq[name];
    out.resize(a.sum_sq.size());
    for (size_t j = 0; j < out.size(); ++j) out[j] = static_cast<float>(a.sum_sq[j] / std::max<int64_t>(1, a.rows));
    stats.max_abs[name] = a.max_abs;
  }
  std::map<const GramAccumulator*, std::shared_ptr<const InputGram>> finished;
  for (auto& [name, a] : gram_of) {
    std::shared_ptr<const InputGram>& out = finished[a.get()];
    if (!out) {
      auto g = std::make_shared<InputGram>();
      g->cols = a->cols;
      g->samples = a->rows;
      g->xtx.resize(a->sum.size());
      const double inv = 1.0 / static_cast<double>(std::max<int64_t>(1, a->rows));
      for (int64_t i = 0; i < a->cols; ++i) {
        for (int64_t j = i; j < a->cols; ++j) {
          g->xtx[i * a->cols + j] = g->xtx[j * a->cols + i] = a->sum[i * a->cols + j] * inv;
        }
      }
      out = std::move(g);
    }
    stats.gram[name] = out;
  }
  return stats;
}

absl::StatusOr<std::vector<int32_t>> TokenizeTextFile(const std::string& path, const runtime::Tokenizer& tokenizer,
                                                      int64_t max_tokens) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read text file ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  LCD_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, tokenizer.Encode(buffer.str(), /*add_bos=*/false));
  if (tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("text file ", path, " yields no tokens"));
  if (max_tokens > 0 && static_cast<int64_t>(tokens.size()) > max_tokens) tokens.resize(max_tokens);
  return tokens;
}

}  // namespace lcd::quantizer
