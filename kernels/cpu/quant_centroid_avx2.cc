// AVX2 design (a) of QuantLinear, kCentroidTable: per (row, group) the 2^b
// decoded values live in one or two ymm registers (codebook: its fp16
// params; affine and binary-coded: computed from theirs), each 8-column chunk
// of codes (b bytes of the canonical stream, read as one 32-bit load) is
// split into 8 indices with vpsrlvd, looked up with vpermps (two lookups and
// a blend for 16 entries) and FMA'd with x. Exact up to fp32 rounding and
// reads the canonical layout as is; kept for what design (b) does not cover
// (codebook b = 1, 3, 4; binary-coded b = 3, 4; affine b = 1 and b = 8, the
// latter decoded directly as s * (q - z) from bytes; group sizes not a multiple
// of 32): ~5 vector ops per 8 weights make it compute-bound at 4-10 G
// weights/s per core (codebook b=3 5.3 ms, b=4 11.3 ms for 11008x4096),
// 3-8x slower than design (b) where both exist (docs/PERFORMANCE.md).
// m > 1 decodes a tile of 4 rows once into fp32 scratch and runs an FMA
// micro-kernel over it for every input row.
#include <immintrin.h>

#include <algorithm>

#include "cpu/ops_cpu.h"
#include "cpu/quant_linear_cpu.h"
#include "cpu/vec_math_avx2.h"

namespace lcd::kernels::avx2 {
namespace {

constexpr int kRows = 4;

// The 2^b decoded values of one (row, group) as lo = entries 0..7, hi = 8..15.
template <QuantFormat F, int B>
inline void GroupTable(const uint16_t* p, __m256* lo, __m256* hi) {
  const __m256 iota = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  if constexpr (F == QuantFormat::kCodebook) {
    if constexpr (B == 4) {
      *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
      *hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + 8)));
    } else if constexpr (B == 3) {
      *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
    } else if constexpr (B == 2) {
      *lo = _mm256_cvtph_ps(_mm_loadl_epi64((const __m128i*)p));
    } else {
      *lo = _mm256_cvtph_ps(_mm_cvtsi32_si128(*(const int32_t*)p));
    }
  } else if constexpr (F == QuantFormat::kAffine && B == 8) {
    // No table: Decode8<8> computes s * (q - z) from (lo, hi) = (s, z).
    const __m128 sz = _mm_cvtph_ps(_mm_cvtsi32_si128(*(const int32_t*)p));
    *lo = _mm256_set1_ps(_mm_cvtss_f32(sz));
    *hi = _mm256_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(sz, sz, 1)));
  } else if constexpr (F == QuantFormat::kAffine) {
    const __m128 sz = _mm_cvtph_ps(_mm_cvtsi32_si128(*(const int32_t*)p));
    const __m256 s = _mm256_set1_ps(_mm_cvtss_f32(sz));
    const __m256 z = _mm256_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(sz, sz, 1)));
    *lo = _mm256_mul_ps(s, _mm256_sub_ps(iota, z));
    if constexpr (B == 4) {
      *hi = _mm256_mul_ps(s, _mm256_sub_ps(_mm256_add_ps(iota, _mm256_set1_ps(8.0f)), z));
    }
  } else {
    // DecodeCode's order: acc = sum_i (+-p_i) in plane order, then + p_b.
    alignas(16) float pf[8];
    _mm256_store_ps(pf, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)));
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 a_lo = _mm256_setzero_ps(), a_hi = _mm256_setzero_ps();
    for (int i = 0; i < B; ++i) {
      const __m256 pi = _mm256_set1_ps(pf[i]);
      const __m256 npi = _mm256_set1_ps(-pf[i]);
      const __m256 bit_lo = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
          _mm256_and_si256(idx, _mm256_set1_epi32(1 << i)), _mm256_set1_epi32(1 << i)));
      const __m256i idx_hi = _mm256_add_epi32(idx, _mm256_set1_epi32(8));
      const __m256 bit_hi = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
          _mm256_and_si256(idx_hi, _mm256_set1_epi32(1 << i)), _mm256_set1_epi32(1 << i)));
      a_lo = _mm256_add_ps(a_lo, _mm256_blendv_ps(npi, pi, bit_lo));
      a_hi = _mm256_add_ps(a_hi, _mm256_blendv_ps(npi, pi, bit_hi));
    }
    *lo = _mm256_add_ps(a_lo, _mm256_set1_ps(pf[B]));
    *hi = _mm256_add_ps(a_hi, _mm256_set1_ps(pf[B]));
  }
}

// Decodes the 8 codes starting at stream byte `p` (chunk start).
template <int B>
inline __m256 Decode8(const uint8_t* p, __m256 lo, __m256 hi) {
  if constexpr (B == 8) {  // affine: DecodeCode's s * (q - z), lo = s, hi = z
    const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p)));
    return _mm256_mul_ps(lo, _mm256_sub_ps(q, hi));
  }
  uint32_t word;
  __builtin_memcpy(&word, p, 4);
  const __m256i shifts = _mm256_setr_epi32(0, B, 2 * B, 3 * B, 4 * B, 5 * B, 6 * B, 7 * B);
  const __m256i idx =
      _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts),
                       _mm256_set1_epi32((1 << B) - 1));
  const __m256 a = _mm256_permutevar8x32_ps(lo, idx);
  if constexpr (B == 4) {
    const __m256 b = _mm256_permutevar8x32_ps(hi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
  }
  return a;
}

// y[row0 .. row0 + R) for one input row; the x chunk past cols reads as zeros
// (the codes there are padding or the next row's, times zero).
template <QuantFormat F, int B, int R>
void GemvTile(const CentroidPackedView& w, const float* x, int64_t row0, const float* bias,
              float* y) {
  const QuantLayout& l = w.layout;
  const int64_t P = l.ParamsPerGroup(), G = l.groups(), row_bytes = l.CodeRowBytes();
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m256 lo[R], hi[R];
    for (int r = 0; r < R; ++r) {
      hi[r] = _mm256_setzero_ps();
      GroupTable<F, B>(w.params + ((row0 + r) * G + g) * P, &lo[r], &hi[r]);
    }
    const int64_t c_end = std::min(l.cols, (g + 1) * l.group_size);
    __m256 gacc[R], gsum = _mm256_setzero_ps();
    for (int r = 0; r < R; ++r) gacc[r] = _mm256_setzero_ps();
    for (int64_t c = g * l.group_size; c < c_end; c += 8) {
      __m256 xv;
      if (c + 8 <= l.cols) {
        xv = _mm256_loadu_ps(x + c);
      } else {
        alignas(32) float xt[8] = {};
        for (int64_t i = c; i < l.cols; ++i) xt[i - c] = x[i];
        xv = _mm256_load_ps(xt);
      }
      if constexpr (B == 8) {
        // Affine 8-bit: sum x q per group, then s * (sum x q - z * sum x):
        // 3 ops per 8 weights instead of 5 (rounding differs from DecodeCode
        // order only at fp32 level).
        gsum = _mm256_add_ps(gsum, xv);
        for (int r = 0; r < R; ++r) {
          const __m128i q8 =
              _mm_loadl_epi64((const __m128i*)(w.codes + (row0 + r) * row_bytes + c));
          gacc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q8)), xv, gacc[r]);
        }
      } else {
        for (int r = 0; r < R; ++r) {
          const uint8_t* p = w.codes + (row0 + r) * row_bytes + c * B / 8;
          acc[r] = _mm256_fmadd_ps(Decode8<B>(p, lo[r], hi[r]), xv, acc[r]);
        }
      }
    }
    if constexpr (B == 8) {
      for (int r = 0; r < R; ++r) {
        acc[r] = _mm256_fmadd_ps(lo[r], _mm256_fnmadd_ps(hi[r], gsum, gacc[r]), acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) y[row0 + r] = HorizontalSum(acc[r]) + (bias ? bias[row0 + r] : 0.0f);
}

// Decodes rows [row0, row0 + R) into out [R][cols8] (zeros past cols).
template <QuantFormat F, int B, int R>
void DecodeTile(const CentroidPackedView& w, int64_t row0, int64_t cols8, float* out) {
  const QuantLayout& l = w.layout;
  const int64_t P = l.ParamsPerGroup(), G = l.groups(), row_bytes = l.CodeRowBytes();
  for (int r = 0; r < R; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      __m256 lo, hi = _mm256_setzero_ps();
      GroupTable<F, B>(w.params + ((row0 + r) * G + g) * P, &lo, &hi);
      const int64_t c_end = std::min(l.cols, (g + 1) * l.group_size);
      for (int64_t c = g * l.group_size; c < c_end; c += 8) {
        _mm256_storeu_ps(out + r * cols8 + c,
                         Decode8<B>(w.codes + (row0 + r) * row_bytes + c * B / 8, lo, hi));
      }
    }
    for (int64_t c = l.cols; c < cols8; ++c) out[r * cols8 + c] = 0.0f;
  }
}

// y[t][row0 + r] for R decoded rows and every t < m: 2 input rows x R weight
// rows of accumulators per pass.
template <int R>
void GemmTile(const float* wd, int64_t cols8, const float* x, int64_t m, int64_t cols, int64_t rows,
              int64_t row0, const float* bias, float* y, float* xpad) {
  for (int64_t t0 = 0; t0 < m; t0 += 2) {
    const int T = static_cast<int>(std::min<int64_t>(2, m - t0));
    const float* xs[2];
    for (int t = 0; t < T; ++t) {
      xs[t] = x + (t0 + t) * cols;
      if (cols != cols8) {  // zero-padded copy so the last chunk is whole
        std::copy(xs[t], xs[t] + cols, xpad + t * cols8);
        std::fill(xpad + t * cols8 + cols, xpad + (t + 1) * cols8, 0.0f);
        xs[t] = xpad + t * cols8;
      }
    }
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t c = 0; c < cols8; c += 8) {
      __m256 wv[R];
      for (int r = 0; r < R; ++r) wv[r] = _mm256_loadu_ps(wd + r * cols8 + c);
      for (int t = 0; t < T; ++t) {
        const __m256 xv = _mm256_loadu_ps(xs[t] + c);
        for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
      }
    }
    for (int t = 0; t < T; ++t) {
      for (int r = 0; r < R; ++r) {
        y[(t0 + t) * rows + row0 + r] = HorizontalSum(acc[r][t]) + (bias ? bias[row0 + r] : 0.0f);
      }
    }
  }
}

template <QuantFormat F, int B>
void CentroidLinearTyped(const CentroidPackedView& w, const float* x, int64_t m, const float* bias,
                         float* y, ThreadPool* pool) {
  const QuantLayout& l = w.layout;
  const int64_t cols8 = (l.cols + 7) / 8 * 8;
  const int64_t min_rows = std::max<int64_t>(kRows, 65536 / std::max<int64_t>(1, l.cols * m));
  ParallelFor(pool, l.rows, min_rows, [&](int64_t begin, int64_t end) {
    if (m == 1) {
      int64_t r = begin;
      for (; r + kRows <= end; r += kRows) GemvTile<F, B, kRows>(w, x, r, bias, y);
      for (; r < end; ++r) GemvTile<F, B, 1>(w, x, r, bias, y);
      return;
    }
    float* wd = ThreadScratch(0, kRows * cols8);
    float* xpad = ThreadScratch(1, 2 * cols8);
    int64_t r = begin;
    for (; r + kRows <= end; r += kRows) {
      DecodeTile<F, B, kRows>(w, r, cols8, wd);
      GemmTile<kRows>(wd, cols8, x, m, l.cols, l.rows, r, bias, y, xpad);
    }
    for (; r < end; ++r) {
      DecodeTile<F, B, 1>(w, r, cols8, wd);
      GemmTile<1>(wd, cols8, x, m, l.cols, l.rows, r, bias, y, xpad);
    }
  });
}

template <QuantFormat F>
void ByBits(const CentroidPackedView& w, const float* x, int64_t m, const float* bias, float* y,
            ThreadPool* pool) {
  if constexpr (F == QuantFormat::kAffine) {
    if (w.layout.bits == 8) return CentroidLinearTyped<F, 8>(w, x, m, bias, y, pool);
  }
  switch (w.layout.bits) {
    case 1:
      return CentroidLinearTyped<F, 1>(w, x, m, bias, y, pool);
    case 2:
      return CentroidLinearTyped<F, 2>(w, x, m, bias, y, pool);
    case 3:
      return CentroidLinearTyped<F, 3>(w, x, m, bias, y, pool);
    default:
      return CentroidLinearTyped<F, 4>(w, x, m, bias, y, pool);
  }
}

}  // namespace

void CentroidLinear(const CentroidPackedView& w, const float* x, int64_t m, const float* bias,
                    float* y, ThreadPool* pool) {
  switch (w.layout.format) {
    case QuantFormat::kCodebook:
      return ByBits<QuantFormat::kCodebook>(w, x, m, bias, y, pool);
    case QuantFormat::kAffine:
      return ByBits<QuantFormat::kAffine>(w, x, m, bias, y, pool);
    case QuantFormat::kBinaryCoded:
      return ByBits<QuantFormat::kBinaryCoded>(w, x, m, bias, y, pool);
    case QuantFormat::kLattice:  // Never packed for this design (QuantCentroidSupports).
      return;
  }
}

}  // namespace lcd::kernels::avx2
