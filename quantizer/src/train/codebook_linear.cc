#include "lcd/quantizer/train/codebook_linear.h"

#include <algorithm>
#include <cmath>

#include "lcd/quantizer/train/loop_quantizer.h"
#include "lcd/quantizer/train/ops.h"

namespace lcd::quantizer::train {

void CodebookAssign(const float* w, const float* centroids, const CodebookShape& s, uint8_t* codes,
                    kernels::ThreadPool* pool) {
  const int64_t groups = s.groups();
  kernels::ParallelFor(pool, s.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < s.cols; ++c) {
        const float* cent = centroids + (r * groups + c / s.group_size) * s.k;
        const float v = w[r * s.cols + c];
        int64_t best = 0;
        float best_d = std::abs(v - cent[0]);
        for (int64_t q = 1; q < s.k; ++q) {
          const float d = std::abs(v - cent[q]);
          if (d < best_d) {
            best_d = d;
            best = q;
          }
        }
        codes[r * s.cols + c] = static_cast<uint8_t>(best);
      }
    }
  });
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

}  // namespace lcd::quantizer::train
