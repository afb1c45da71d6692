// PagedAttention at every ISA level against a float64 reference: grouped-
// query attention, block_size 16, several sequences with different q_len and
// context_len in one batch (decode steps, a full prefill, prefill chunks that
// continue an existing context), blocks scattered in the pool. Every slot a
// sequence must not read (unassigned blocks, slots past context_len) holds
// NaN, so reading one fails the test; causal masking inside a prefill chunk
// is checked by the float64 reference, which lets query i of a chunk see only
// positions <= context_len - q_len + i.
// Tolerance: |out - out64| <= 2e-5 * max|v| (the output is a convex
// combination of v rows; scores carry fp32 dot-product rounding). fp16 and
// bf16 caches are checked the same way: the float64 reference reads the
// values as rounded to the cache dtype (rounding itself is WriteKv's test).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernel_test_util.h"
#include "lcd/kernels/ops.h"

namespace lcd::kernels {
namespace {

using testing::AvailableIsas;
using testing::FreshSeed;
using testing::RandomVector;
using testing::ScopedIsa;
using testing::SeedMessage;

struct SeqSpec {
  int64_t q_len;
  int64_t context_len;
};

struct Config {
  int64_t num_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
};

// The pool as the kernel sees it: `values` rounded to `dtype`, in place (the
// float64 reference then reads exactly what the kernel reads).
std::vector<uint8_t> StorePool(std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * DTypeSize(dtype));
  ConvertFromF32(values.data(), values.size(), dtype, bytes.data());
  ConvertToF32(bytes.data(), dtype, values.size(), values.data());
  return bytes;
}

void RunCase(std::mt19937_64& rng, const Config& cfg, const std::vector<SeqSpec>& specs,
             ThreadPool* pool, DType dtype = DType::kF32) {
  const KvLayout layout{16, cfg.num_kv_heads, cfg.head_dim, dtype};
  const int64_t bs = layout.block_size;
  const int64_t kv_row = cfg.num_kv_heads * cfg.head_dim;
  int64_t total_blocks = 0, num_tokens = 0;
  for (const SeqSpec& s : specs) {
    total_blocks += (s.context_len + bs - 1) / bs;
    num_tokens += s.q_len;
  }
  const int64_t num_blocks = total_blocks + 3;  // spare blocks nobody owns
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);

  std::vector<float> k_pool(num_blocks * bs * kv_row, std::nanf(""));
  std::vector<float> v_pool(k_pool.size(), std::nanf(""));
  std::vector<std::vector<int32_t>> tables(specs.size());
  std::vector<AttentionSeq> seqs(specs.size());
  int64_t next_block = 0, q_offset = 0;
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (size_t s = 0; s < specs.size(); ++s) {
    const int64_t nb = (specs[s].context_len + bs - 1) / bs;
    for (int64_t b = 0; b < nb; ++b) tables[s].push_back(perm[next_block++]);
    for (int64_t p = 0; p < specs[s].context_len; ++p) {
      const int64_t slot = tables[s][p / bs] * bs + p % bs;
      for (int64_t i = 0; i < kv_row; ++i) {
        k_pool[slot * kv_row + i] = dist(rng);
        v_pool[slot * kv_row + i] = dist(rng);
      }
    }
    seqs[s] = AttentionSeq{q_offset, specs[s].q_len, specs[s].context_len, tables[s].data()};
    q_offset += specs[s].q_len;
  }
  const std::vector<uint8_t> k_store = StorePool(k_pool, dtype);
  const std::vector<uint8_t> v_store = StorePool(v_pool, dtype);
  const std::vector<float> q = RandomVector(rng, num_tokens * cfg.num_heads * cfg.head_dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(cfg.head_dim));

  // float64 reference.
  const int64_t hd = cfg.head_dim, group = cfg.num_heads / cfg.num_kv_heads;
  std::vector<double> want(q.size());
  for (size_t s = 0; s < specs.size(); ++s) {
    for (int64_t i = 0; i < seqs[s].q_len; ++i) {
      const int64_t row = seqs[s].q_offset + i;
      const int64_t visible = seqs[s].context_len - seqs[s].q_len + i + 1;
      for (int64_t h = 0; h < cfg.num_heads; ++h) {
        const int64_t kvh = h / group;
        std::vector<double> score(visible);
        double mx = -INFINITY;
        for (int64_t p = 0; p < visible; ++p) {
          const int64_t slot = tables[s][p / bs] * bs + p % bs;
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) {
            dot += static_cast<double>(q[(row * cfg.num_heads + h) * hd + d]) *
                   k_pool[slot * kv_row + kvh * hd + d];
          }
          score[p] = dot * scale;
          mx = std::max(mx, score[p]);
        }
        double sum = 0;
        for (double& v : score) sum += v = std::exp(v - mx);
        for (int64_t d = 0; d < hd; ++d) {
          double acc = 0;
          for (int64_t p = 0; p < visible; ++p) {
            const int64_t slot = tables[s][p / bs] * bs + p % bs;
            acc += score[p] / sum * v_pool[slot * kv_row + kvh * hd + d];
          }
          want[(row * cfg.num_heads + h) * hd + d] = acc;
        }
      }
    }
  }

  for (Isa isa : AvailableIsas()) {
    ScopedIsa forced(isa);
    SCOPED_TRACE(::testing::Message()
                 << IsaName(isa) << " " << DTypeName(dtype) << " heads=" << cfg.num_heads << "/" << cfg.num_kv_heads
                 << " head_dim=" << hd << " pool=" << (pool != nullptr));
    std::vector<float> out(q.size(), std::nanf(""));
    PagedAttention(q.data(), cfg.num_heads, seqs.data(), static_cast<int64_t>(seqs.size()), layout,
                   k_store.data(), v_store.data(), scale, out.data(), pool);
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_NEAR(out[i], want[i], 2e-5)
          << "element " << i << " (token " << i / (cfg.num_heads * hd) << ", head "
          << (i / hd) % cfg.num_heads << ")";
    }
  }
}

TEST(PagedAttentionTest, MixedBatchGqaMatchesFloat64) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(3);
  // decode at context 1, decode mid-block, full prefill, prefill chunk that
  // continues a context across a block boundary, long decode, 1-token chunk.
  const std::vector<SeqSpec> specs = {{1, 1},   {1, 37},  {5, 5}, {7, 40},
                                      {1, 300}, {20, 33}, {3, 16}};
  for (const Config& cfg :
       {Config{8, 2, 64}, Config{6, 3, 40}, Config{4, 4, 128}, Config{5, 1, 17}}) {
    RunCase(rng, cfg, specs, nullptr);
    RunCase(rng, cfg, specs, &pool);
  }
}

TEST(PagedAttentionTest, HalfPrecisionCachesMatchFloat64) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(3);
  const std::vector<SeqSpec> specs = {{1, 1}, {1, 37}, {5, 5}, {7, 40}, {1, 300}, {20, 33}};
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    // head_dim 17 and 40 leave tails after the 8- and 16-wide widening loops.
    for (const Config& cfg : {Config{8, 2, 64}, Config{6, 3, 40}, Config{5, 1, 17}}) {
      RunCase(rng, cfg, specs, nullptr, dtype);
      RunCase(rng, cfg, specs, &pool, dtype);
    }
  }
}

TEST(PagedAttentionTest, LongContextDecode) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  RunCase(rng, Config{8, 2, 64}, {{1, 2500}, {2, 1800}}, &pool);
}

TEST(PagedAttentionTest, DecodeSplitAcrossThreadsMergesPartialSoftmax) {
  // Fewer tokens than threads: each token's context is split into ranges on
  // different threads and merged, including ranges left empty when the
  // context is shorter than the split count.
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool4(4);
  ThreadPool pool5(5);
  for (int64_t ctx : {1, 2, 3, 17, 300}) {
    RunCase(rng, Config{8, 2, 64}, {{1, ctx}}, &pool4);
  }
  RunCase(rng, Config{6, 3, 40}, {{1, 2}, {1, 77}}, &pool5);
  RunCase(rng, Config{4, 4, 32}, {{2, 2}, {1, 1000}}, &pool5);
}

TEST(PagedAttentionTest, FirstChunkTokenSeesOnlyItsPrefix) {
  // A targeted causal check: making a *future* key in the chunk huge must not
  // change earlier queries' outputs.
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const KvLayout layout{16, 1, 16};
  const int64_t ctx = 20, q_len = 6;
  std::vector<float> k_pool = RandomVector(rng, 2 * 16 * 16),
                     v_pool = RandomVector(rng, 2 * 16 * 16);
  const std::vector<int32_t> table = {1, 0};
  const std::vector<float> q = RandomVector(rng, q_len * 16);
  const AttentionSeq seq{0, q_len, ctx, table.data()};
  for (Isa isa : AvailableIsas()) {
    ScopedIsa forced(isa);
    std::vector<float> before(q.size()), after(q.size());
    PagedAttention(q.data(), 1, &seq, 1, layout, k_pool.data(), v_pool.data(), 0.25f, before.data(),
                   nullptr);
    std::vector<float> k2 = k_pool, v2 = v_pool;
    const int64_t last_slot = table[(ctx - 1) / 16] * 16 + (ctx - 1) % 16;
    for (int d = 0; d < 16; ++d) {
      k2[last_slot * 16 + d] = 50.0f * q[(q_len - 1) * 16 + d];
      v2[last_slot * 16 + d] = 1000.0f;
    }
    PagedAttention(q.data(), 1, &seq, 1, layout, k2.data(), v2.data(), 0.25f, after.data(),
                   nullptr);
    for (int64_t i = 0; i < (q_len - 1) * 16; ++i) ASSERT_EQ(before[i], after[i]) << IsaName(isa);
    EXPECT_GT(after[(q_len - 1) * 16], before[(q_len - 1) * 16]) << IsaName(isa);
  }
}

}  // namespace
}  // namespace lcd::kernels
