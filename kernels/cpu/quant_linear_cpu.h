// Plain views of the packed layouts of the two AVX2 quantized-linear designs
// (see quant_linear.h, QuantKernel) and their entry points. The packers and
// the owning PackedQuantMatrix classes live in src/quant_linear_cpu.cc (a
// generic translation unit); the *_avx2.cc files instantiate no std::
// containers (see ops_cpu.h).
#ifndef LCD_KERNELS_CPU_QUANT_LINEAR_CPU_H_
#define LCD_KERNELS_CPU_QUANT_LINEAR_CPU_H_

#include <cstdint>

#include "lcd/kernels/quant_linear.h"

namespace lcd::kernels {

// kActivationLut. Rows are cut into tiles of tile_rows (16 or 32), columns
// into 32-column blocks (cols padded with zero codes to blocks32 * 32), each
// block into four 8-column chunks. For every (tile, block, chunk) `vecs`
// 32-byte vectors follow each other; byte 2k + h of a vector holds one bit
// plane of one row of the tile for the chunk: low nibble = plane bits of
// the chunk's columns 0..3 (bit t = column t), high nibble = columns 4..7.
// Which (row, plane) byte 2k + h holds depends on (bits, tile_rows):
//   b=1, 32 rows, 1 vec:  (k, 0), (k+16, 0)
//   b=2, 16 rows, 1 vec:  (k, 0), (k, 1)
//   b=3, 32 rows, 3 vecs: (k, 0), (k, 1) | (k+16, 0), (k+16, 1) | (k, 2), (k+16, 2)
//   b=4, 16 rows, 2 vecs: (k, 0), (k, 1) | (k, 2), (k, 3)
//   codebook b=2, 32 rows, 2 vecs: (k, 0), (k+16, 0) | (k, 1), (k+16, 1)
// so one vpshufb serves two planes (or two rows) and vpmaddubsw both widens
// to int16 and weights the planes. params: fp16 [tiles][groups][P][tile_rows]
// (zero for the padding rows of the last tile).
struct LutPackedView {
  QuantFormat format = QuantFormat::kAffine;
  int bits = 0;
  int tile_rows = 0;
  int vecs = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;  // multiple of 32
  int64_t groups = 0;
  int64_t tiles = 0;
  int64_t blocks32 = 0;
  const uint8_t* codes = nullptr;
  const uint16_t* params = nullptr;
};

// QuantActivations::Tables as raw pointers (layout in quant_linear_internal.h).
struct LutTablesView {
  int64_t blocks32 = 0;
  const int8_t* lut = nullptr;
  const float* scale = nullptr;
  const float* sum = nullptr;
};

// kCentroidTable: the canonical layout (codes [rows][CodeRowBytes()] followed
// by at least 4 zero bytes, fp16 params [rows][groups][P]); group_size % 8 == 0
// so an 8-column chunk (b bytes) never straddles a group.
struct CentroidPackedView {
  QuantLayout layout;
  const uint8_t* codes = nullptr;
  const uint16_t* params = nullptr;
};

// kLatticeDecode: one lattice part as the packer keeps it (src/quant_lattice.cc).
// Per column group k: code width bits[k], the stream offset of its first
// code bit_offset[k], the generator row-major gen[k*d*d..] and transposed
// gen_t[k*d*d..] (column j of G contiguous), mu[k] and log1p(mu[k]).
struct LatticePackedView {
  int d = 0;
  int64_t cols = 0;
  int64_t group_size = 0;
  int64_t groups = 0;
  const uint8_t* bits = nullptr;
  const int64_t* bit_offset = nullptr;
  const float* gen = nullptr;
  const float* gen_t = nullptr;
  const float* mu = nullptr;
  const float* ln1p_mu = nullptr;
};

namespace avx2 {

// One row of a lattice part into out[cols]: code_row is the row's canonical
// code stream followed by at least 8 readable bytes, scales its [groups]
// scales. Requires d % 8 == 0.
void DecodeLatticeRow(const LatticePackedView& v, const uint8_t* code_row, const float* scales,
                      float* out);
// out[t * out_stride] = sum_c x[t * cols + c] * w[c] for t < m.
void DotRows(const float* w, const float* x, int64_t m, int64_t cols, float* out, int64_t out_stride);

// Tables of x [m][cols] into lut [m][blocks32 * 8][16], scale and sum
// [m][blocks32] (quant_linear.h, "LUT quantization").
void BuildLutTables(const float* x, int64_t m, int64_t cols, int64_t blocks32, int8_t* lut,
                    float* scale, float* sum);
// y [m][rows] = x . W^T + bias through the activation tables.
void LutLinear(const LutPackedView& w, const LutTablesView& t, int64_t m, const float* bias,
               float* y, ThreadPool* pool);
// y [m][rows] = x [m][cols] . W^T + bias, centroids in registers.
void CentroidLinear(const CentroidPackedView& w, const float* x, int64_t m, const float* bias,
                    float* y, ThreadPool* pool);

}  // namespace avx2
}  // namespace lcd::kernels

#endif  // LCD_KERNELS_CPU_QUANT_LINEAR_CPU_H_
