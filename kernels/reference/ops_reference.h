// Scalar reference twins of every op in lcd/kernels/ops.h: the oracle the
// vectorised and CUDA kernels are tested against, and the fallback on CPUs
// without AVX2. Same contracts (shapes, aliasing, pool semantics) as ops.h;
// written for clarity, not speed: plain loops in fp32 with the weights widened
// element by element.
//
// Tests may include this header (tests/<m> may use kernels/reference); the
// runtime must go through ops.h.
#ifndef LCD_KERNELS_REFERENCE_OPS_REFERENCE_H_
#define LCD_KERNELS_REFERENCE_OPS_REFERENCE_H_

#include <cstdint>

#include "lcd/kernels/ops.h"

namespace lcd::kernels::reference {

// Reads element i of a stored row of type `dtype` as fp32.
float LoadAsFloat(const void* data, DType dtype, int64_t i);

void Linear(const float* x, int64_t m, const MatrixView& w, const float* bias, float* y,
            ThreadPool* pool);
void EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t n, float* out);
void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y);
void ApplyRope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
               const int32_t* positions, const float* inv_freq);
void SiluMul(const float* gate, const float* up, int64_t n, float* y);
void Add(const float* x, int64_t n, float* y);
void Softmax(float* x, int64_t n);
void WriteKv(const float* k, const float* v, int64_t num_tokens, const int64_t* slots,
             const KvLayout& layout, void* k_pool, void* v_pool);
void PagedAttention(const float* q, int64_t num_heads, const AttentionSeq* seqs, int64_t num_seqs,
                    const KvLayout& layout, const void* k_pool, const void* v_pool, float scale,
                    float* out, ThreadPool* pool);

}  // namespace lcd::kernels::reference

#endif  // LCD_KERNELS_REFERENCE_OPS_REFERENCE_H_
