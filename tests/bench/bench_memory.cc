// Machine memory bandwidth, the ceiling for a decode GEMV: a streaming read
// of a 1 GiB buffer (1 and 2 threads) and a 512 MiB memcpy (bytes counted as
// read + written). Compare with bench_linear's bytes_per_second.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "lcd/kernels/thread_pool.h"
#include "stream_read.h"

namespace lcd::kernels {
namespace {

constexpr size_t kCopyBytes = size_t{512} << 20;

void BM_StreamRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  ThreadPool pool(threads);
  std::vector<uint64_t> partial(64 * 8);
  bench::StreamReadBuffer();
  for (auto _ : state) {
    bench::StreamReadOnce(&pool, threads, partial.data());
    benchmark::DoNotOptimize(partial.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bench::kStreamReadBytes));
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
