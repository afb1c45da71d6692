// AVX-512 Linear: y[m][n] = x[m][k] . w[n][k]^T (+ bias).
//
// Decode (m = 1) is a GEMV bound by weight bandwidth, so the kernel streams
// kRowsGemv weight rows at once (several independent FMA chains and prefetch
// streams) and widens fp16/bf16 in registers. For m > 1 a tile of kRows
// weight rows x up to kCols activation rows keeps all products in registers,
// and every activation block of one thread's rows is swept while those weight
// rows are still in L1/L2, so DRAM sees each weight row once per call (for
// m <= kMChunk; larger prefill chunks re-read weights once per kMChunk rows,
// where the work is compute-bound anyway).
#include <immintrin.h>

#include <algorithm>

#include "cpu/ops_cpu.h"

namespace lcd::kernels::avx512 {
namespace {

constexpr int kRowsGemv = 8;
constexpr int kRows = 4;
constexpr int kCols = 4;
constexpr int64_t kMChunk = 32;

template <DType T>
inline __m512 LoadW(const void* row, int64_t i) {
  if constexpr (T == DType::kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(row) + i);
  } else if constexpr (T == DType::kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i)));
  } else {
    const __m256i h =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <DType T>
inline __m512 LoadWMasked(const void* row, int64_t i, __mmask16 mask) {
  if constexpr (T == DType::kF32) {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(row) + i);
  } else if constexpr (T == DType::kF16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(row) + i));
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(row) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// Computes y[c][j0 + r] for r < R, c < C from weight rows j0.. and activation
// rows x[c] (stride k). R and C are compile-time so the R*C accumulators
// live in registers.
template <DType T, int R, int C>
inline void Tile(const float* x, int64_t k, const char* w, size_t row_bytes, int64_t j0,
                 const float* bias, float* y, int64_t n) {
  __m512 acc[R][C];
  const void* rows[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    rows[r] = w + (j0 + r) * row_bytes;
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    __m512 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = LoadW<T>(rows[r], i);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m512 xv = _mm512_loadu_ps(x + c * k + i);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  if (i < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - i)) - 1);
    __m512 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = LoadWMasked<T>(rows[r], i, mask);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + c * k + i);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const float b = bias ? bias[j0 + r] : 0.0f;
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) y[c * n + j0 + r] = _mm512_reduce_add_ps(acc[r][c]) + b;
  }
}

// All activation rows [0, m) against weight rows j0 .. j0 + R.
template <DType T, int R>
inline void RowBlock(const float* x, int64_t m, int64_t k, const char* w, size_t row_bytes,
                     int64_t j0, const float* bias, float* y, int64_t n) {
  int64_t c = 0;
  for (; c + kCols <= m; c += kCols) {
    Tile<T, R, kCols>(x + c * k, k, w, row_bytes, j0, bias, y + c * n, n);
  }
  switch (m - c) {
    case 3:
      Tile<T, R, 3>(x + c * k, k, w, row_bytes, j0, bias, y + c * n, n);
      break;
    case 2:
      Tile<T, R, 2>(x + c * k, k, w, row_bytes, j0, bias, y + c * n, n);
      break;
    case 1:
      Tile<T, R, 1>(x + c * k, k, w, row_bytes, j0, bias, y + c * n, n);
      break;
    default:
      break;
  }
}

template <DType T>
void LinearTyped(const float* x, int64_t m, const MatrixView& w, const float* bias, float* y,
                 ThreadPool* pool) {
  const int64_t n = w.rows;
  const int64_t k = w.cols;
  const size_t row_bytes = static_cast<size_t>(k) * (T == DType::kF32 ? 4 : 2);
  const char* wd = static_cast<const char*>(w.data);
  // Parallel over output rows: each thread owns disjoint weight rows, which
  // is what a bandwidth-bound GEMV wants. Chunks carry >= ~64K MACs.
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

}  // namespace lcd::kernels::avx512
