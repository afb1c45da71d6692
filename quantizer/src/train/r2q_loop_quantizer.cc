// R2Q's quantizer in the training loop (contract in
// lcd/quantizer/train/r2q_loop_quantizer.h).
#include "lcd/quantizer/train/r2q_loop_quantizer.h"

#include "lcd/quantizer/r2q.h"

namespace lcd::quantizer::train {

void R2qLoopQuantizer::Decode(const float* w, const float* params, float* w_hat, kernels::ThreadPool* pool) const {
  const int64_t cols = this->cols(), groups = this->groups();
  const uint8_t* codes = this->codes().data();
  kernels::ParallelFor(pool, rows(), 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const float* a = params + (r * groups + c / group_size_) * 2;
        w_hat[r * cols + c] = R2qLevel(codes[r * cols + c], a[0], a[1]);
      }
    }
  });
}

void R2qLoopQuantizer::Backward(const float* w, const float* params, const float* dw_hat, float* dw, float* dparams,
                                kernels::ThreadPool* pool) const {
  const int64_t cols = this->cols(), groups = this->groups();
  const uint8_t* codes = this->codes().data();
  kernels::ParallelFor(pool, rows(), 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = dw_hat + r * cols;
      if (dw != nullptr) {
        float* d = dw + r * cols;
        for (int64_t c = 0; c < cols; ++c) d[c] += g[c];
      }
      if (dparams != nullptr) {
        for (int64_t c = 0; c < cols; ++c) {
          float* da = dparams + (r * groups + c / group_size_) * 2;
          const uint8_t q = codes[r * cols + c];
          da[0] += (q & 1) ? g[c] : -g[c];
          da[1] += (q & 2) ? g[c] : -g[c];
        }
      }
    }
  });
}

void R2qLoopQuantizer::Assign(const float* w, const float* params, uint8_t* codes, kernels::ThreadPool* pool) const {
  const int64_t cols = this->cols(), groups = this->groups();
  kernels::ParallelFor(pool, rows(), 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const float* a = params + (r * groups + c / group_size_) * 2;
        codes[r * cols + c] = R2qNearestCode(w[r * cols + c], a[0], a[1]);
      }
    }
  });
}

}  // namespace lcd::quantizer::train
