// Plain launch functions for the kernels in *.cu, callable from host C++
// (cuda_ops.cc) without Abseil crossing into nvcc. Each enqueues its kernel on
// `stream` and returns cudaGetLastError() from the launch; all pointers are
// device pointers. Private to kernels/cuda.
#ifndef LCD_KERNELS_CUDA_LAUNCHERS_H_
#define LCD_KERNELS_CUDA_LAUNCHERS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace lcd::kernels::cuda_internal {

// Weight element type codes; values match lcd::kernels::DType.
enum WeightType : int { kWeightF32 = 0, kWeightF16 = 1, kWeightBF16 = 2 };

// y[r][:] = x[r][:] * rsqrt(mean(x[r]^2) + eps) * weight[:]; one block per row.
cudaError_t LaunchRmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
                          float* y, cudaStream_t stream);

// y[j] = sum_i x[i] * w[j][i] + (bias ? bias[j] : 0) for j < n; w is [n][k]
// of `weight_type`. One warp per output row.
cudaError_t LaunchGemv(const float* x, const void* w, int weight_type, int64_t n, int64_t k,
                       const float* bias, float* y, cudaStream_t stream);

}  // namespace lcd::kernels::cuda_internal

#endif  // LCD_KERNELS_CUDA_LAUNCHERS_H_
