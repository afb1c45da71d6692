// CPU numeric primitives of the transformer forward pass.
//
// Conventions for every function here:
// - Row-major, densely packed arrays; shapes are given in [brackets].
// - Activations are fp32. Weights may be stored as fp32, fp16 or bf16 and are
//   widened to fp32 inside the kernel (never materialised as a copy).
// - `pool` may be nullptr (run on the calling thread).
// - Inputs and outputs must not alias unless a function says so.
// - Arguments are trusted: the runtime validates shapes once at load time, so
//   kernels only assert them in debug builds.
//
// Each function dispatches at run time (CPUID) to the fastest available
// implementation: AVX-512F, AVX2+FMA or the scalar reference in
// kernels/reference (the oracle used by the tests). SetIsaForTesting forces one;
// operators can also cap the level with the environment variable
// LCD_KERNELS_ISA=reference|avx2|avx512 (read once, at the first dispatch).
//
// Threading: the functions are reentrant (no global state besides the ISA
// choice), so different threads may call them concurrently with different
// pools; `pool` itself must only be used by one call at a time.
#ifndef LCD_KERNELS_OPS_H_
#define LCD_KERNELS_OPS_H_

#include <cstdint>
#include <string_view>

#include "lcd/kernels/dtype.h"
#include "lcd/kernels/thread_pool.h"

namespace lcd::kernels {

// A weight matrix [rows][cols] in its stored precision. For a linear layer in
// Hugging Face layout rows = out_features, cols = in_features.
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
};

enum class Isa { kReference = 0, kAvx2 = 1, kAvx512 = 2 };
std::string_view IsaName(Isa isa);
// Best ISA this CPU supports (and the build compiled).
Isa DetectIsa();
// The ISA kernels currently dispatch to (DetectIsa() unless overridden).
Isa ActiveIsa();
// Forces dispatch to `isa` (must be <= DetectIsa()); returns the previous one.
Isa SetIsaForTesting(Isa isa);

// y[m][n] = sum_k x[m][k] * w[n][k] + (bias ? bias[n] : 0), with
// w.rows = n, w.cols = k. m = 1 is the decode GEMV; m > 1 (a batch of tokens)
// reads every weight row once per call, not once per token.
void Linear(const float* x, int64_t m, const MatrixView& w, const float* bias, float* y,
            ThreadPool* pool);

// out[i][:] = table[ids[i]][:] widened to fp32. table is [vocab][dim].
void EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t n, float* out);

// y[r][:] = x[r][:] / sqrt(mean(x[r]^2) + eps) * weight[:]; x, y: [rows][dim].
// y may alias x.
void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y);

// Rotary embedding in the Hugging Face "rotate_half" (GPT-NeoX) layout, in
// place on x [num_tokens][num_heads][head_dim]: for i < head_dim/2,
//   (x[i], x[i+half]) <- (x[i]*cos - x[i+half]*sin, x[i+half]*cos + x[i]*sin)
// with angle = positions[t] * inv_freq[i]. inv_freq has head_dim/2 entries
// (any rope scaling is already folded into it by the caller).
void ApplyRope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
               const int32_t* positions, const float* inv_freq);

// y[i] = silu(gate[i]) * up[i], silu(v) = v / (1 + exp(-v)). y may alias gate.
void SiluMul(const float* gate, const float* up, int64_t n, float* y);

// y[i] += x[i]. (Residual connection.)
void Add(const float* x, int64_t n, float* y);

// In-place numerically stable softmax over n values.
void Softmax(float* x, int64_t n);

// ---- Paged attention --------------------------------------------------------
//
// The KV cache of one layer is a pool of fixed-size blocks:
//   k_pool, v_pool: [num_blocks][block_size][num_kv_heads][head_dim] of
//   layout.dtype (fp32, fp16 or bf16; rows are rounded to it when written,
//   round-to-nearest-even, and widened to fp32 when read; compute is fp32).
// A sequence owns a block table: its token at position p lives in block
// block_table[p / block_size], slot p % block_size.
struct KvLayout {
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  DType dtype = DType::kF32;
};

// Bytes of one K (or V) block of this layout.
inline uint64_t KvBlockBytes(const KvLayout& layout) {
  return static_cast<uint64_t>(layout.block_size) * static_cast<uint64_t>(layout.num_kv_heads) *
         static_cast<uint64_t>(layout.head_dim) * DTypeSize(layout.dtype);
}

// Writes the k/v rows of num_tokens new tokens into the pools.
// k, v: [num_tokens][num_kv_heads][head_dim]; slots[t] = block * block_size + offset.
void WriteKv(const float* k, const float* v, int64_t num_tokens, const int64_t* slots,
             const KvLayout& layout, void* k_pool, void* v_pool);

// One sequence's share of a batched attention call. Its q rows are
// q[q_offset .. q_offset + q_len); they sit at positions
// context_len - q_len .. context_len - 1 and attend causally to positions
// 0 .. own position (already written with WriteKv).
struct AttentionSeq {
  int64_t q_offset = 0;
  int64_t q_len = 0;
  int64_t context_len = 0;
  const int32_t* block_table = nullptr;
};

// q, out: [num_tokens][num_heads][head_dim]; num_heads must be a multiple of
// layout.num_kv_heads (grouped-query attention: head h reads kv head
// h / (num_heads / num_kv_heads)). scale is usually 1/sqrt(head_dim).
void PagedAttention(const float* q, int64_t num_heads, const AttentionSeq* seqs, int64_t num_seqs,
                    const KvLayout& layout, const void* k_pool, const void* v_pool, float scale,
                    float* out, ThreadPool* pool);

}  // namespace lcd::kernels

#endif  // LCD_KERNELS_OPS_H_
