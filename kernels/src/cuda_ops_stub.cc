// cuda_ops.h for builds without CUDA: no devices, nothing supported, every
// op reports Unimplemented. The real versions live in kernels/cuda/.
#ifndef LCD_WITH_CUDA

#include "lcd/kernels/cuda_ops.h"

namespace lcd::kernels {
namespace {

absl::Status NotBuilt() {
  return absl::UnimplementedError("lcdserve was built without CUDA (LCD_CUDA=OFF or no nvcc)");
}

}  // namespace

int CudaDeviceCount() { return 0; }

bool CudaRmsNormIsSupported(int64_t, int64_t) { return false; }

absl::Status CudaRmsNorm(const float*, int64_t, int64_t, const float*, float, float*) {
  return NotBuilt();
}

bool CudaLinearIsSupported(int64_t, const MatrixView&) { return false; }

absl::Status CudaLinear(const float*, int64_t, const MatrixView&, const float*, float*) {
  return NotBuilt();
}

}  // namespace lcd::kernels

#endif  // LCD_WITH_CUDA
