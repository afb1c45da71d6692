// Paged KV cache: per layer, a pool of fixed-size blocks of K and V rows, and
// a block allocator handing blocks to sequences (vLLM's PagedAttention
// layout; see kernels::KvLayout for the memory layout of a block).
//
// The pools hold layout().dtype (fp32, fp16 or bf16); kernels::WriteKv
// rounds to it and kernels::PagedAttention widens from it.
// Ownership: the KvCache owns the pools. Sequences own block ids (a block
// table), which they obtain from and return to the BlockAllocator.
// Thread safety: none; the engine thread is the only user.
#ifndef LCD_RUNTIME_KV_CACHE_H_
#define LCD_RUNTIME_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/ops.h"

namespace lcd::runtime {

// Hands out block ids in [0, num_blocks). O(1) allocate and free.
class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  // ResourceExhausted when fewer than n blocks are free (nothing allocated then).
  absl::StatusOr<std::vector<int32_t>> Allocate(int64_t n);
  // Returns blocks; freeing a block twice is a programmer error (CHECK).
  void Free(const std::vector<int32_t>& blocks);

 private:
  int64_t num_blocks_;
  std::vector<int32_t> free_;
  std::vector<bool> in_use_;
};

class KvCache {
 public:
  // Allocates num_blocks zeroed blocks of host memory for every layer (the
  // CPU backend's cache; see lcd/runtime/backend.h). InvalidArgument for a
  // non-positive shape; ResourceExhausted when the memory cannot be allocated.
  static absl::StatusOr<KvCache> Create(int64_t num_layers, const kernels::KvLayout& layout,
                                        int64_t num_blocks);
  // Number of blocks that fit in `bytes` for this shape (>= 0).
  static int64_t BlocksForBytes(int64_t num_layers, const kernels::KvLayout& layout, uint64_t bytes);
  // The inverse: bytes that num_blocks blocks of this shape take.
  static uint64_t BytesForBlocks(int64_t num_layers, const kernels::KvLayout& layout, int64_t num_blocks);

  const kernels::KvLayout& layout() const { return layout_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_layers() const { return static_cast<int64_t>(k_.size()); }
  uint64_t bytes() const;
  void* k_pool(int64_t layer) { return k_[layer].data(); }
  void* v_pool(int64_t layer) { return v_[layer].data(); }
  const void* k_pool(int64_t layer) const { return k_[layer].data(); }
  const void* v_pool(int64_t layer) const { return v_[layer].data(); }

 private:
  kernels::KvLayout layout_;
  int64_t num_blocks_ = 0;
  std::vector<std::vector<uint8_t>> k_, v_;
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_KV_CACHE_H_
