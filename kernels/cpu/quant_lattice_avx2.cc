// AVX2 decoding of the lattice format (quant_linear.h, kLatticeDecode): per
// sub-vector the d codes are read from one 64-bit load of the canonical
// stream, G c is accumulated 8 output coordinates at a time with one FMA per
// code (column j of G contiguous in gen_t), and the inverse mu-law
// s * sign(y) * (e^(|y| ln(1+mu)) - 1) / mu runs on the vector exp of
// vec_math_avx2.h. Short sub-vectors whose length is not a multiple of 8
// (the end of a row whose cols is not a multiple of d) use the scalar
// definition, DecodeLatticeSubvector.
#include <immintrin.h>

#include <cstring>

#include "cpu/quant_linear_cpu.h"
#include "cpu/vec_math_avx2.h"

namespace lcd::kernels::avx2 {
namespace {

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Codes [bit, bit + n*b) of the stream, n <= 8, as centred floats c_j = q_j - 2^(b-1) + 1/2.
inline void ReadCentred(const uint8_t* row, int64_t bit, int b, int n, float* c) {
  const float offset = static_cast<float>(1 << (b - 1)) - 0.5f;
  const uint64_t mask = (uint64_t{1} << b) - 1;
  const int shift = static_cast<int>(bit & 7);
  if (shift + n * b <= 64) {
    const uint64_t v = Load64(row + (bit >> 3)) >> shift;
    for (int j = 0; j < n; ++j) c[j] = static_cast<float>((v >> (j * b)) & mask) - offset;
  } else {
    for (int j = 0; j < n; ++j) {
      const int64_t k = bit + int64_t{j} * b;
      const uint64_t v = Load64(row + (k >> 3)) >> (k & 7);
      c[j] = static_cast<float>(v & mask) - offset;
    }
  }
}

}  // namespace

void DecodeLatticeRow(const LatticePackedView& v, const uint8_t* code_row, const float* scales,
                      float* out) {
  const int d = v.d;
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  alignas(32) float c[32];
  for (int64_t k = 0; k < v.groups; ++k) {
    const int b = v.bits[k];
    const int64_t c0 = k * v.group_size;
    const int64_t len = (c0 + v.group_size <= v.cols ? v.group_size : v.cols - c0);
    const float* gt = v.gen_t + k * d * d;
    const __m256 ln1p = _mm256_set1_ps(v.ln1p_mu[k]);
    const __m256 s_over_mu = _mm256_set1_ps(scales[k] / v.mu[k]);
    for (int64_t t = 0; t < len; t += d) {
      const int n = static_cast<int>(len - t < d ? len - t : d);
      const int64_t bit = v.bit_offset[k] + t * b;
      if (n % 8 != 0) {
        int q[32];
        const uint64_t mask = (uint64_t{1} << b) - 1;
        for (int j = 0; j < n; ++j) {
          const int64_t kb = bit + int64_t{j} * b;
          q[j] = static_cast<int>((Load64(code_row + (kb >> 3)) >> (kb & 7)) & mask);
        }
        DecodeLatticeSubvector(v.gen + k * d * d, d, v.mu[k], v.ln1p_mu[k], scales[k], b, q, n,
                               out + c0 + t);
        continue;
      }
      for (int j0 = 0; j0 < n; j0 += 8) {
        ReadCentred(code_row, bit + int64_t{j0} * b, b, 8, c + j0);
      }
      for (int i0 = 0; i0 < n; i0 += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < n; ++j) {
          acc = _mm256_fmadd_ps(_mm256_loadu_ps(gt + j * d + i0), _mm256_set1_ps(c[j]), acc);
        }
        const __m256 sign = _mm256_and_ps(acc, sign_mask);
        const __m256 a = _mm256_mul_ps(_mm256_andnot_ps(sign_mask, acc), ln1p);
        const __m256 mag = _mm256_mul_ps(_mm256_sub_ps(Exp(a), one), s_over_mu);
        _mm256_storeu_ps(out + c0 + t + i0, _mm256_or_ps(mag, sign));
      }
    }
  }
}

void DotRows(const float* w, const float* x, int64_t m, int64_t cols, float* out, int64_t out_stride) {
  for (int64_t t = 0; t < m; ++t) out[t * out_stride] = Dot(w, x + t * cols, cols);
}

}  // namespace lcd::kernels::avx2
