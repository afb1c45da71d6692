// The streaming-read ceiling shared by the benchmarks: a read of a 1 GiB
// buffer split over a ThreadPool, 32-byte loads. bench_memory reports it as a
// benchmark; bench_quant_linear measures it in the same run to express its
// kernels' bytes/s as a fraction of it.
#ifndef LCD_TESTS_BENCH_STREAM_READ_H_
#define LCD_TESTS_BENCH_STREAM_READ_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "lcd/kernels/thread_pool.h"

namespace lcd::kernels::bench {

inline constexpr size_t kStreamReadBytes = size_t{1} << 30;

inline uint64_t* StreamReadBuffer() {
  static uint64_t* buf = [] {
    auto* b = new uint64_t[kStreamReadBytes / 8];
    for (size_t i = 0; i < kStreamReadBytes / 8; ++i) b[i] = i * 0x9e3779b97f4a7c15ull;
    return b;
  }();
  return buf;
}

// Integer adds vectorise without -ffast-math, so this is load-bound. One
// body, compiled twice: always_inline puts it inside each caller, so the
// AVX2 caller gets 32-byte loads (as the GEMVs use) and the read loop itself
// is never the bottleneck.
__attribute__((always_inline)) inline uint64_t SumRangeBody(const uint64_t* p, int64_t begin, int64_t end) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  int64_t i = begin;
  for (; i + 4 <= end; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  for (; i < end; ++i) a += p[i];
  return a + b + c + d;
}

__attribute__((target("avx2"))) inline uint64_t SumRangeAvx2(const uint64_t* p, int64_t begin, int64_t end) {
  return SumRangeBody(p, begin, end);
}

inline uint64_t SumRangeGeneric(const uint64_t* p, int64_t begin, int64_t end) {
  return SumRangeBody(p, begin, end);
}

inline uint64_t SumRange(const uint64_t* p, int64_t begin, int64_t end) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2 ? SumRangeAvx2(p, begin, end) : SumRangeGeneric(p, begin, end);
}

// One streaming read of the whole buffer on `threads` threads of `pool`.
inline void StreamReadOnce(ThreadPool* pool, int threads, uint64_t* partial) {
  const uint64_t* buf = StreamReadBuffer();
  const int64_t words = kStreamReadBytes / 8;
  pool->ParallelFor(threads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      partial[t * 8] = SumRange(buf, words * t / threads, words * (t + 1) / threads);
    }
  });
}

// Median bytes/s of `reps` streaming reads (after one warm-up read).
inline double MeasureStreamReadBytesPerSecond(int threads, int reps = 5) {
  ThreadPool pool(threads);
  std::vector<uint64_t> partial(64 * 8);
  StreamReadOnce(&pool, threads, partial.data());
  std::vector<double> rates;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    StreamReadOnce(&pool, threads, partial.data());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(kStreamReadBytes / s);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

}  // namespace lcd::kernels::bench

#endif  // LCD_TESTS_BENCH_STREAM_READ_H_
