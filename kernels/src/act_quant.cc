// Per-token INT8 activation quantize-dequantize (contract in act_quant.h).
#include "lcd/kernels/act_quant.h"

#include <algorithm>
#include <cmath>

namespace lcd::kernels {

void FakeQuantizeInt8PerToken(const float* x, int64_t m, int64_t cols, float* y) {
  for (int64_t t = 0; t < m; ++t) {
    const float* xr = x + t * cols;
    float* yr = y + t * cols;
    float amax = 0.0f;
    for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::abs(xr[j]));
    const float s = amax / 127.0f;
    if (s == 0.0f) {
      std::fill(yr, yr + cols, 0.0f);
      continue;
    }
    for (int64_t j = 0; j < cols; ++j) yr[j] = std::nearbyint(xr[j] / s) * s;
  }
}

}  // namespace lcd::kernels
