#include "lcd/runtime/kv_cache.h"

#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"

namespace lcd::runtime {

BlockAllocator::BlockAllocator(int64_t num_blocks)
    : num_blocks_(num_blocks), in_use_(static_cast<size_t>(num_blocks), false) {
  LCD_CHECK(num_blocks >= 0 && num_blocks <= INT32_MAX) << "num_blocks=" << num_blocks;
  free_.reserve(static_cast<size_t>(num_blocks));
  // Stack in reverse so a fresh allocator hands out 0, 1, 2, ... (easier to
  // read in logs and tests).
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

absl::StatusOr<std::vector<int32_t>> BlockAllocator::Allocate(int64_t n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cannot allocate ", n, " blocks"));
  if (n > num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache exhausted: ", n, " blocks requested, ",
                                                     num_free(), " of ", num_blocks_, " free"));
  }
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int32_t b = free_.back();
    free_.pop_back();
    in_use_[static_cast<size_t>(b)] = true;
    out.push_back(b);
  }
  return out;
}

void BlockAllocator::Free(const std::vector<int32_t>& blocks) {
  for (int32_t b : blocks) {
    LCD_CHECK(b >= 0 && b < num_blocks_) << "freeing block " << b << " outside [0, " << num_blocks_ << ")";
    LCD_CHECK(in_use_[static_cast<size_t>(b)]) << "block " << b << " freed twice";
    in_use_[static_cast<size_t>(b)] = false;
    free_.push_back(b);
  }
}

absl::StatusOr<KvCache> KvCache::Create(int64_t num_layers, const kernels::KvLayout& layout,
                                        int64_t num_blocks) {
  if (num_layers <= 0 || num_blocks <= 0 || layout.block_size <= 0 || layout.num_kv_heads <= 0 ||
      layout.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid KV cache shape: layers=", num_layers, " blocks=", num_blocks, " block_size=",
        layout.block_size, " kv_heads=", layout.num_kv_heads, " head_dim=", layout.head_dim));
  }
  const uint64_t per_pool = kernels::KvBlockBytes(layout) * static_cast<uint64_t>(num_blocks);
  KvCache cache;
  cache.layout_ = layout;
  cache.num_blocks_ = num_blocks;
  try {
    cache.k_.resize(static_cast<size_t>(num_layers));
    cache.v_.resize(static_cast<size_t>(num_layers));
    for (int64_t l = 0; l < num_layers; ++l) {
      cache.k_[l].assign(per_pool, 0);
      cache.v_[l].assign(per_pool, 0);
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate KV cache of ", 2 * per_pool * num_layers, " bytes"));
  } catch (const std::length_error&) {
    return absl::ResourceExhaustedError("KV cache size overflows");
  }
  return cache;
}

uint64_t KvCache::BytesForBlocks(int64_t num_layers, const kernels::KvLayout& layout, int64_t num_blocks) {
  return 2 * kernels::KvBlockBytes(layout) * static_cast<uint64_t>(num_layers) *
         static_cast<uint64_t>(num_blocks);
}

int64_t KvCache::BlocksForBytes(int64_t num_layers, const kernels::KvLayout& layout, uint64_t bytes) {
  const uint64_t per_block = 2 * kernels::KvBlockBytes(layout) * static_cast<uint64_t>(num_layers);
  if (per_block == 0) return 0;
  return static_cast<int64_t>(bytes / per_block);
}

uint64_t KvCache::bytes() const { return BytesForBlocks(num_layers(), layout_, num_blocks_); }

}  // namespace lcd::runtime
