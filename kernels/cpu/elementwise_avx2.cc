// AVX2 element-wise ops: RmsNorm, SiluMul, Add, Softmax, ApplyRope. Tails
// shorter than one vector run the scalar formula.
#include <cmath>

#include "cpu/ops_cpu.h"
#include "cpu/vec_math_avx2.h"

namespace lcd::kernels::avx2 {

void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    const float ss = Dot(xr, xr, dim);
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
    const __m256 invv = _mm256_set1_ps(inv);
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8) {
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + i), invv);
      _mm256_storeu_ps(yr + i, _mm256_mul_ps(v, _mm256_loadu_ps(weight + i)));
    }
    for (; i < dim; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* y) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = Exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) y[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void Add(const float* x, int64_t n, float* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += x[i];
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  __m256 mx = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + i));
  float maxs = HorizontalMax(mx);
  for (; i < n; ++i) maxs = std::fmax(maxs, x[i]);
  const __m256 maxv = _mm256_set1_ps(maxs);
  __m256 sumv = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), maxv));
    _mm256_storeu_ps(x + i, e);
    sumv = _mm256_add_ps(sumv, e);
  }
  float sum = HorizontalSum(sumv);
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - maxs);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  const __m256 invv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), invv));
  for (; i < n; ++i) x[i] *= inv;
}

void ApplyRope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
               const int32_t* positions, const float* inv_freq) {
  const int64_t half = head_dim / 2;
  // cos/sin depend only on (position, i): computed once per token, reused
  // for every head.
  float* cosv = ThreadScratch(0, 2 * half);
  float* sinv = cosv + half;
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      cosv[i] = std::cos(angle);
      sinv[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < num_heads; ++h) {
      float* a = x + (t * num_heads + h) * head_dim;
      float* b = a + half;
      int64_t i = 0;
      for (; i + 8 <= half; i += 8) {
        const __m256 va = _mm256_loadu_ps(a + i);
        const __m256 vb = _mm256_loadu_ps(b + i);
        const __m256 c = _mm256_loadu_ps(cosv + i);
        const __m256 s = _mm256_loadu_ps(sinv + i);
        _mm256_storeu_ps(a + i, _mm256_fmsub_ps(va, c, _mm256_mul_ps(vb, s)));
        _mm256_storeu_ps(b + i, _mm256_fmadd_ps(vb, c, _mm256_mul_ps(va, s)));
      }
      for (; i < half; ++i) {
        const float va = a[i];
        const float vb = b[i];
        a[i] = va * cosv[i] - vb * sinv[i];
        b[i] = vb * cosv[i] + va * sinv[i];
      }
    }
  }
}

}  // namespace lcd::kernels::avx2
