// The training core's operations, llm.c style: one explicit forward and one
// explicit backward function per operation of the Llama-family decoder
// (Llama with GQA and rope scaling, tied/untied lm_head, Qwen2 q/k/v biases),
// fp32, no autograd engine. Verified against PyTorch autograd in float64 by
// tests/python/test_train_parity.py and by finite differences in
// tests/quantizer/train_ops_test.cc.
//
// Conventions:
//   * activations are row-major [T][C] (T tokens of B sequences of length L
//     laid out sequence after sequence, T = B*L);
//   * every backward ACCUMULATES (+=) into its gradient outputs (dx, dW, db,
//     ...), so a tensor read by several operations (the residual stream, a
//     tied embedding) collects its gradient from each; callers zero them;
//   * `pool` may be nullptr (run on the calling thread). Every parallel loop
//     splits work so that each output element is written by exactly one
//     thread in a fixed order: results do not depend on the thread count.
//     Linears go through OpenBLAS sgemm (its own threads; deterministic for
//     a fixed OpenBLAS thread count, see SetBlasThreads).
#ifndef LCD_QUANTIZER_TRAIN_OPS_H_
#define LCD_QUANTIZER_TRAIN_OPS_H_

#include <cstdint>

#include "lcd/kernels/thread_pool.h"

namespace lcd::quantizer::train {

// Number of threads OpenBLAS uses for the linears (n <= 0: all cores).
void SetBlasThreads(int n);

// out[t] = table[tokens[t]]; table is [V][C]. Tokens must be in [0, V).
void EmbeddingForward(const float* table, const int32_t* tokens, int64_t T, int64_t C, float* out);
// dtable[tokens[t]] += dout[t].
void EmbeddingBackward(const float* dout, const int32_t* tokens, int64_t T, int64_t C, float* dtable);

// out[t] = w * x[t] * rstd[t], rstd[t] = 1/sqrt(mean(x[t]^2) + eps) (saved).
// `out` must not alias `x` (the backward reads x).
void RmsNormForward(const float* x, const float* w, int64_t T, int64_t C, float eps, float* out, float* rstd,
                    kernels::ThreadPool* pool);
// dx += d/dx, dw += d/dw (dw may be nullptr for a frozen weight).
void RmsNormBackward(const float* dout, const float* x, const float* w, const float* rstd, int64_t T, int64_t C,
                     float* dx, float* dw, kernels::ThreadPool* pool);

// Rotary embedding tables for positions [0, L): cos/sin are [L][D/2] with
// angle pos * inv_freq[i]; inv_freq is runtime::ModelConfig::RopeInvFreq()
// (the runtime's frequencies, rope scaling included). The angle is formed in
// fp32 as the runtime and transformers do, its cos/sin in double.
void RopeTables(const float* inv_freq, int64_t L, int64_t D, float* cos, float* sin);
// In place on x [B*L][H][D] (token t has position t % L), the runtime's
// (transformers') rotate-half layout: pairs (i, i + D/2).
void RopeForward(float* x, int64_t B, int64_t L, int64_t H, int64_t D, const float* cos, const float* sin);
// In place on dx (the transpose of the rotation: the inverse rotation).
void RopeBackward(float* dx, int64_t B, int64_t L, int64_t H, int64_t D, const float* cos, const float* sin);

// y[T][N] = x[T][K] W[N][K]^T (+ b[N]), through cblas_sgemm.
void LinearForward(const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t N, float* y);
// dx += dy W (dx may be nullptr), dw += dy^T x (nullptr: frozen), db += sum_t dy (nullptr: none).
void LinearBackward(const float* dy, const float* x, const float* w, int64_t T, int64_t K, int64_t N, float* dx,
                    float* dw, float* db, kernels::ThreadPool* pool);

// Causal grouped-query attention of B sequences of length L.
// q [B*L][H][D], k and v [B*L][KVH][D] (H a multiple of KVH; query head h
// reads kv head h / (H/KVH)), scale 1/sqrt(D). out [B*L][H][D]. The softmax
// probabilities are saved in att [B][H][L][L] (upper triangle 0). One pool
// task per (sequence, head), OpenBLAS single-threaded meanwhile: Q K^T and
// P V are sgemms over strided head views in causal row blocks.
void AttentionForward(const float* q, const float* k, const float* v, int64_t B, int64_t L, int64_t H, int64_t KVH,
                      int64_t D, float* att, float* out, kernels::ThreadPool* pool);
// dq, dk, dv += gradients: one pool task per (sequence, head) over the
// causal blocks; the query heads sharing a kv head add into dk/dv in head
// order (results do not depend on the thread count).
void AttentionBackward(const float* dout, const float* q, const float* k, const float* v, const float* att, int64_t B,
                       int64_t L, int64_t H, int64_t KVH, int64_t D, float* dq, float* dk, float* dv,
                       kernels::ThreadPool* pool);

// out = silu(gate) * up, elementwise over n.
void SwiGluForward(const float* gate, const float* up, int64_t n, float* out, kernels::ThreadPool* pool);
void SwiGluBackward(const float* dout, const float* gate, const float* up, int64_t n, float* dgate, float* dup,
                    kernels::ThreadPool* pool);

// out = a + b (out may alias a or b); backward: da += dout, db += dout.
void ResidualForward(const float* a, const float* b, int64_t n, float* out);
void ResidualBackward(const float* dout, int64_t n, float* da, float* db);

// Losses over N rows of V logits, averaged over the rows; each returns the
// loss and, when dlogits is not nullptr, ACCUMULATES its gradient with
// respect to `logits` (the student's) into it. Computed in double per row.
//
// Cross-entropy against targets[N] in [0, V).
double CrossEntropyLoss(const float* logits, const int32_t* targets, int64_t N, int64_t V, float* dlogits,
                        kernels::ThreadPool* pool);
// Forward KL, KL(P_T || P_S) = sum p_T (log p_T - log p_S).
double ForwardKlLoss(const float* logits, const float* teacher_logits, int64_t N, int64_t V, float* dlogits,
                     kernels::ThreadPool* pool);
// Reverse KL, KL(P_S || P_T).
double ReverseKlLoss(const float* logits, const float* teacher_logits, int64_t N, int64_t V, float* dlogits,
                     kernels::ThreadPool* pool);
// CAKLD (BitDistiller): gamma * KL(P_S || P_T) + (1 - gamma) * KL(P_T || P_S).
double CakldLoss(const float* logits, const float* teacher_logits, int64_t N, int64_t V, double gamma, float* dlogits,
                 kernels::ThreadPool* pool);
// BitDistiller's gamma: the mean over rows of the teacher's top-1 probability.
double MeanTopProbability(const float* teacher_logits, int64_t N, int64_t V);

}  // namespace lcd::quantizer::train

#endif  // LCD_QUANTIZER_TRAIN_OPS_H_
