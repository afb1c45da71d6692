// R2Q in the training loop (LCD.md "R2Q": QAT with a straight-through sign):
// the LoopQuantizer of the r2q method (quantizer/src/r2q_method.cc).
//
// Layout: W [rows][cols] cut per row into groups of group_size columns (the
// last group short when group_size does not divide cols), as the artifact's
// kBinaryCoded format. Parameters "alphas" [rows][groups][2] (fp32; alpha1,
// alpha2 of each (row, group)), trainable. Codes: one per weight, q in
// [0, 4), bit 0 = B1, bit 1 = B2 (1: +1, 0: -1), the convention of
// lcd/quantizer/r2q.h and of the stored format.
//
//   Decode:   w_hat = alpha1 * B1 + alpha2 * B2          (R2qLevel, fp32)
//   Backward: dW += dw_hat (straight-through through both signs);
//             dalpha1 += sum over the group of dw_hat * B1,
//             dalpha2 += sum over the group of dw_hat * B2 (columns in order)
//   Assign:   the nearest of the four levels +-alpha1 +-alpha2 to the latent
//             weight (R2qNearestCode: ties to the larger level).
// Assign: our decision where the spec leaves it open. Re-deriving the
// residual signs from the latent W (B1 = sign W, B2 = sign(W - alpha1 B1))
// gives the same level whenever alpha1 >= alpha2 >= 0, which the closed form
// starts from; once training moves the alphas out of that order (alpha2 >
// alpha1, or a negative alpha), the residual rule would map weights to a
// level that is not the nearest, while the nearest level is always the one
// of least error, and it is the re-assignment the refit (r2q.h) uses.
// Deterministic for any thread count (each row by one thread).
#ifndef LCD_QUANTIZER_TRAIN_R2Q_LOOP_QUANTIZER_H_
#define LCD_QUANTIZER_TRAIN_R2Q_LOOP_QUANTIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/train/loop_quantizer.h"

namespace lcd::quantizer::train {

class R2qLoopQuantizer final : public LoopQuantizer {
 public:
  // group_size >= 1 (the method validates it).
  R2qLoopQuantizer(int64_t rows, int64_t cols, int64_t group_size)
      : LoopQuantizer(rows, cols), group_size_(group_size) {}
  int64_t group_size() const { return group_size_; }
  int64_t groups() const { return (cols() + group_size_ - 1) / group_size_; }

  std::string param_name() const override { return "alphas"; }
  std::vector<int64_t> param_shape() const override { return {rows(), groups(), 2}; }
  void Decode(const float* w, const float* params, float* w_hat, kernels::ThreadPool* pool) const override;
  void Backward(const float* w, const float* params, const float* dw_hat, float* dw, float* dparams,
                kernels::ThreadPool* pool) const override;
  void Assign(const float* w, const float* params, uint8_t* codes, kernels::ThreadPool* pool) const override;
  int max_code() const override { return 3; }  // Bit 0 = B1, bit 1 = B2.

 private:
  int64_t group_size_;
};

}  // namespace lcd::quantizer::train

#endif  // LCD_QUANTIZER_TRAIN_R2Q_LOOP_QUANTIZER_H_
