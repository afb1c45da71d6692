#include "lcd/runtime/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "gtest/gtest.h"

namespace lcd::runtime {
namespace {

TEST(BlockAllocatorTest, AllocatesDistinctBlocksUntilExhausted) {
  BlockAllocator a(5);
  EXPECT_EQ(a.num_free(), 5);
  auto x = a.Allocate(3);
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->size(), 3u);
  auto y = a.Allocate(2);
  ASSERT_TRUE(y.ok());
  std::set<int32_t> all(x->begin(), x->end());
  all.insert(y->begin(), y->end());
  EXPECT_EQ(all, (std::set<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(a.num_free(), 0);
  auto z = a.Allocate(1);
  EXPECT_EQ(z.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(BlockAllocatorTest, FailedAllocationTakesNothing) {
  BlockAllocator a(4);
  ASSERT_TRUE(a.Allocate(3).ok());
  EXPECT_FALSE(a.Allocate(2).ok());
  EXPECT_EQ(a.num_free(), 1);
  EXPECT_TRUE(a.Allocate(1).ok());
}

TEST(BlockAllocatorTest, FreedBlocksAreReused) {
  BlockAllocator a(3);
  auto x = a.Allocate(3);
  ASSERT_TRUE(x.ok());
  a.Free({(*x)[1]});
  EXPECT_EQ(a.num_free(), 1);
  auto y = a.Allocate(1);
  ASSERT_TRUE(y.ok());
  EXPECT_EQ((*y)[0], (*x)[1]);
  a.Free(*y);
  a.Free({(*x)[0], (*x)[2]});
  EXPECT_EQ(a.num_free(), 3);
  EXPECT_TRUE(a.Allocate(0).ok());
  EXPECT_FALSE(a.Allocate(-1).ok());
}

TEST(BlockAllocatorDeathTest, DoubleFreeIsAProgrammerError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  BlockAllocator a(2);
  auto x = a.Allocate(1);
  ASSERT_TRUE(x.ok());
  a.Free(*x);
  EXPECT_DEATH(a.Free(*x), "freed twice");
  EXPECT_DEATH(a.Free({7}), "outside");
}

TEST(KvCacheTest, CreateSizesPools) {
  for (kernels::DType dtype : {kernels::DType::kF32, kernels::DType::kF16, kernels::DType::kBF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    kernels::KvLayout layout{4, 2, 8, dtype};
    auto cache = KvCache::Create(3, layout, 5);
    ASSERT_TRUE(cache.ok()) << cache.status();
    EXPECT_EQ(cache->num_layers(), 3);
    EXPECT_EQ(cache->num_blocks(), 5);
    EXPECT_EQ(cache->bytes(), 2ull * 3 * 5 * 4 * 2 * 8 * kernels::DTypeSize(dtype));
    EXPECT_EQ(cache->bytes(), KvCache::BytesForBlocks(3, layout, 5));
    // Every pool is writable end to end and distinct per layer.
    const size_t n = 5 * 4 * 2 * 8 * kernels::DTypeSize(dtype);
    for (int64_t l = 0; l < 3; ++l) {
      std::memset(cache->k_pool(l), static_cast<int>(l), n);
      std::memset(cache->v_pool(l), static_cast<int>(10 + l), n);
    }
    auto byte = [](const void* p, size_t i) { return static_cast<const uint8_t*>(p)[i]; };
    EXPECT_EQ(byte(cache->k_pool(1), n - 1), 1);
    EXPECT_EQ(byte(cache->v_pool(2), 0), 12);
    EXPECT_EQ(byte(cache->k_pool(0), 0), 0);
  }
}

TEST(KvCacheTest, BlocksForBytesRoundsDown) {
  kernels::KvLayout layout{16, 4, 64};
  const uint64_t per_block = 2ull * 2 * 16 * 4 * 64 * sizeof(float);  // 2 layers
  EXPECT_EQ(KvCache::BlocksForBytes(2, layout, per_block * 10), 10);
  EXPECT_EQ(KvCache::BlocksForBytes(2, layout, per_block * 10 - 1), 9);
  EXPECT_EQ(KvCache::BlocksForBytes(2, layout, 0), 0);
}

TEST(KvCacheTest, RejectsBadShapes) {
  EXPECT_EQ(KvCache::Create(0, {4, 2, 8}, 5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create(2, {0, 2, 8}, 5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create(2, {4, 2, 8}, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheTest, HugeAllocationIsResourceExhausted) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "ASan aborts on oversized allocations instead of throwing bad_alloc";
#endif
  // 1 << 40 floats per pool: far beyond any test machine.
  auto cache = KvCache::Create(1, {1 << 10, 1 << 10, 1 << 10}, 1 << 10);
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace lcd::runtime
