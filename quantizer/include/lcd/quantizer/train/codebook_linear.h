// The codebook-quantized linear of the training core (the quantizer in the
// loop): Ŵ = Q(W) in the forward, straight-through gradient to the latent
// weights W, and the centroids' gradient dL/dc_k = sum of dL/dŴ over the
// weights assigned to k.
//
// Layout, as the artifact's codebook format (kernels/quant_linear.h) but
// unpacked and fp32 for training: W [rows][cols] is cut per row into groups
// of `group_size` consecutive columns (the last group short when group_size
// does not divide cols); each (row, group) has `k` centroids
// centroids[(row * groups + group) * k + q], and each weight one code
// codes[row * cols + col] in [0, k): Ŵ[r][c] = centroid of its code.
// Conventions as in ops.h (backward accumulates; pool may be nullptr).
#ifndef LCD_QUANTIZER_TRAIN_CODEBOOK_LINEAR_H_
#define LCD_QUANTIZER_TRAIN_CODEBOOK_LINEAR_H_

#include <cstdint>
#include <vector>

#include "lcd/kernels/thread_pool.h"

namespace lcd::quantizer::train {

struct CodebookShape {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;
  int64_t k = 0;  // Centroids per (row, group), at most 256.
  int64_t groups() const { return (cols + group_size - 1) / group_size; }
  int64_t num_centroids() const { return rows * groups() * k; }
};

// codes = index of the centroid nearest to each latent weight (the lowest
// index on a tie).
void CodebookAssign(const float* w, const float* centroids, const CodebookShape& s, uint8_t* codes,
                    kernels::ThreadPool* pool);
// LCD.md step 6's centroid merge/split, per (row, group) of the latent
// weights w: when the group's two closest centroids are nearer than
// tau x (max w - min w of the group), they merge into their mean weighted by
// how many weights code each, and the freed centroid splits the most loaded
// one (the most codes after the merge; the lowest index on a tie): the
// weights of that centroid below it and those at or above it each get the
// mean of their half. The group's codes are then the nearest centroids
// (CodebookAssign's rule). A group whose split would leave a half empty is
// left as it is, as is a group with no pair that near. Returns the number
// of groups changed; their indices (row * groups + group) are appended to
// *changed when not nullptr.
int64_t CodebookMergeSplit(const float* w, float* centroids, const CodebookShape& s, float tau, uint8_t* codes,
                           std::vector<int64_t>* changed);
// w_hat [rows][cols] = the centroids the codes select.
void CodebookDecode(const float* centroids, const uint8_t* codes, const CodebookShape& s, float* w_hat,
                    kernels::ThreadPool* pool);

// y[T][rows] = x[T][cols] Ŵ^T (+ b); decodes Ŵ into w_hat (rows * cols
// floats, kept for the backward), then one cblas_sgemm.
void CodebookLinearForward(const float* x, const float* centroids, const uint8_t* codes, const float* b,
                           const CodebookShape& s, int64_t T, float* w_hat, float* y, kernels::ThreadPool* pool);
// From dŴ [rows][cols]: dw_latent += dŴ (straight-through; nullptr: frozen);
// dcentroids[(r, g), q] += sum of dŴ[r][c] over the columns c of group g
// whose code is q (nullptr: frozen).
void CodebookWeightBackward(const float* dw_hat, const uint8_t* codes, const CodebookShape& s, float* dw_latent,
                            float* dcentroids, kernels::ThreadPool* pool);
// With dŴ = dy^T x (one sgemm into dw_hat scratch, rows * cols floats):
//   dx += dy Ŵ (nullptr: skip); CodebookWeightBackward; db += sum_t dy
//   (nullptr: none).
void CodebookLinearBackward(const float* dy, const float* x, const float* w_hat, const uint8_t* codes,
                            const CodebookShape& s, int64_t T, float* dw_hat, float* dx, float* dw_latent,
                            float* dcentroids, float* db, kernels::ThreadPool* pool);

}  // namespace lcd::quantizer::train

#endif  // LCD_QUANTIZER_TRAIN_CODEBOOK_LINEAR_H_
