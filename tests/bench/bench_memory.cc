// Machine memory bandwidth, the ceiling for a decode GEMV: a streaming read
// of a 1 GiB buffer (1 and 2 threads) and a 512 MiB memcpy (bytes counted as
// read + written). Compare with bench_linear's bytes_per_second.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "lcd/kernels/thread_pool.h"

namespace lcd::kernels {
namespace {

constexpr size_t kReadBytes = size_t{1} << 30;
constexpr size_t kCopyBytes = size_t{512} << 20;

uint64_t* ReadBuffer() {
  static uint64_t* buf = [] {
    auto* b = new uint64_t[kReadBytes / 8];
    for (size_t i = 0; i < kReadBytes / 8; ++i) b[i] = i * 0x9e3779b97f4a7c15ull;
    return b;
  }();
  return buf;
}

// Integer adds vectorise without -ffast-math, so this is load-bound. Built
// for AVX2 (32-byte loads, as the GEMV uses) when the CPU has it, so the
// read loop itself is never the bottleneck.
__attribute__((target("avx2"))) uint64_t SumRangeAvx2(const uint64_t* p, int64_t begin,
                                                      int64_t end) {
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

uint64_t SumRangeGeneric(const uint64_t* p, int64_t begin, int64_t end) {
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

uint64_t SumRange(const uint64_t* p, int64_t begin, int64_t end) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2 ? SumRangeAvx2(p, begin, end) : SumRangeGeneric(p, begin, end);
}

void BM_StreamRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const uint64_t* buf = ReadBuffer();
  const int64_t words = kReadBytes / 8;
  ThreadPool pool(threads);
  std::vector<uint64_t> partial(64 * 8);
  for (auto _ : state) {
    pool.ParallelFor(threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        partial[t * 8] = SumRange(buf, words * t / threads, words * (t + 1) / threads);
      }
    });
    benchmark::DoNotOptimize(partial.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(kReadBytes));
}
BENCHMARK(BM_StreamRead)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Memcpy(benchmark::State& state) {
  std::unique_ptr<char[]> src(new char[kCopyBytes]), dst(new char[kCopyBytes]);
  std::memset(src.get(), 1, kCopyBytes);
  std::memset(dst.get(), 2, kCopyBytes);
  for (auto _ : state) {
    std::memcpy(dst.get(), src.get(), kCopyBytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(2 * kCopyBytes));
}
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace lcd::kernels

BENCHMARK_MAIN();
