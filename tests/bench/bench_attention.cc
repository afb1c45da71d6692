// PagedAttention decode (one query token per sequence) at Llama-2-7B head
// shapes: 32 query heads of dim 128 with 32 kv heads (MHA) or 8 (GQA), block
// size 16, context 512..4096, KV cache fp32 or fp16 (the serving default).
// bytes_per_second counts the K and V rows read (context * kv_heads *
// head_dim * dtype size, twice), the traffic that bounds long-context decode.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "lcd/kernels/ops.h"
#include "lcd/kernels/thread_pool.h"

namespace lcd::kernels {
namespace {

// Args: context_len, num_kv_heads, batch (sequences), isa, threads, KV dtype.
void BM_PagedAttentionDecode(benchmark::State& state) {
  const int64_t context = state.range(0), kv_heads = state.range(1), batch = state.range(2);
  const Isa isa = static_cast<Isa>(state.range(3));
  const int threads = static_cast<int>(state.range(4));
  const DType dtype = static_cast<DType>(state.range(5));
  if (static_cast<int>(isa) > static_cast<int>(DetectIsa())) {
    state.SkipWithError("ISA not supported on this CPU");
    return;
  }
  const Isa previous = SetIsaForTesting(isa);
  const int64_t heads = 32, head_dim = 128, block = 16;
  const KvLayout layout{block, kv_heads, head_dim, dtype};
  const int64_t blocks_per_seq = (context + block - 1) / block;
  const int64_t num_blocks = blocks_per_seq * batch;
  std::vector<float> k_pool(num_blocks * block * kv_heads * head_dim), v_pool(k_pool.size());
  for (size_t i = 0; i < k_pool.size(); ++i) {
    k_pool[i] = std::sin(0.001f * static_cast<float>(i));
    v_pool[i] = std::cos(0.001f * static_cast<float>(i));
  }
  std::vector<uint8_t> k_store(k_pool.size() * DTypeSize(dtype)), v_store(k_store.size());
  ConvertFromF32(k_pool.data(), k_pool.size(), dtype, k_store.data());
  ConvertFromF32(v_pool.data(), v_pool.size(), dtype, v_store.data());
  std::vector<std::vector<int32_t>> tables(batch);
  std::vector<AttentionSeq> seqs(batch);
  for (int64_t s = 0; s < batch; ++s) {
    // Interleave sequences' blocks, as a long-running cache would.
    for (int64_t b = 0; b < blocks_per_seq; ++b)
      tables[s].push_back(static_cast<int32_t>(b * batch + s));
    seqs[s] = AttentionSeq{s, 1, context, tables[s].data()};
  }
  std::vector<float> q(batch * heads * head_dim, 0.01f), out(q.size());
  std::unique_ptr<ThreadPool> pool = threads > 1 ? std::make_unique<ThreadPool>(threads) : nullptr;
  for (auto _ : state) {
    PagedAttention(q.data(), heads, seqs.data(), batch, layout, k_store.data(), v_store.data(),
                   1.0f / std::sqrt(static_cast<float>(head_dim)), out.data(), pool.get());
    benchmark::DoNotOptimize(out.data());
  }
  SetIsaForTesting(previous);
  state.SetBytesProcessed(state.iterations() * 2 * batch * context * kv_heads * head_dim *
                          static_cast<int64_t>(DTypeSize(dtype)));
  state.SetLabel(std::string(IsaName(isa)) + " " + std::string(DTypeName(dtype)));
}

void AttentionArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"ctx", "kv_heads", "batch", "isa", "threads", "dtype"});
  const int f32 = static_cast<int>(DType::kF32), f16 = static_cast<int>(DType::kF16);
  for (int dt : {f32, f16}) {
    for (int64_t ctx : {512, 4096}) {
      for (int64_t kv : {32, 8}) {
        for (int isa : {static_cast<int>(Isa::kAvx2), static_cast<int>(Isa::kAvx512)}) {
          b->Args({ctx, kv, 1, isa, 1, dt});
          b->Args({ctx, kv, 1, isa, 2, dt});
        }
      }
    }
    b->Args({2048, 8, 4, static_cast<int>(Isa::kAvx2), 2, dt});
    b->Args({2048, 8, 4, static_cast<int>(Isa::kAvx512), 2, dt});
  }
  b->Args({512, 8, 1, static_cast<int>(Isa::kReference), 1, f32});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}
BENCHMARK(BM_PagedAttentionDecode)->Apply(AttentionArgs);

}  // namespace
}  // namespace lcd::kernels

BENCHMARK_MAIN();
