// QuantLinear (quant_linear.h) at Llama-2-7B shapes: batch-1 decode GEMV per
// format, bits and kernel design, as bytes/s of everything the kernel reads
// (PackedQuantMatrix::BytesRead() + x) and as a fraction of the streaming-read
// bandwidth measured in the same run (stream_read.h); m = 8 and 64 against
// the dense bf16 Linear of the same shape. Each case rotates over enough
// copies of the packed matrix that the working set is >= 96 MiB (3x this
// machine's L3), so every call streams its weights from DRAM.
//
//   bench_quant_linear --benchmark_filter='gemv'   (decode only)
//
// Counters: vs_stream = bytes_per_second / stream read (same thread count),
// Gw/s = weights per second, GFLOPS = 2*rows*cols*m per second. Every
// iteration includes QuantActivations::Prepare (the activation tables).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lcd/kernels/dtype.h"
#include "lcd/kernels/ops.h"
#include "lcd/kernels/quant_linear.h"
#include "lcd/kernels/thread_pool.h"
#include "stream_read.h"

namespace lcd::kernels {
namespace {

constexpr int64_t kWorkingSet = int64_t{96} << 20;

uint64_t Lcg(uint64_t* s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return *s >> 32;
}

ThreadPool* Pool(int threads) {
  static auto* pools = new std::map<int, std::unique_ptr<ThreadPool>>();
  auto& p = (*pools)[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return p.get();
}

double StreamBandwidth(int threads) {
  static auto* cache = new std::map<int, double>();
  auto it = cache->find(threads);
  if (it == cache->end()) {
    it = cache->emplace(threads, bench::MeasureStreamReadBytesPerSecond(threads)).first;
  }
  return it->second;
}

// The packed copies of the case last asked for (one case in memory at a time:
// benchmarks of one matrix are registered next to each other).
const std::vector<std::unique_ptr<PackedQuantMatrix>>& Packed(const QuantLayout& l,
                                                              QuantKernel kernel, bool dram,
                                                              std::string* error) {
  static auto* key = new std::string();
  static auto* copies = new std::vector<std::unique_ptr<PackedQuantMatrix>>();
  const std::string k = std::string(QuantFormatName(l.format)) + std::to_string(l.bits) + "/" +
                        std::to_string(l.rows) + "x" + std::to_string(l.cols) + "/" +
                        std::to_string(l.group_size) + "/" + std::string(QuantKernelName(kernel)) +
                        (dram ? "/dram" : "/cache");
  if (k == *key) return *copies;
  copies->clear();
  *key = k;
  std::vector<uint8_t> codes(static_cast<size_t>(l.CodeBytes()));
  std::vector<uint16_t> params(static_cast<size_t>(l.ParamCount()));
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (uint8_t& c : codes) c = static_cast<uint8_t>(Lcg(&s));
  for (size_t i = 0; i < params.size(); ++i) {
    const float u = static_cast<float>(Lcg(&s) & 0xffff) / 65536.0f;
    params[i] = FloatToFp16(l.format == QuantFormat::kAffine && i % 2 == 1 ? 1.5f : 0.05f + u);
  }
  const QuantMatrixView view{l, codes.data(), params.data()};
  do {
    auto p = PackedQuantMatrix::Pack(view, kernel);
    if (!p.ok()) {
      *error = std::string(p.status().message());
      copies->clear();
      key->clear();
      return *copies;
    }
    copies->push_back(*std::move(p));
  } while (dram &&
           static_cast<int64_t>(copies->size() * copies->front()->BytesRead()) < kWorkingSet);
  return *copies;
}

// Times QuantActivations::Prepare + QuantLinear on m random input rows,
// rotating over `copies` (one copy: it stays in cache), and reports bytes/s,
// the ratio to a same-thread stream read, weights/s and GFLOP/s.
void TimeCopies(benchmark::State& state, const std::vector<std::unique_ptr<PackedQuantMatrix>>& copies,
                const QuantLayout& l, int64_t m, int threads) {
  const double stream = StreamBandwidth(threads);
  ThreadPool* pool = threads > 1 ? Pool(threads) : nullptr;
  std::vector<float> x(m * l.cols), y(m * l.rows);
  uint64_t s = 42;
  for (float& v : x) v = static_cast<float>(static_cast<int32_t>(Lcg(&s))) * 4.6566e-10f;
  QuantActivations act;
  size_t i = 0;
  for (auto _ : state) {
    act.Prepare(x.data(), m, l.cols, pool);
    QuantLinear(act, *copies[i], nullptr, y.data(), pool);
    if (++i == copies.size()) i = 0;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double bytes = static_cast<double>(copies[0]->BytesRead() + x.size() * 4);
  const double iters = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(iters * bytes));
  state.counters["vs_stream"] =
      benchmark::Counter(iters * bytes / stream, benchmark::Counter::kIsRate);
  state.counters["Gw/s"] =
      benchmark::Counter(iters * l.rows * l.cols * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GFLOPS"] =
      benchmark::Counter(2e-9 * l.rows * l.cols * m * iters, benchmark::Counter::kIsRate);
  state.counters["stream_GBps"] = stream * 1e-9;
  state.SetLabel(copies[0]->Describe() + " x" + std::to_string(copies.size()) + " copies");
}

// Args: format, bits, rows, cols, group_size, kernel, m, threads. `dram`:
// rotate over copies (weights from DRAM) or run one copy that stays in L2/L3
// (the compute ceiling of the kernel).
void BM_QuantLinear(benchmark::State& state, bool dram) {
  const QuantLayout l{static_cast<QuantFormat>(state.range(0)), static_cast<int>(state.range(1)),
                      state.range(2), state.range(3), state.range(4)};
  const QuantKernel kernel = static_cast<QuantKernel>(state.range(5));
  const int64_t m = state.range(6);
  const int threads = static_cast<int>(state.range(7));
  std::string error;
  const auto& copies = Packed(l, kernel, dram, &error);
  if (copies.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  TimeCopies(state, copies, l, m, threads);
}

// The dense bf16 Linear of the same shape (one 90 MB copy: already > L3).
void BM_DenseBf16(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1), m = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
  uint64_t s = 7;
  for (uint16_t& v : w) v = FloatToBf16(static_cast<float>(Lcg(&s) & 0xffff) / 65536.0f - 0.5f);
  std::vector<float> x(m * cols, 0.5f), y(m * rows);
  ThreadPool* pool = threads > 1 ? Pool(threads) : nullptr;
  const MatrixView view{w.data(), DType::kBF16, rows, cols};
  for (auto _ : state) {
    Linear(x.data(), m, view, nullptr, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.size() * 2 + x.size() * 4));
  state.counters["GFLOPS"] =
      benchmark::Counter(2e-9 * rows * cols * m * state.iterations(), benchmark::Counter::kIsRate);
  state.SetLabel(std::string("bf16 ") + std::string(IsaName(ActiveIsa())));
}

// The lattice format (GLVQ) decoded then multiplied (kLatticeDecode), as
// BM_QuantLinear: rotating copies from DRAM. Args: bits, rows, cols, g, d,
// kernel, m, threads. Codes random, G = 0.4/2^(b-1) I plus small off-diagonal
// terms, mu = 30, scales ~0.05: realistic magnitudes for the exp.
void BM_Lattice(benchmark::State& state) {
  QuantLayout l{QuantFormat::kLattice, static_cast<int>(state.range(0)), state.range(1), state.range(2),
                state.range(3)};
  l.lattice_dim = static_cast<int>(state.range(4));
  const QuantKernel kernel = static_cast<QuantKernel>(state.range(5));
  const int64_t m = state.range(6);
  const int threads = static_cast<int>(state.range(7));
  const int d = l.lattice_dim;
  std::vector<uint8_t> codes(static_cast<size_t>(l.CodeBytes()));
  std::vector<uint16_t> params(static_cast<size_t>(l.ParamCount()));
  std::vector<uint16_t> lattice(static_cast<size_t>(l.LatticeParamCount()));
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (uint8_t& c : codes) c = static_cast<uint8_t>(Lcg(&s));
  if ((l.cols * l.bits) % 8 != 0) {
    for (int64_t r = 0; r < l.rows; ++r) codes[(r + 1) * l.CodeRowBytes() - 1] &= static_cast<uint8_t>((1 << ((l.cols * l.bits) % 8)) - 1);
  }
  for (uint16_t& p : params) p = FloatToFp16(0.03f + static_cast<float>(Lcg(&s) & 0xffff) / 65536.0f * 0.04f);
  const float diag = 0.4f / static_cast<float>(1 << (l.bits - 1));
  for (int64_t k = 0; k < l.groups(); ++k) {
    uint16_t* g = lattice.data() + k * l.LatticeParamsPerGroup();
    for (int i = 0; i < d * d; ++i) {
      const float off = (static_cast<float>(Lcg(&s) & 0xffff) / 65536.0f - 0.5f) * 0.02f;
      g[i] = FloatToFp16(i % (d + 1) == 0 ? diag : off);
    }
    g[d * d] = FloatToFp16(30.0f);
  }
  const QuantMatrixView view{l, codes.data(), params.data(), lattice.data()};
  std::vector<std::unique_ptr<PackedQuantMatrix>> copies;
  do {
    auto p = PackedQuantMatrix::Pack(view, kernel);
    if (!p.ok()) {
      state.SkipWithError(std::string(p.status().message()).c_str());
      return;
    }
    copies.push_back(*std::move(p));
  } while (static_cast<int64_t>(copies.size() * copies.front()->BytesRead()) < kWorkingSet);
  TimeCopies(state, copies, l, m, threads);
}

void LatticeArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bits", "rows", "cols", "g", "d", "kernel", "m", "threads"});
  const int kDecode = static_cast<int>(QuantKernel::kLatticeDecode);
  for (int bits : {2, 3}) {
    for (int d : {8, 16, 32}) {
      for (int threads : {1, 2}) b->Args({bits, 11008, 4096, 128, d, kDecode, 1, threads});
    }
  }
  for (int m : {8, 64}) b->Args({2, 11008, 4096, 128, 8, kDecode, m, 1});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

constexpr int kCb = static_cast<int>(QuantFormat::kCodebook);
constexpr int kAff = static_cast<int>(QuantFormat::kAffine);
constexpr int kBcq = static_cast<int>(QuantFormat::kBinaryCoded);
constexpr int kLut = static_cast<int>(QuantKernel::kActivationLut);
constexpr int kCentroid = static_cast<int>(QuantKernel::kCentroidTable);

void GemvArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"fmt", "bits", "rows", "cols", "g", "kernel", "m", "threads"});
  // {format, bits, has a LUT kernel}
  const int cases[][3] = {{kAff, 2, 1}, {kCb, 2, 1}, {kBcq, 2, 1}, {kAff, 3, 1}, {kAff, 4, 1},
                          {kBcq, 1, 1}, {kCb, 3, 0}, {kCb, 4, 0},  {kAff, 8, 0}};
  for (const auto& c : cases) {
    for (int kernel : {kLut, kCentroid}) {
      if (kernel == kLut && !c[2]) continue;
      for (int threads : {1, 2}) b->Args({c[0], c[1], 11008, 4096, 64, kernel, 1, threads});
    }
  }
  // The transposed shape (down projection), main formats only.
  for (int kernel : {kLut, kCentroid}) {
    for (int threads : {1, 2}) b->Args({kAff, 2, 4096, 11008, 64, kernel, 1, threads});
  }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void BatchArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"fmt", "bits", "rows", "cols", "g", "kernel", "m", "threads"});
  for (const auto& c : {std::pair{kAff, 2}, std::pair{kCb, 2}, std::pair{kAff, 4}}) {
    for (int kernel : {kLut, kCentroid}) {
      for (int m : {8, 64}) {
        for (int threads : {1, 2})
          b->Args({c.first, c.second, 11008, 4096, 64, kernel, m, threads});
      }
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

void DenseArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols", "m", "threads"});
  for (int m : {1, 8, 64}) {
    for (int threads : {1, 2}) b->Args({11008, 4096, m, threads});
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

void InCacheArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"fmt", "bits", "rows", "cols", "g", "kernel", "m", "threads"});
  for (const auto& c : {std::pair{kAff, 2}, std::pair{kCb, 2}, std::pair{kBcq, 2}}) {
    for (int kernel : {kLut, kCentroid}) b->Args({c.first, c.second, 1024, 4096, 64, kernel, 1, 1});
  }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_QuantLinear, gemv, true)->Apply(GemvArgs);
BENCHMARK_CAPTURE(BM_QuantLinear, batch, true)->Apply(BatchArgs);
BENCHMARK_CAPTURE(BM_QuantLinear, in_cache, false)->Apply(InCacheArgs);
BENCHMARK(BM_DenseBf16)->Apply(DenseArgs);
BENCHMARK(BM_Lattice)->Apply(LatticeArgs);

}  // namespace
}  // namespace lcd::kernels

BENCHMARK_MAIN();
