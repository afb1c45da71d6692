// Adaptive activation smoothing (LCD.md step 2, SmoothQuant with a per-input
// alpha), folded exactly into the student model so that no new weight format
// is needed.
//
// For one linear input x (shared by the weights W_1..W_n that read it) and
// input channel j:
//   s_j(alpha) = max|x_j|^alpha / max_{i,r} |W_i[r][j]|^(1-alpha),
// then divided by the geometric mean of s over the channels where both
// maxima are > 0 (a common factor changes nothing in exact arithmetic and
// keeps smoothed weights and norms in fp16's comfortable range); channels
// with a zero maximum get s_j = 1; s_j is clamped to [1e-4, 1e4].
// W' = W diag(s) is what the method quantizes; x' = x diag(s)^-1 is folded
// into whatever produces x:
//   q/k/v          input_layernorm.weight[j] /= s_j
//   gate/up        post_attention_layernorm.weight[j] /= s_j
//   o_proj         v_proj.weight row (kv-head, d) /= s and v_proj.bias (Qwen2);
//                  o's channel j = (q head h, d) reads v of kv head
//                  h / (heads / kv_heads), so s must be equal over the q heads
//                  of one kv head: both maxima are first taken over those
//                  heads (tie classes), then s is computed per class.
//   down_proj      up_proj.weight row j /= s_j (down's input is silu(gate)*up).
// o and down are decided first (their s changes v_proj / up_proj, which the
// q/k/v and gate/up searches then see as they will be quantized).
//
// "Adaptive": the candidates are s = 1 ("off", always present, so smoothing
// never makes the initial error worse) and s(alpha) for every alpha of the
// grid. Each candidate's error is the output error of the quantized layers
// measured in the original space on calibration data,
//   err(s) = sum over the weights sharing x of tr(E G E^T),
//   E = W - Q(W diag s; importance m_j / s_j^2) diag(s)^-1,  G = E[x x^T],
// with Q the method's own initial quantizer (a DequantFn) and m_j = E[x_j^2].
// The smallest wins (ties: the earlier candidate, "off" first).
#ifndef LCD_QUANTIZER_SMOOTHING_H_
#define LCD_QUANTIZER_SMOOTHING_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/quantizer/calibration.h"
#include "lcd/quantizer/train/train_model.h"

namespace lcd::quantizer {

// Q(w) decoded back to fp32 [rows][cols], importance[cols] (may be nullptr).
using DequantFn = std::function<absl::StatusOr<std::vector<float>>(const float* w, int64_t rows, int64_t cols,
                                                                   const float* importance)>;

// The default alpha grid {0, 0.1, ..., 0.8}.
std::vector<double> DefaultSmoothingAlphas();

// s(alpha) as above. max_x, max_w: [cols]; tie: [cols] class ids in
// [0, cols) (channels of one class get one s from the max of their maxima),
// empty = every channel its own class.
std::vector<float> SmoothingScales(const std::vector<float>& max_x, const std::vector<float>& max_w, double alpha,
                                   const std::vector<int64_t>& tie);

// One weight reading the input: [rows][cols], row-major fp32.
struct SmoothWeight {
  const float* w = nullptr;
  int64_t rows = 0;
};

struct SmoothingChoice {
  double alpha = -1.0;          // The chosen alpha; -1 = off (s = 1).
  std::vector<float> s;         // [cols] the chosen scales (all 1 when off).
  double error = 0.0;           // err of the choice.
  double error_off = 0.0;       // err with s = 1.
  std::vector<double> errors;   // err per alpha of the grid, in grid order.
};

// The search above for one input of `cols` channels. allow_off = false
// drops the s = 1 candidate (tests of the fold; an empty grid then errs).
// InvalidArgument for mismatched sizes, a grid value outside [0, 1], or a
// Gram of another width.
absl::StatusOr<SmoothingChoice> ChooseSmoothing(const std::vector<SmoothWeight>& weights, int64_t cols,
                                                const std::vector<float>& max_x, const std::vector<float>& mean_sq,
                                                const InputGram& gram, const std::vector<double>& alphas,
                                                const std::vector<int64_t>& tie, const DequantFn& quantize,
                                                bool allow_off = true);

// tr(E G E^T) for E = w - w_hat ([rows][cols]), in double.
double OutputError(const float* w, const float* w_hat, int64_t rows, int64_t cols, const InputGram& gram);

// What SmoothModel chose, per input ("model.layers.3.qkv", ".o", ".gate_up",
// ".down"), in model order.
struct SmoothingReport {
  std::vector<std::string> inputs;
  std::vector<double> alphas;      // -1 = off.
  std::vector<double> error_off;   // Sum over the inputs' weights.
  std::vector<double> error;
  // The dense tensors the fold changed (norm weights, v_proj biases): the
  // artifact must store the student's values of these.
  std::vector<std::string> changed_dense;
  // Weight name -> the s its input was divided by (only the smoothed
  // inputs): the init's importance E[x_j^2] becomes E[x_j^2] / s_j^2.
  std::map<std::string, std::vector<float>> input_scales;
};

// Chooses and folds the smoothing of every decoder input into `student`
// (weights before the quantizers' init; its FreezeDense state is kept).
// Needs stats.max_abs, stats.mean_sq and stats.gram for every decoder linear.
// Errors: InvalidArgument naming the missing statistics or tensors.
absl::StatusOr<SmoothingReport> SmoothModel(train::TrainModel& student, const CalibrationStats& stats,
                                            const std::vector<double>& alphas, const DequantFn& quantize,
                                            bool allow_off = true);

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_SMOOTHING_H_
