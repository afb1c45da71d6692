// Inline AVX2/FMA helpers shared by the *_avx2.cc files. Include only from
// files compiled with AVX2 flags; names live in lcd::kernels::avx2 so they
// never merge with the AVX-512 builds at link time.
#ifndef LCD_KERNELS_CPU_VEC_MATH_AVX2_H_
#define LCD_KERNELS_CPU_VEC_MATH_AVX2_H_

#include <immintrin.h>

#include <cstdint>

#include "lcd/kernels/dtype.h"

namespace lcd::kernels::avx2 {

// e^x with ~2 ulp error on [-87.3, 88]; inputs are clamped to that range so
// 2^n can be built directly in the exponent field (tiny results become
// ~1e-38 instead of 0, which is harmless for softmax and silu).
inline __m256 Exp(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline float HorizontalSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 0x55)));
}

inline float HorizontalMax(__m256 v) {
  const __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(t, _mm_shuffle_ps(t, t, 0x55)));
}

// sum_i a[i] * b[i] over n floats.
inline float Dot(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  float s = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[i] += a * x[i] over n floats.
inline void Axpy(float a, const float* x, int64_t n, float* y) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += a * x[i];
}

// mx[i] = max(mx[i], x[i]) over n floats.
inline void MaxInto(const float* x, int64_t n, float* mx) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(mx + i, _mm256_max_ps(_mm256_loadu_ps(mx + i), _mm256_loadu_ps(x + i)));
  }
  for (; i < n; ++i) mx[i] = x[i] > mx[i] ? x[i] : mx[i];
}

// x[i] = e^(x[i] - shift[i]); sum[i] += x[i] over n floats.
inline void ExpShiftAccumulate(float* x, const float* shift, int64_t n, float* sum) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(shift + i)));
    _mm256_storeu_ps(x + i, e);
    _mm256_storeu_ps(sum + i, _mm256_add_ps(_mm256_loadu_ps(sum + i), e));
  }
  for (; i < n; ++i) {
    // Scalar lanes go through the same vector Exp so every lane rounds alike.
    const __m256 e = Exp(_mm256_set1_ps(x[i] - shift[i]));
    x[i] = _mm256_cvtss_f32(e);
    sum[i] += x[i];
  }
}

// n values of type `dtype` at src as fp32: src itself for fp32, otherwise
// widened into buf (exact: fp16 by F16C, bf16 by a 16-bit shift).
inline const float* WidenRow(const void* src, DType dtype, int64_t n, float* buf) {
  if (dtype == DType::kF32) return static_cast<const float*>(src);
  const auto* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (dtype == DType::kF16) {
    for (; i + 8 <= n; i += 8) {
      _mm256_storeu_ps(buf + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
    }
    for (; i < n; ++i) buf[i] = _cvtsh_ss(h[i]);
  } else {
    for (; i + 8 <= n; i += 8) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(buf + i),
                          _mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
    }
    for (; i < n; ++i) buf[i] = Bf16ToFloat(h[i]);
  }
  return buf;
}

}  // namespace lcd::kernels::avx2

#endif  // LCD_KERNELS_CPU_VEC_MATH_AVX2_H_
