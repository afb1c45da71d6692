// Private glue between the generic half of quant_linear (formats, Pack
// dispatch, QuantActivations) and the implementations of each kernel design.
// Packed-matrix classes live in generic translation units and own their
// buffers; the ISA files (cpu/quant_*_avx2.cc) only see the plain views
// declared in cpu/quant_linear_cpu.h.
#ifndef LCD_KERNELS_SRC_QUANT_LINEAR_INTERNAL_H_
#define LCD_KERNELS_SRC_QUANT_LINEAR_INTERNAL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "lcd/kernels/quant_linear.h"

namespace lcd::kernels {

// Activation tables of kActivationLut (layout documented in quant_linear.h,
// "LUT quantization"): for input row t and 4-column block j, 16 int8 entries
// at lut[(t * blocks32 * 8 + j) * 16]; per 32-column block B the scale and
// the exact fp32 sum of x at [t * blocks32 + B].
struct QuantActivations::Tables {
  int64_t m = 0;
  int64_t cols = 0;
  int64_t blocks32 = 0;
  std::vector<int8_t> lut;
  std::vector<float> scale;
  std::vector<float> sum;
};

// Builds `t` for x [m][cols] (scalar; runs once per activation matrix).
void BuildLutTables(const float* x, int64_t m, int64_t cols, QuantActivations::Tables* t,
                    ThreadPool* pool);

// Canonical bits [bit, bit + n) of a code row, n <= 8 (LSB-first stream).
inline int ReadCodeBits(const uint8_t* row, int64_t bit, int n) {
  int v = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t k = bit + i;
    v |= ((row[k >> 3] >> (k & 7)) & 1) << i;
  }
  return v;
}

// Design factories (nullptr when the design cannot run this layout).
namespace reference {
std::unique_ptr<PackedQuantMatrix> PackQuantReference(const QuantMatrixView& w);
}  // namespace reference
std::unique_ptr<PackedQuantMatrix> PackQuantCentroidAvx2(const QuantMatrixView& w);
std::unique_ptr<PackedQuantMatrix> PackQuantLutAvx2(const QuantMatrixView& w);
bool QuantLutSupports(const QuantLayout& layout);
// kLattice (src/quant_lattice.cc): every part a lattice matrix with the same
// cols; kAuto / kLatticeDecode pick AVX2 decoding when ActiveIsa() allows and
// d % 8 == 0, kReference the scalar twin; Unimplemented otherwise.
absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> PackLattice(const std::vector<QuantMatrixView>& parts,
                                                               QuantKernel kernel);
// Row r of a lattice matrix decoded with DecodeLatticeSubvector into out[cols].
void DecodeLatticeRow(const QuantMatrixView& w, int64_t r, float* out);
bool QuantCentroidSupports(const QuantLayout& layout);

}  // namespace lcd::kernels

#endif  // LCD_KERNELS_SRC_QUANT_LINEAR_INTERNAL_H_
