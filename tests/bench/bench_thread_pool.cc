// ParallelFor overhead: the fixed cost decode pays ~10 times per layer.
// BM_ParallelForEmpty times a call whose chunks do nothing (pure dispatch +
// join); BM_ParallelForBackToBack adds a little work per chunk, as RmsNorm-
// sized loops do.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "lcd/kernels/thread_pool.h"

namespace lcd::kernels {
namespace {

void BM_ParallelForEmpty(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::atomic<int64_t> sink{0};
  for (auto _ : state) {
    pool.ParallelFor(
        1024, 1, [&](int64_t b, int64_t e) { sink.fetch_add(e - b, std::memory_order_relaxed); });
  }
  benchmark::DoNotOptimize(sink.load());
}
BENCHMARK(BM_ParallelForEmpty)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

void BM_ParallelForBackToBack(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::vector<float> data(16384, 1.0f);
  for (auto _ : state) {
    pool.ParallelFor(static_cast<int64_t>(data.size()), 1024, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) data[i] = data[i] * 0.999f + 0.001f;
    });
  }
  benchmark::DoNotOptimize(data.data());
}
BENCHMARK(BM_ParallelForBackToBack)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

}  // namespace
}  // namespace lcd::kernels

BENCHMARK_MAIN();
