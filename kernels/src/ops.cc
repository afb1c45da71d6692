// Run-time dispatch of the ops in ops.h to the ISA chosen by ActiveIsa().
// EmbeddingLookup and WriteKv are row copies (WriteKv rounds to the cache
// dtype: a few hundred values per token and layer), so every level uses the
// reference for them.
#include "lcd/kernels/ops.h"

#include "cpu/ops_cpu.h"
#include "reference/ops_reference.h"

// Picks the implementation of `fn` for the active ISA and calls it.
#define LCD_KERNELS_DISPATCH_(fn, ...) \
  switch (ActiveIsa()) {               \
    case Isa::kAvx512:                 \
      return avx512::fn(__VA_ARGS__);  \
    case Isa::kAvx2:                   \
      return avx2::fn(__VA_ARGS__);    \
    case Isa::kReference:              \
      break;                           \
  }                                    \
  return reference::fn(__VA_ARGS__)

namespace lcd::kernels {

void Linear(const float* x, int64_t m, const MatrixView& w, const float* bias, float* y,
            ThreadPool* pool) {
  LCD_KERNELS_DISPATCH_(Linear, x, m, w, bias, y, pool);
}

void EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t n, float* out) {
  reference::EmbeddingLookup(table, ids, n, out);
}

void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) {
  LCD_KERNELS_DISPATCH_(RmsNorm, x, rows, dim, weight, eps, y);
}

void ApplyRope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
               const int32_t* positions, const float* inv_freq) {
  LCD_KERNELS_DISPATCH_(ApplyRope, x, num_tokens, num_heads, head_dim, positions, inv_freq);
}

void SiluMul(const float* gate, const float* up, int64_t n, float* y) {
  LCD_KERNELS_DISPATCH_(SiluMul, gate, up, n, y);
}

void Add(const float* x, int64_t n, float* y) { LCD_KERNELS_DISPATCH_(Add, x, n, y); }

void Softmax(float* x, int64_t n) { LCD_KERNELS_DISPATCH_(Softmax, x, n); }

void WriteKv(const float* k, const float* v, int64_t num_tokens, const int64_t* slots,
             const KvLayout& layout, void* k_pool, void* v_pool) {
  reference::WriteKv(k, v, num_tokens, slots, layout, k_pool, v_pool);
}

void PagedAttention(const float* q, int64_t num_heads, const AttentionSeq* seqs, int64_t num_seqs,
                    const KvLayout& layout, const void* k_pool, const void* v_pool, float scale,
                    float* out, ThreadPool* pool) {
  LCD_KERNELS_DISPATCH_(PagedAttention, q, num_heads, seqs, num_seqs, layout, k_pool, v_pool, scale,
                        out, pool);
}

}  // namespace lcd::kernels
