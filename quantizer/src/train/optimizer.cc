#include "lcd/quantizer/train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "absl/strings/str_cat.h"

namespace lcd::quantizer::train {

AdamW::AdamW(int64_t num_params, const AdamWOptions& options)
    : opt_(options), m_(static_cast<size_t>(num_params), 0.0f), v_(static_cast<size_t>(num_params), 0.0f) {}

void AdamW::Step(float* params, const float* grads, const std::vector<ParamTensor>& tensors, double lr,
                 kernels::ThreadPool* pool) {
  ++t_;
  const float b1 = static_cast<float>(opt_.beta1);
  const float b2 = static_cast<float>(opt_.beta2);
  const float bc1 = static_cast<float>(1.0 - std::pow(opt_.beta1, static_cast<double>(t_)));
  const float bc2 = static_cast<float>(1.0 - std::pow(opt_.beta2, static_cast<double>(t_)));
  const float eps = static_cast<float>(opt_.eps);
  const float inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
  for (const ParamTensor& pt : tensors) {
    const double tlr = lr * static_cast<double>(pt.lr_scale);
    const float step_size = static_cast<float>(tlr) / bc1;
    const float decay = pt.decay ? static_cast<float>(1.0 - tlr * opt_.weight_decay) : 1.0f;
    float* p = params + pt.offset;
    const float* g = grads + pt.offset;
    float* m = m_.data() + pt.offset;
    float* v = v_.data() + pt.offset;
    kernels::ParallelFor(pool, pt.size, 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        // As torch.optim.AdamW: (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps).
        p[i] = p[i] * decay - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
      }
    });
  }
}

double LrSchedule::At(int64_t step) const {
  if (step < warmup_steps) {
    return max_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  if (kind == Kind::kConstant) return max_lr;
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = std::clamp(static_cast<double>(step - warmup_steps) / span, 0.0, 1.0);
  if (kind == Kind::kLinear) return max_lr - (max_lr - min_lr) * progress;
  return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

absl::StatusOr<LrSchedule::Kind> ParseLrScheduleKind(const std::string& name) {
  if (name == "constant") return LrSchedule::Kind::kConstant;
  if (name == "linear") return LrSchedule::Kind::kLinear;
  if (name == "cosine") return LrSchedule::Kind::kCosine;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown learning-rate schedule \"", name, "\" (expected constant, linear or cosine)"));
}

double ClipGradNorm(float* grads, int64_t n, double max_norm) { return ClipGradNorm(grads, n, max_norm, nullptr); }

double ClipGradNorm(float* grads, int64_t n, double max_norm, kernels::ThreadPool* pool) {
  // Partial sums over fixed blocks (not per thread), added in block order:
  // the norm does not depend on the thread count.
  constexpr int64_t kBlock = int64_t{1} << 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
  kernels::ParallelFor(pool, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double ss = 0.0;
      for (int64_t i = b * kBlock, e = std::min(n, i + kBlock); i < e; ++i) {
        ss += static_cast<double>(grads[i]) * grads[i];
      }
      partial[b] = ss;
    }
  });
  double ss = 0.0;
  for (double p : partial) ss += p;
  const double norm = std::sqrt(ss);
  if (max_norm > 0.0 && norm > max_norm) {
    const float s = static_cast<float>(max_norm / (norm + 1e-6));
    kernels::ParallelFor(pool, n, kBlock, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) grads[i] *= s;
    });
  }
  return norm;
}

}  // namespace lcd::quantizer::train
