// Private helpers shared by the matrix quantizers: argument checks, the
// output allocation, and writing one code into the canonical bit stream.
#ifndef LCD_QUANTIZER_SRC_QUANT_COMMON_H_
#define LCD_QUANTIZER_SRC_QUANT_COMMON_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lcd/kernels/quant_linear.h"
#include "lcd/quantizer/artifact_writer.h"
#include "lcd/runtime/checkpoint.h"

namespace lcd::quantizer::internal {

// A checkpoint matrix widened to fp32 (the input of every quantizer).
// InvalidArgument naming the tensor for a dtype other than F32/F16/BF16 or
// a shape that is not 2-D.
absl::StatusOr<std::vector<float>> MatrixToF32(const runtime::TensorView& t);

// InvalidArgument naming the fault (method is used in the message).
absl::Status ValidateMatrixArgs(const char* method, const float* w, int64_t rows, int64_t cols,
                                int bits, int min_bits, int max_bits, int64_t group_size);

// A QuantizedMatrix of the given layout with zeroed codes (so padding bits
// are zero and PutCode may OR into them) and zeroed params.
QuantizedMatrix AllocateQuantized(kernels::QuantFormat format, int bits, int64_t rows, int64_t cols,
                                  int64_t group_size);

// Writes `code` (< 2^bits, bits <= 8) as column `col` of a zeroed row stream:
// bits [col*bits, col*bits + bits), stream bit k = bit (k % 8) of byte k / 8.
inline void PutCode(uint8_t* row, int64_t col, int bits, uint32_t code) {
  const int64_t bit = col * bits;
  const int64_t byte = bit / 8;
  const int shift = static_cast<int>(bit % 8);
  const uint32_t v = code << shift;  // At most 15 bits wide for bits <= 8.
  row[byte] |= static_cast<uint8_t>(v & 0xFF);
  if (shift + bits > 8) row[byte + 1] |= static_cast<uint8_t>(v >> 8);
}

inline uint32_t GetCode(const uint8_t* row, int64_t col, int bits) {
  const int64_t bit = col * bits;
  const int64_t byte = bit / 8;
  const int shift = static_cast<int>(bit % 8);
  uint32_t v = row[byte];
  if (shift + bits > 8) v |= static_cast<uint32_t>(row[byte + 1]) << 8;
  return (v >> shift) & ((1u << bits) - 1u);
}

}  // namespace lcd::quantizer::internal

#endif  // LCD_QUANTIZER_SRC_QUANT_COMMON_H_
