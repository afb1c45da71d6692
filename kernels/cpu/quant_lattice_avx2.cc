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

inline void Transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Eight consecutive full sub-vectors of D columns (D = 8 or 16, b <= 4), one
// per lane: lane v's D codes are the D*b/8 bytes at base + v*D*b/8 (byte
// aligned: D*b is a multiple of 8), gathered 8 codes (b bytes) at a time.
// y_i(lanes) = sum_j G[i][j] c_j(lanes) is D*D FMAs with broadcast G
// entries and D independent accumulators; the D result vectors are
// transposed in 8 x 8 blocks so lane v's weights land at out + v*D.
template <int D>
inline void DecodeBlock8(const uint8_t* base, int b, const float* g, __m256 ln1p, __m256 s_over_mu,
                         float* out) {
  const __m256i lane_off = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(D * b / 8));
  const __m256i mask = _mm256_set1_epi32((1 << b) - 1);
  const __m256 offset = _mm256_set1_ps(static_cast<float>(1 << (b - 1)) - 0.5f);
  __m256 acc[D];
  for (int i = 0; i < D; ++i) acc[i] = _mm256_setzero_ps();
  for (int q = 0; q < D / 8; ++q) {
    const __m256i word = _mm256_i32gather_epi32(reinterpret_cast<const int*>(base + q * b), lane_off, 1);
    for (int jj = 0; jj < 8; ++jj) {
      const __m256i code = _mm256_and_si256(_mm256_srlv_epi32(word, _mm256_set1_epi32(jj * b)), mask);
      const __m256 cj = _mm256_sub_ps(_mm256_cvtepi32_ps(code), offset);
      const int j = 8 * q + jj;
      for (int i = 0; i < D; ++i) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(g + i * D + j), cj, acc[i]);
    }
  }
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int i = 0; i < D; ++i) {
    const __m256 sign = _mm256_and_ps(acc[i], sign_mask);
    const __m256 a = _mm256_mul_ps(_mm256_andnot_ps(sign_mask, acc[i]), ln1p);
    acc[i] = _mm256_or_ps(_mm256_mul_ps(_mm256_sub_ps(Exp(a), one), s_over_mu), sign);
  }
  for (int i0 = 0; i0 < D; i0 += 8) {
    Transpose8(acc + i0);
    for (int v = 0; v < 8; ++v) _mm256_storeu_ps(out + v * D + i0, acc[i0 + v]);
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
    int64_t t = 0;
    if ((d == 8 || d == 16) && b <= 4) {
      // Blocks of eight full sub-vectors, one per lane (the faster path).
      for (; t + 8 * d <= len; t += 8 * d) {
        const uint8_t* base = code_row + ((v.bit_offset[k] + t * b) >> 3);
        if (d == 8) {
          DecodeBlock8<8>(base, b, v.gen + k * d * d, ln1p, s_over_mu, out + c0 + t);
        } else {
          DecodeBlock8<16>(base, b, v.gen + k * d * d, ln1p, s_over_mu, out + c0 + t);
        }
      }
    }
    for (; t < len; t += d) {
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
