// BitDistiller's quantizer in the training loop (LCD.md "BitDistiller",
// "Self-distillation QAT"): Ŵ = Q(W) recomputed from the latent weight W at
// every forward, with each group's range taken from the CURRENT W's min and
// max, as the reference's SteInt2AsymQuantizer / SteN2F3Quantizer do
// (x.amax / x.amin in every forward). The clipping search's range enters
// only once, by clamping the latent W at init (the reference's apply_clip);
// training may then move the range. Q is the group quantizer of
// lcd/quantizer/bitdistiller.h (INT-b asymmetric, or NF3 at 3 bits) with its
// fp16 parameters, so Decode equals QuantizeBitDistiller's stored decode bit
// for bit, at init and at every step.
//
// No trainable parameters (param_shape() is empty; the reference trains only
// the weights). Backward is the reference's autograd graph:
//  * through the rounding, straight-through: dW_i += dŴ_i, masked to 0 for
//    kInt where round(w_i / scale) + zero falls outside [0, 2^b - 1] (the
//    clamp's gradient; NF3 has no clamp);
//  * with range_grad (default, as the reference, whose scale and NF3 scales
//    are differentiable functions of amax/amin): the gradient of the range,
//    kInt: dscale = sum_i dŴ_i ((q_i - zero) - in_i w_i / scale),
//          dmax = dscale / (2^b - 1), dmin = -dmax (0 when max - min < 1e-5,
//          the reference's clamp), zero's rounding has no gradient;
//    kNf3: dsp = sum_{w_i >= 0} dŴ_i (L_i - w_i / sp) with sp = |max|,
//          dsn = sum_{w_i < 0} dŴ_i (L_i - w_i / sn) with sn = |min|, L_i the
//          normalised level; dmax = sign(max) dsp, dmin = sign(min) dsn;
//    each added to the group's maximal (minimal) elements, split evenly among
//    ties (torch's amax/amin). The fp16 rounding of the parameters is passed
//    straight through. Without range_grad only the first term applies.
// codes(): Assign writes the current codes (the driver's re-assignment);
// Decode does not read them (they follow W by construction).
#ifndef LCD_QUANTIZER_TRAIN_BITDISTILLER_LOOP_H_
#define LCD_QUANTIZER_TRAIN_BITDISTILLER_LOOP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "lcd/quantizer/bitdistiller.h"
#include "lcd/quantizer/train/loop_quantizer.h"

namespace lcd::quantizer::train {

class BitDistillerLoopQuantizer final : public LoopQuantizer {
 public:
  // bits: 3 = NF3, else INT-b (2..8); group_size >= 1.
  BitDistillerLoopQuantizer(int64_t rows, int64_t cols, int64_t group_size, int bits, bool range_grad = true)
      : LoopQuantizer(rows, cols),
        group_size_(group_size),
        bits_(bits),
        format_(BitDistillerFormatFor(bits)),
        range_grad_(range_grad) {}

  int64_t group_size() const { return group_size_; }
  int bits() const { return bits_; }

  std::string param_name() const override { return "bitdistiller"; }
  std::vector<int64_t> param_shape() const override { return {}; }
  void Decode(const float* w, const float* params, float* w_hat, kernels::ThreadPool* pool) const override;
  void Backward(const float* w, const float* params, const float* dw_hat, float* dw, float* dparams,
                kernels::ThreadPool* pool) const override;
  void Assign(const float* w, const float* params, uint8_t* codes, kernels::ThreadPool* pool) const override;

 private:
  int64_t group_size_;
  int bits_;
  BitDistillerFormat format_;
  bool range_grad_;
};

}  // namespace lcd::quantizer::train

#endif  // LCD_QUANTIZER_TRAIN_BITDISTILLER_LOOP_H_
