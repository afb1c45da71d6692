// AVX2 + FMA + F16C Linear: y[m][n] = x[m][k] . w[n][k]^T (+ bias).
// Same blocking as linear_avx512.cc with 8-wide vectors and 16 registers:
// tiles of 4 weight rows x 2 activation rows (8 accumulators); the k tail
// (k % 8) goes through a zero-padded stack buffer.
#include <immintrin.h>

#include <algorithm>

#include "cpu/ops_cpu.h"
#include "cpu/vec_math_avx2.h"

namespace lcd::kernels::avx2 {
namespace {

constexpr int kRowsGemv = 4;
constexpr int kRows = 4;
constexpr int kCols = 2;
constexpr int64_t kMChunk = 32;

template <DType T>
inline __m256 LoadW(const void* row, int64_t i) {
  if constexpr (T == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(row) + i);
  } else if constexpr (T == DType::kF16) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i)));
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <DType T>
inline float LoadScalar(const void* row, int64_t i) {
  if constexpr (T == DType::kF32) {
    return static_cast<const float*>(row)[i];
  } else if constexpr (T == DType::kF16) {
    return _cvtsh_ss(static_cast<const uint16_t*>(row)[i]);
  } else {
    return _mm_cvtss_f32(_mm_castsi128_ps(
        _mm_cvtsi32_si128(static_cast<int>(static_cast<const uint16_t*>(row)[i]) << 16)));
  }
}

template <DType T, int R, int C>
inline void Tile(const float* x, int64_t k, const char* w, size_t row_bytes, int64_t j0,
                 const float* bias, float* y, int64_t n) {
  __m256 acc[R][C];
  const void* rows[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    rows[r] = w + (j0 + r) * row_bytes;
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = LoadW<T>(rows[r], i);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m256 xv = _mm256_loadu_ps(x + c * k + i);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  if (i < k) {
    alignas(32) float wt[R][8] = {};
    alignas(32) float xt[C][8] = {};
    for (int64_t t = i; t < k; ++t) {
      for (int r = 0; r < R; ++r) wt[r][t - i] = LoadScalar<T>(rows[r], t);
      for (int c = 0; c < C; ++c) xt[c][t - i] = x[c * k + t];
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m256 xv = _mm256_load_ps(xt[c]);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][c] = _mm256_fmadd_ps(_mm256_load_ps(wt[r]), xv, acc[r][c]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const float b = bias ? bias[j0 + r] : 0.0f;
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) y[c * n + j0 + r] = HorizontalSum(acc[r][c]) + b;
  }
}

template <DType T, int R>
inline void RowBlock(const float* x, int64_t m, int64_t k, const char* w, size_t row_bytes,
                     int64_t j0, const float* bias, float* y, int64_t n) {
  int64_t c = 0;
  for (; c + kCols <= m; c += kCols) {
    Tile<T, R, kCols>(x + c * k, k, w, row_bytes, j0, bias, y + c * n, n);
  }
  if (c < m) Tile<T, R, 1>(x + c * k, k, w, row_bytes, j0, bias, y + c * n, n);
}

template <DType T>
void LinearTyped(const float* x, int64_t m, const MatrixView& w, const float* bias, float* y,
                 ThreadPool* pool) {
  const int64_t n = w.rows;
  const int64_t k = w.cols;
  const size_t row_bytes = static_cast<size_t>(k) * (T == DType::kF32 ? 4 : 2);
  const char* wd = static_cast<const char*>(w.data);
  const int64_t min_rows = std::max<int64_t>(kRowsGemv, 65536 / std::max<int64_t>(1, k * m));
  ParallelFor(pool, n, min_rows, [&](int64_t begin, int64_t end) {
    if (m == 1) {
      int64_t j = begin;
      for (; j + kRowsGemv <= end; j += kRowsGemv) {
        Tile<T, kRowsGemv, 1>(x, k, wd, row_bytes, j, bias, y, n);
      }
      for (; j < end; ++j) Tile<T, 1, 1>(x, k, wd, row_bytes, j, bias, y, n);
      return;
    }
    for (int64_t m0 = 0; m0 < m; m0 += kMChunk) {
      const int64_t mc = std::min(kMChunk, m - m0);
      const float* xc = x + m0 * k;
      float* yc = y + m0 * n;
      int64_t j = begin;
      for (; j + kRows <= end; j += kRows)
        RowBlock<T, kRows>(xc, mc, k, wd, row_bytes, j, bias, yc, n);
      for (; j < end; ++j) RowBlock<T, 1>(xc, mc, k, wd, row_bytes, j, bias, yc, n);
    }
  });
}

}  // namespace

void Linear(const float* x, int64_t m, const MatrixView& w, const float* bias, float* y,
            ThreadPool* pool) {
  if (m <= 0 || w.rows <= 0) return;
  switch (w.dtype) {
    case DType::kF32:
      return LinearTyped<DType::kF32>(x, m, w, bias, y, pool);
    case DType::kF16:
      return LinearTyped<DType::kF16>(x, m, w, bias, y, pool);
    case DType::kBF16:
      return LinearTyped<DType::kBF16>(x, m, w, bias, y, pool);
  }
}

}  // namespace lcd::kernels::avx2
