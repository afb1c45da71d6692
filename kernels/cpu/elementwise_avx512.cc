// AVX-512 element-wise ops: RmsNorm, SiluMul, Add, Softmax, ApplyRope.
#include <cmath>

#include "cpu/ops_cpu.h"
#include "cpu/vec_math_avx512.h"

namespace lcd::kernels::avx512 {

void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    const float ss = Dot(xr, xr, dim);
    const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(ss / static_cast<float>(dim) + eps));
    for (int64_t i = 0; i < dim; i += 16) {
      const __mmask16 m = TailMask(dim - i);
      const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), inv);
      _mm512_mask_storeu_ps(yr + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, weight + i)));
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* y) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

void Add(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(
        y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), TailMask(n - i), x + i));
  }
  const __m512 maxv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), maxv));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

void ApplyRope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
               const int32_t* positions, const float* inv_freq) {
  const int64_t half = head_dim / 2;
  // cos/sin depend only on (position, i): compute them once per token and
  // reuse them for every head.
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
      for (int64_t i = 0; i < half; i += 16) {
        const __mmask16 m = TailMask(half - i);
        const __m512 va = _mm512_maskz_loadu_ps(m, a + i);
        const __m512 vb = _mm512_maskz_loadu_ps(m, b + i);
        const __m512 c = _mm512_maskz_loadu_ps(m, cosv + i);
        const __m512 s = _mm512_maskz_loadu_ps(m, sinv + i);
        _mm512_mask_storeu_ps(a + i, m, _mm512_fmsub_ps(va, c, _mm512_mul_ps(vb, s)));
        _mm512_mask_storeu_ps(b + i, m, _mm512_fmadd_ps(vb, c, _mm512_mul_ps(va, s)));
      }
    }
  }
}

}  // namespace lcd::kernels::avx512
