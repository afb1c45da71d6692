// Per-token INT8 activation quantization (W·A8, LCD.md step 2; the manifest's
// "activations" field, docs/ARTIFACT.md), as a quantize-dequantize: for each
// row t of x [m][cols],
//   s_t = max_j |x[t][j]| / 127 (fp32),
//   y[t][j] = nearbyint(x[t][j] / s_t) * s_t   (round half to even),
// and y[t][:] = 0 when s_t == 0. This is exactly what an int8 kernel would
// compute before rescaling; an integer GEMV consuming the int8 codes is a
// later step. The same function serves the runtime (before the quantized
// kernels) and the training core (the student's forward, straight-through
// gradient), so both see identical activations. x and y may alias.
#ifndef LCD_KERNELS_ACT_QUANT_H_
#define LCD_KERNELS_ACT_QUANT_H_

#include <cstdint>

namespace lcd::kernels {

void FakeQuantizeInt8PerToken(const float* x, int64_t m, int64_t cols, float* y);

}  // namespace lcd::kernels

#endif  // LCD_KERNELS_ACT_QUANT_H_
