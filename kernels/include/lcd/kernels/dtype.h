// Element types of stored tensors and exact conversions between them.
// Compute is always fp32; fp16/bf16 appear only as storage.
#ifndef LCD_KERNELS_DTYPE_H_
#define LCD_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace lcd::kernels {

enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

inline size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }
std::string_view DTypeName(DType t);
// The inverse of DTypeName ("f32", "f16", "bf16"); false for anything else.
bool DTypeFromName(std::string_view name, DType* t);

// IEEE-754 binary16 <-> binary32. FloatToFp16 rounds to nearest even and
// handles subnormals, infinities and NaN.
float Fp16ToFloat(uint16_t h);
uint16_t FloatToFp16(float f);

// bfloat16 is the upper half of a binary32; FloatToBf16 rounds to nearest
// even (NaN stays NaN).
inline float Bf16ToFloat(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
uint16_t FloatToBf16(float f);

// Converts n elements of type `src_type` at `src` to fp32 at `dst`.
void ConvertToF32(const void* src, DType src_type, size_t n, float* dst);
// Converts n fp32 values to `dst_type` (round to nearest even).
void ConvertFromF32(const float* src, size_t n, DType dst_type, void* dst);

}  // namespace lcd::kernels

#endif  // LCD_KERNELS_DTYPE_H_
