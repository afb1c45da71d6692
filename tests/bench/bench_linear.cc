// Linear (GEMV m = 1, batched m = 8, a 64-token prefill chunk) at Llama-2-7B shapes, per weight
// dtype, ISA and thread count. bytes_per_second counts the weight bytes plus
// activations read once per call, so a bandwidth-bound GEMV can be compared
// directly with bench_memory's streaming-read figure.
//
//   bench_linear --benchmark_filter='m:1'   (decode only)
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "lcd/kernels/dtype.h"
#include "lcd/kernels/ops.h"
#include "lcd/kernels/thread_pool.h"

namespace lcd::kernels {
namespace {

// Deterministic weights in [-1, 1) without the cost of <random> on 45M values.
std::vector<uint8_t> MakeWeights(DType dtype, int64_t n, int64_t k) {
  std::vector<uint8_t> bytes(static_cast<size_t>(n * k) * DTypeSize(dtype));
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int64_t i = 0; i < n * k; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const float v = static_cast<float>(static_cast<int32_t>(s >> 32)) * (1.0f / 2147483648.0f);
    switch (dtype) {
      case DType::kF32:
        reinterpret_cast<float*>(bytes.data())[i] = v;
        break;
      case DType::kF16:
        reinterpret_cast<uint16_t*>(bytes.data())[i] = FloatToFp16(v);
        break;
      case DType::kBF16:
        reinterpret_cast<uint16_t*>(bytes.data())[i] = FloatToBf16(v);
        break;
    }
  }
  return bytes;
}

// Weights are cached across benchmark runs (11008x4096 fp32 is 180 MB).
const std::vector<uint8_t>& Weights(DType dtype, int64_t n, int64_t k) {
  static auto* cache = new std::map<std::tuple<int, int64_t, int64_t>, std::vector<uint8_t>>();
  auto key = std::make_tuple(static_cast<int>(dtype), n, k);
  auto it = cache->find(key);
  if (it == cache->end()) it = cache->emplace(key, MakeWeights(dtype, n, k)).first;
  return it->second;
}

ThreadPool* Pool(int threads) {
  static auto* pools = new std::map<int, std::unique_ptr<ThreadPool>>();
  auto& p = (*pools)[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return p.get();
}

// Args: n, k, m, isa, threads.
void BM_Linear(benchmark::State& state, DType dtype) {
  const int64_t n = state.range(0), k = state.range(1), m = state.range(2);
  const Isa isa = static_cast<Isa>(state.range(3));
  const int threads = static_cast<int>(state.range(4));
  if (static_cast<int>(isa) > static_cast<int>(DetectIsa())) {
    state.SkipWithError("ISA not supported on this CPU");
    return;
  }
  const Isa previous = SetIsaForTesting(isa);
  const auto& w = Weights(dtype, n, k);
  const MatrixView view{w.data(), dtype, n, k};
  std::vector<float> x(m * k, 0.5f), y(m * n);
  ThreadPool* pool = threads > 1 ? Pool(threads) : nullptr;
  for (auto _ : state) {
    Linear(x.data(), m, view, nullptr, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  SetIsaForTesting(previous);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.size() + x.size() * 4));
  state.counters["GFLOPS"] =
      benchmark::Counter(2.0 * n * k * m * state.iterations(), benchmark::Counter::kIsRate,
                         benchmark::Counter::kIs1000);
  state.SetLabel(std::string(DTypeName(dtype)) + " " + std::string(IsaName(isa)));
}

void LinearArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "k", "m", "isa", "threads"});
  for (int64_t n : {4096, 11008}) {
    for (int64_t m : {1, 8}) {
      for (int isa : {static_cast<int>(Isa::kAvx2), static_cast<int>(Isa::kAvx512)}) {
        for (int threads : {1, 2}) b->Args({n, 4096, m, isa, threads});
      }
    }
  }
  // A prefill chunk, where the kernel is compute-bound.
  b->Args({4096, 4096, 64, static_cast<int>(Isa::kAvx512), 1});
  // The scalar reference once, for scale.
  b->Args({4096, 4096, 1, static_cast<int>(Isa::kReference), 1});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_Linear, f32, DType::kF32)->Apply(LinearArgs);
BENCHMARK_CAPTURE(BM_Linear, f16, DType::kF16)->Apply(LinearArgs);
BENCHMARK_CAPTURE(BM_Linear, bf16, DType::kBF16)->Apply(LinearArgs);

}  // namespace
}  // namespace lcd::kernels

BENCHMARK_MAIN();
