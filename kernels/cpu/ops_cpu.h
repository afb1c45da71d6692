// Vectorised CPU implementations behind the dispatcher in src/ops.cc. Each
// namespace is compiled with its own ISA flags (file suffix _avx2 / _avx512)
// and must only be called when DetectIsa() reports that level. Contracts are
// those of the same-named functions in lcd/kernels/ops.h.
#ifndef LCD_KERNELS_CPU_OPS_CPU_H_
#define LCD_KERNELS_CPU_OPS_CPU_H_

#include <cstdint>

#include "lcd/kernels/ops.h"

namespace lcd::kernels {

// A per-thread, per-slot scratch array of at least n floats, valid until the
// same thread asks for the same slot again. Lives in a generic translation
// unit so the ISA-specific files instantiate no std:: containers (their
// out-of-line copies could otherwise be merged into non-AVX code by the
// linker). Slots in use: 0 and 1 inside one work item (attention scores and
// softmax statistics, RoPE tables), 2 and 3 on the thread that calls
// PagedAttention (split partials, token map), which also runs work items;
// 4 inside one attention work item (a K or V row widened from fp16/bf16).
float* ThreadScratch(int slot, int64_t n);

#define LCD_KERNELS_DECLARE_CPU_OPS_                                                       \
  void Linear(const float* x, int64_t m, const MatrixView& w, const float* bias, float* y, \
              ThreadPool* pool);                                                           \
  void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,  \
               float* y);                                                                  \
  void SiluMul(const float* gate, const float* up, int64_t n, float* y);                   \
  void Add(const float* x, int64_t n, float* y);                                           \
  void Softmax(float* x, int64_t n);                                                       \
  void ApplyRope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,        \
                 const int32_t* positions, const float* inv_freq);                         \
  void PagedAttention(const float* q, int64_t num_heads, const AttentionSeq* seqs,         \
                      int64_t num_seqs, const KvLayout& layout, const void* k_pool,        \
                      const void* v_pool, float scale, float* out, ThreadPool* pool);

namespace avx2 {
LCD_KERNELS_DECLARE_CPU_OPS_
}  // namespace avx2

namespace avx512 {
LCD_KERNELS_DECLARE_CPU_OPS_
}  // namespace avx512

#undef LCD_KERNELS_DECLARE_CPU_OPS_

}  // namespace lcd::kernels

#endif  // LCD_KERNELS_CPU_OPS_CPU_H_
