#include "lcd/quantizer/train/codebook_linear.h"

#include <algorithm>
#include <cmath>

#include "lcd/quantizer/train/loop_quantizer.h"
#include "lcd/quantizer/train/ops.h"

namespace lcd::quantizer::train {
namespace {

// The index of the centroid of cent[0..k) nearest to v, the lowest on a tie.
uint8_t NearestCentroid(float v, const float* cent, int64_t k) {
  int64_t best = 0;
  float best_d = std::abs(v - cent[0]);
  for (int64_t q = 1; q < k; ++q) {
    const float d = std::abs(v - cent[q]);
    if (d < best_d) {
      best_d = d;
      best = q;
    }
  }
  return static_cast<uint8_t>(best);
}

}  // namespace

void CodebookAssign(const float* w, const float* centroids, const CodebookShape& s, uint8_t* codes,
                    kernels::ThreadPool* pool) {
  const int64_t groups = s.groups();
  kernels::ParallelFor(pool, s.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < s.cols; ++c) {
        codes[r * s.cols + c] =
            NearestCentroid(w[r * s.cols + c], centroids + (r * groups + c / s.group_size) * s.k, s.k);
      }
    }
  });
}

int64_t CodebookMergeSplit(const float* w, float* centroids, const CodebookShape& s, float tau, uint8_t* codes,
                           std::vector<int64_t>* changed) {
  const int64_t groups = s.groups(), k = s.k;
  int64_t n_changed = 0;
  std::vector<int64_t> count(static_cast<size_t>(k));
  std::vector<float> c(static_cast<size_t>(k));
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * s.group_size, c1 = std::min(s.cols, c0 + s.group_size);
      const float* wr = w + r * s.cols;
      uint8_t* qr = codes + r * s.cols;
      float* cent = centroids + (r * groups + g) * k;
      float lo = wr[c0], hi = wr[c0];
      std::fill(count.begin(), count.end(), 0);
      for (int64_t j = c0; j < c1; ++j) {
        lo = std::min(lo, wr[j]);
        hi = std::max(hi, wr[j]);
        ++count[qr[j]];
      }
      // The closest pair (a < b).
      int64_t a = -1, b = -1;
      float gap = 0.0f;
      for (int64_t i = 0; i < k; ++i) {
        for (int64_t j = i + 1; j < k; ++j) {
          const float d = std::abs(cent[i] - cent[j]);
          if (a < 0 || d < gap) {
            gap = d;
            a = i;
            b = j;
          }
        }
      }
      if (a < 0 || !(hi > lo) || !(gap < tau * (hi - lo))) continue;
      std::copy(cent, cent + k, c.begin());
      const int64_t na = count[a], nb = count[b];
      c[a] = na + nb > 0 ? static_cast<float>((static_cast<double>(na) * cent[a] + static_cast<double>(nb) * cent[b]) /
                                              static_cast<double>(na + nb))
                         : 0.5f * (cent[a] + cent[b]);
      count[a] += count[b];
      count[b] = 0;
      int64_t m = -1;
      for (int64_t i = 0; i < k; ++i) {
        if (i != b && (m < 0 || count[i] > count[m])) m = i;
      }
      // The members of m (those of b joined a), split at m's merged value.
      double sum_lo = 0.0, sum_hi = 0.0;
      int64_t n_lo = 0, n_hi = 0;
      for (int64_t j = c0; j < c1; ++j) {
        const int64_t q = qr[j] == b ? a : qr[j];
        if (q != m) continue;
        if (wr[j] < c[m]) {
          sum_lo += wr[j];
          ++n_lo;
        } else {
          sum_hi += wr[j];
          ++n_hi;
        }
      }
      if (n_lo == 0 || n_hi == 0) continue;
      c[m] = static_cast<float>(sum_lo / static_cast<double>(n_lo));
      c[b] = static_cast<float>(sum_hi / static_cast<double>(n_hi));
      std::copy(c.begin(), c.end(), cent);
      for (int64_t j = c0; j < c1; ++j) qr[j] = NearestCentroid(wr[j], cent, k);
      ++n_changed;
      if (changed != nullptr) changed->push_back(r * groups + g);
    }
  }
  return n_changed;
}

void CodebookDecode(const float* centroids, const uint8_t* codes, const CodebookShape& s, float* w_hat,
                    kernels::ThreadPool* pool) {
  const int64_t groups = s.groups();
  kernels::ParallelFor(pool, s.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < s.cols; ++c) {
        w_hat[r * s.cols + c] = centroids[(r * groups + c / s.group_size) * s.k + codes[r * s.cols + c]];
      }
    }
  });
}

void CodebookLinearForward(const float* x, const float* centroids, const uint8_t* codes, const float* b,
                           const CodebookShape& s, int64_t T, float* w_hat, float* y, kernels::ThreadPool* pool) {
  CodebookDecode(centroids, codes, s, w_hat, pool);
  LinearForward(x, w_hat, b, T, s.cols, s.rows, y);
}

void CodebookWeightBackward(const float* dw_hat, const uint8_t* codes, const CodebookShape& s, float* dw_latent,
                            float* dcentroids, kernels::ThreadPool* pool) {
  const int64_t groups = s.groups();
  // Each row's weights and centroids belong to one thread; within a row the
  // centroid sums run over the columns in order.
  kernels::ParallelFor(pool, s.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = dw_hat + r * s.cols;
      if (dw_latent != nullptr) {
        float* d = dw_latent + r * s.cols;
        for (int64_t c = 0; c < s.cols; ++c) d[c] += g[c];
      }
      if (dcentroids != nullptr) {
        for (int64_t c = 0; c < s.cols; ++c) {
          dcentroids[(r * groups + c / s.group_size) * s.k + codes[r * s.cols + c]] += g[c];
        }
      }
    }
  });
}

void CodebookLinearBackward(const float* dy, const float* x, const float* w_hat, const uint8_t* codes,
                            const CodebookShape& s, int64_t T, float* dw_hat, float* dx, float* dw_latent,
                            float* dcentroids, float* db, kernels::ThreadPool* pool) {
  std::fill(dw_hat, dw_hat + s.rows * s.cols, 0.0f);
  LinearBackward(dy, x, w_hat, T, s.cols, s.rows, dx, dw_hat, db, pool);
  CodebookWeightBackward(dw_hat, codes, s, dw_latent, dcentroids, pool);
}

void CodebookLoopQuantizer::Decode(const float* w, const float* params, float* w_hat,
                                   kernels::ThreadPool* pool) const {
  CodebookDecode(params, codes().data(), shape_, w_hat, pool);
}

void CodebookLoopQuantizer::Backward(const float* w, const float* params, const float* dw_hat, float* dw,
                                     float* dparams, kernels::ThreadPool* pool) const {
  CodebookWeightBackward(dw_hat, codes().data(), shape_, dw, dparams, pool);
}

void CodebookLoopQuantizer::Assign(const float* w, const float* params, uint8_t* codes,
                                   kernels::ThreadPool* pool) const {
  CodebookAssign(w, params, shape_, codes, pool);
}

int64_t CodebookLoopQuantizer::MergeSplit(const float* w, float* params, float tau, std::vector<int64_t>* changed) {
  return CodebookMergeSplit(w, params, shape_, tau, codes().data(), changed);
}

}  // namespace lcd::quantizer::train
