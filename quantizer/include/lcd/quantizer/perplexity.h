// Perplexity of a model on a token stream: the one implementation behind
// `lcd eval-ppl` and the figures `lcd quantize` stamps into a manifest.
// Protocol (Hugging Face "perplexity of fixed-length models" with stride =
// window, also what llama.cpp's wikitext-2 figures use):
//
// the stream (text tokenized without BOS) is cut into non-overlapping
// windows; with `bos` each window is [BOS] + the next window-1 text tokens
// and every text token is predicted once; without it a window is `window`
// text tokens and its first token is context only (a 1-token tail is
// dropped). ppl = exp(mean NLL over predicted tokens), accumulated in double.
//
// With score_from > 0 only the positions i >= score_from of each window
// predict (logits row i scores token i + 1); the earlier ones are context.
// llama.cpp's `llama-perplexity` is this protocol with no BOS and
// score_from = window / 2 (its chunks of n_ctx text tokens, the second half
// scored): `lcd eval-ppl --no-bos --window 1024 --score-from 512` measures
// what it measures, on the same tokens.
//
// With a `reference` model (the full-precision source of a quantized one, on
// the same vocabulary) every predicted position also gets
// KL(P_ref || P_model) = sum_v p_ref(v) (log p_ref(v) - log p_model(v)), in
// nats, and whether the two argmaxes agree; the result holds their means over
// the predicted tokens (the quantity llama.cpp's `--kl-divergence` reports).
//
// Thread safety: drives `model` and `reference` (Forward is not reentrant).
#ifndef LCD_QUANTIZER_PERPLEXITY_H_
#define LCD_QUANTIZER_PERPLEXITY_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/runtime/model.h"

namespace lcd::quantizer {

struct PerplexityResult {
  double ppl = 0.0;
  double mean_nll = 0.0;
  int64_t predicted_tokens = 0;
  int64_t windows = 0;
  int64_t window = 0;  // The window length used.
  // Only with a reference model: mean KL(P_ref || P_model) in nats per
  // predicted token, and the fraction of positions whose argmaxes agree.
  std::optional<double> mean_kl;
  std::optional<double> top1_agreement;
};

// Called after every window with (windows done, windows in all, running ppl).
using PerplexityProgress = std::function<void(int64_t done, int64_t total, double running_ppl)>;

struct PerplexityOptions {
  std::optional<int32_t> bos;  // Each window starts with it (none: the first text token is context).
  int64_t window = 0;          // 0 = min(2048, max_position_embeddings).
  int64_t max_windows = 0;     // 0 = all.
  int64_t score_from = 0;      // The first scored position of a window.
  PerplexityProgress progress;
  runtime::Model* reference = nullptr;  // For KL and top-1 agreement.
};

// InvalidArgument for a window outside [2, max_position_embeddings], a
// score_from outside [0, window - 1), a stream too short to predict anything,
// or a reference whose vocabulary differs; Forward's errors unchanged.
absl::StatusOr<PerplexityResult> EvaluatePerplexity(runtime::Model& model, const std::vector<int32_t>& tokens,
                                                    const PerplexityOptions& options);

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_PERPLEXITY_H_
