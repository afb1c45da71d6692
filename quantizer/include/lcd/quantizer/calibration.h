// Calibration statistics for importance-weighted quantization (LCD.md step 1
// and step 3's importance): E[x_j^2] of the input of every linear layer,
// measured by running the full-precision model over calibration text.
//
// Protocol (the windows of lcd eval-ppl): the token stream (text tokenized
// without BOS) is cut into consecutive non-overlapping windows; a window is
// [BOS] + window-1 text tokens when `bos` is set, otherwise `window` text
// tokens. Each window is one sequence starting at position 0, run with
// Model::Forward in chunks of at most 256 tokens with logits for every
// position (so lm_head's input is observed at every position too), with the
// model's LinearInputObserver installed; every position of every window (BOS
// included) is one sample of every linear layer the model reports (q/k/v/o,
// gate/up/down of each layer, and lm_head.weight).
//
// Second-moment matrices (GPTQ's Hessian, the output error of GLVQ and of
// BitDistiller's clipping search): for the weights `gram_for` accepts,
// E[x x^T] of the layer input over all samples, [cols][cols] in double.
// Weights that read the same input (q/k/v, gate/up: reported one after the
// other with the same x) share one matrix, accumulated once.
//
// Thread safety: Collect drives `model` (Forward is not reentrant) and
// installs, then removes, its observer; nothing else may use the model
// meanwhile.
#ifndef LCD_QUANTIZER_CALIBRATION_H_
#define LCD_QUANTIZER_CALIBRATION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/tokenizer.h"

namespace lcd::quantizer {

struct CalibrationOptions {
  // Tokens per window including BOS; 0 = min(512, max_position_embeddings).
  int64_t window = 0;
  // Start each window with this token (the tokenizer's BOS), or not.
  std::optional<int32_t> bos;
  // Called after each window with (windows done, windows in all); may be empty.
  std::function<void(int64_t, int64_t)> progress;
  // Weights whose input second-moment matrix is collected; empty = none.
  std::function<bool(std::string_view weight_name)> gram_for;
};

// E[x x^T] of one linear input: full symmetric [cols][cols], row-major.
struct InputGram {
  int64_t cols = 0;
  int64_t samples = 0;
  std::vector<double> xtx;
};

struct CalibrationStats {
  int64_t samples = 0;       // Token positions run through the model (BOS included).
  int64_t text_tokens = 0;   // Of those, tokens of the text.
  int64_t windows = 0;
  // Hugging Face weight name ("model.layers.0.self_attn.q_proj.weight") ->
  // E[x_j^2] over all samples, one value per input column, accumulated in
  // double and rounded once.
  std::map<std::string, std::vector<float>, std::less<>> mean_sq;
  // Weight name -> max |x_j| over all samples, per input column (activation
  // smoothing, LCD.md step 2).
  std::map<std::string, std::vector<float>, std::less<>> max_abs;

  // Weight name -> E[x x^T] of its input (only the weights gram_for
  // accepted); weights sharing an input share the pointer.
  std::map<std::string, std::shared_ptr<const InputGram>, std::less<>> gram;

  // The statistics of one weight, or nullptr when it was never observed.
  const std::vector<float>* Find(std::string_view weight_name) const;
  const InputGram* FindGram(std::string_view weight_name) const;
  const std::vector<float>* FindMaxAbs(std::string_view weight_name) const;
};

// Runs `tokens` through `model` as described above. Errors: InvalidArgument
// for an empty token stream, a window outside [2, max_position_embeddings]
// (or < 1 text token per window), a token id outside the vocabulary, or an
// observer reporting two widths for one weight; FailedPrecondition when the
// model reported no linear inputs at all (a model without the observer hook);
// any error of Forward, unchanged.
absl::StatusOr<CalibrationStats> CollectCalibrationStats(runtime::Model& model,
                                                         const std::vector<int32_t>& tokens,
                                                         const CalibrationOptions& options);

// Reads a UTF-8 text file and tokenizes it without BOS, keeping at most
// max_tokens tokens (0 = all). NotFound when the file cannot be read;
// InvalidArgument when it yields no tokens; tokenizer errors unchanged.
absl::StatusOr<std::vector<int32_t>> TokenizeTextFile(const std::string& path, const runtime::Tokenizer& tokenizer,
                                                      int64_t max_tokens);

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_CALIBRATION_H_
