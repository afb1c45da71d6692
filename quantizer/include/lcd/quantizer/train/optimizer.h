// AdamW (decoupled weight decay), learning-rate schedules with warmup and
// global-norm gradient clipping for the training core. All are elementwise
// or fixed-order reductions: the same inputs give bit-identical results.
#ifndef LCD_QUANTIZER_TRAIN_OPTIMIZER_H_
#define LCD_QUANTIZER_TRAIN_OPTIMIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/thread_pool.h"

namespace lcd::quantizer::train {

// One named tensor inside a flat parameter (and gradient) buffer.
struct ParamTensor {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // Into the flat buffers.
  int64_t size = 0;
  bool decay = false;  // Weight decay applies (matrices: yes; norms, biases: no).
  float lr_scale = 1.0f;  // AdamW::Step uses lr * lr_scale for this tensor (per-tensor lr).
};

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// torch.optim.AdamW's update (amsgrad off), per element, for step t >= 1
// (lr = the step's lr times the tensor's lr_scale):
//   p -= lr * wd * p                       (decoupled decay, decay tensors only)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
class AdamW {
 public:
  AdamW(int64_t num_params, const AdamWOptions& options);
  // One optimisation step over every tensor of `tensors` (params and grads
  // are the flat buffers they index) at learning rate `lr`.
  void Step(float* params, const float* grads, const std::vector<ParamTensor>& tensors, double lr,
            kernels::ThreadPool* pool);
  int64_t steps_taken() const { return t_; }
  // The moment estimates (indexed like the flat parameters) and the step
  // count, for checkpoints: saved, then restored into a fresh AdamW.
  float* m() { return m_.data(); }
  float* v() { return v_.data(); }
  void set_steps_taken(int64_t t) { t_ = t; }

 private:
  AdamWOptions opt_;
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

// Linear warmup, lr(step) = max_lr * (step + 1) / warmup_steps for
// step < warmup_steps, then (progress = (step - warmup) / max(1, total -
// warmup), clamped to [0, 1]): constant max_lr; linear max - (max - min) *
// progress; cosine min + (max - min) (1 + cos(pi progress)) / 2.
struct LrSchedule {
  enum class Kind { kConstant, kLinear, kCosine };
  Kind kind = Kind::kCosine;
  double max_lr = 1e-3;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double At(int64_t step) const;  // step counts from 0.
};
// "constant", "linear" or "cosine"; InvalidArgument otherwise.
absl::StatusOr<LrSchedule::Kind> ParseLrScheduleKind(const std::string& name);

// Global L2 norm of grads[0, n) (summed in double over fixed blocks of 2^16,
// the blocks' sums added in order: the same whatever the threads); when it
// exceeds max_norm > 0 the gradients are scaled by max_norm / (norm + 1e-6),
// as torch.nn.utils.clip_grad_norm_ does. Returns the norm before clipping.
// The pool may be nullptr (the calling thread; the first overload).
double ClipGradNorm(float* grads, int64_t n, double max_norm);
double ClipGradNorm(float* grads, int64_t n, double max_norm, kernels::ThreadPool* pool);

}  // namespace lcd::quantizer::train

#endif  // LCD_QUANTIZER_TRAIN_OPTIMIZER_H_
