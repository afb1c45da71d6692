// Inline AVX-512 helpers shared by the *_avx512.cc files. Include only from
// files compiled with AVX-512 flags. Everything lives in an ISA-specific
// namespace so AVX2 builds of the same names never merge at link time.
#ifndef LCD_KERNELS_CPU_VEC_MATH_AVX512_H_
#define LCD_KERNELS_CPU_VEC_MATH_AVX512_H_

#include <immintrin.h>

#include <cstdint>

#include "lcd/kernels/dtype.h"

namespace lcd::kernels::avx512 {

// e^x with ~2 ulp error (Cephes expf polynomial after range reduction);
// results below ~1e-45 flush to 0 as in expf, above 88.7 give +inf.
inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.8f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 TailMask(int64_t count) {
  return static_cast<__mmask16>(count >= 16 ? 0xffff : (1u << count) - 1);
}

// sum_i a[i] * b[i] over n floats.
inline float Dot(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps();
  __m512 acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

// y[i] += a * x[i] over n floats.
inline void Axpy(float a, const float* x, int64_t n, float* y) {
  const __m512 av = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  }
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    const __m512 r =
        _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
    _mm512_mask_storeu_ps(y + i, m, r);
  }
}

// mx[i] = max(mx[i], x[i]) over n floats.
inline void MaxInto(const float* x, int64_t n, float* mx) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(
        mx + i, m,
        _mm512_max_ps(_mm512_maskz_loadu_ps(m, mx + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}

// x[i] = e^(x[i] - shift[i]); sum[i] += x[i] over n floats.
inline void ExpShiftAccumulate(float* x, const float* shift, int64_t n, float* sum) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 e =
        Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, shift + i)));
    _mm512_mask_storeu_ps(x + i, m, e);
    _mm512_mask_storeu_ps(sum + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, sum + i), e));
  }
}

// n values of type `dtype` at src as fp32: src itself for fp32, otherwise
// widened into buf (exact: fp16 by vcvtph2ps, bf16 by a 16-bit shift).
inline const float* WidenRow(const void* src, DType dtype, int64_t n, float* buf) {
  if (dtype == DType::kF32) return static_cast<const float*>(src);
  const auto* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? static_cast<__mmask16>(0xffff)
                                       : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m256i v = _mm256_maskz_loadu_epi16(mask, h + i);
    const __m512 f = dtype == DType::kF16
                         ? _mm512_cvtph_ps(v)
                         : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
    _mm512_mask_storeu_ps(buf + i, mask, f);
  }
  return buf;
}

}  // namespace lcd::kernels::avx512

#endif  // LCD_KERNELS_CPU_VEC_MATH_AVX512_H_
