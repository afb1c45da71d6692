// BitDistiller's STE quantizer in the training loop (contract in
// lcd/quantizer/train/bitdistiller_loop.h).
#include "lcd/quantizer/train/bitdistiller_loop.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "lcd/kernels/dtype.h"

namespace lcd::quantizer::train {
namespace {

constexpr float kMinRange = 1e-5f;  // The reference's clamp of max - min.

// Runs fn(row, group, col0, n) for every group, each row on one thread.
template <typename Fn>
void ForGroups(int64_t rows, int64_t cols, int64_t group_size, kernels::ThreadPool* pool, Fn fn) {
  const int64_t groups = (cols + group_size - 1) / group_size;
  kernels::ParallelFor(pool, rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * group_size;
        fn(r, c0, std::min(group_size, cols - c0));
      }
    }
  });
}

}  // namespace

void BitDistillerLoopQuantizer::Decode(const float* w, const float*, float* w_hat, kernels::ThreadPool* pool) const {
  const int64_t C = cols();
  ForGroups(rows(), C, group_size_, pool, [&](int64_t r, int64_t c0, int64_t n) {
    uint8_t codes[256];
    uint16_t params[8];
    std::vector<uint8_t> big;
    uint8_t* cp = codes;
    if (n > 256) {
      big.resize(static_cast<size_t>(n));
      cp = big.data();
    }
    const float* wg = w + r * C + c0;
    BitDistillerQuantizeGroup(format_, bits_, wg, n, cp, params);
    for (int64_t i = 0; i < n; ++i) w_hat[r * C + c0 + i] = BitDistillerDecodeCode(format_, params, cp[i]);
  });
}

void BitDistillerLoopQuantizer::Assign(const float* w, const float*, uint8_t* codes, kernels::ThreadPool* pool) const {
  const int64_t C = cols();
  ForGroups(rows(), C, group_size_, pool, [&](int64_t r, int64_t c0, int64_t n) {
    uint16_t params[8];
    BitDistillerQuantizeGroup(format_, bits_, w + r * C + c0, n, codes + r * C + c0, params);
  });
}

void BitDistillerLoopQuantizer::Backward(const float* w, const float*, const float* dw_hat, float* dw, float*,
                                         kernels::ThreadPool* pool) const {
  if (dw == nullptr) return;
  const int64_t C = cols();
  const bool nf3 = format_ == BitDistillerFormat::kNf3;
  const int maxq = (1 << bits_) - 1;
  ForGroups(rows(), C, group_size_, pool, [&](int64_t r, int64_t c0, int64_t n) {
    const float* wg = w + r * C + c0;
    const float* dg = dw_hat + r * C + c0;
    float* out = dw + r * C + c0;
    float lo = wg[0], hi = wg[0];
    for (int64_t i = 1; i < n; ++i) {
      lo = std::min(lo, wg[i]);
      hi = std::max(hi, wg[i]);
    }
    double dmax = 0.0, dmin = 0.0;
    if (nf3) {
      const float sp = std::abs(hi), sn = std::abs(lo);
      double gp = 0.0, gn = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        out[i] += dg[i];
        if (!range_grad_) continue;
        if (wg[i] >= 0.0f) {
          if (sp == 0.0f) continue;
          const float ratio = wg[i] / sp;
          int k = 3;
          for (int t = 3; t < 7; ++t) {
            if (ratio >= kNf3Thresholds[t]) k = t + 1;
          }
          gp += static_cast<double>(dg[i]) * (static_cast<double>(kNf3Levels[k]) - ratio);
        } else {
          const float ratio = wg[i] / sn;
          int k = 0;
          for (int t = 0; t < 3; ++t) {
            if (ratio >= kNf3Thresholds[t]) k = t + 1;
          }
          gn += static_cast<double>(dg[i]) * (static_cast<double>(kNf3Levels[k]) - ratio);
        }
      }
      dmax = hi > 0.0f ? gp : (hi < 0.0f ? -gp : 0.0);
      dmin = lo > 0.0f ? gn : (lo < 0.0f ? -gn : 0.0);
    } else {
      uint16_t scale16 = kernels::FloatToFp16(std::max(hi - lo, kMinRange) / static_cast<float>(maxq));
      if (scale16 == 0) scale16 = 1;
      const float scale = kernels::Fp16ToFloat(scale16);
      const float zero = std::clamp(-std::round(lo / scale), 0.0f, static_cast<float>(maxq));
      double gs = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const float u = wg[i] / scale;
        const float t = std::round(u) + zero;
        const bool in = t >= 0.0f && t <= static_cast<float>(maxq);
        if (in) out[i] += dg[i];
        if (!range_grad_) continue;
        const float q = std::clamp(t, 0.0f, static_cast<float>(maxq));
        gs += static_cast<double>(dg[i]) * (static_cast<double>(q - zero) - (in ? static_cast<double>(u) : 0.0));
      }
      if (hi - lo >= kMinRange) {
        dmax = gs / maxq;
        dmin = -gs / maxq;
      }
    }
    if (!range_grad_) return;
    int64_t n_hi = 0, n_lo = 0;
    for (int64_t i = 0; i < n; ++i) {
      n_hi += wg[i] == hi;
      n_lo += wg[i] == lo;
    }
    const float share_hi = static_cast<float>(dmax / n_hi), share_lo = static_cast<float>(dmin / n_lo);
    for (int64_t i = 0; i < n; ++i) {
      if (wg[i] == hi) out[i] += share_hi;
      if (wg[i] == lo) out[i] += share_lo;
    }
  });
}

}  // namespace lcd::quantizer::train
