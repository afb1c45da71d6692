// CUDA RmsNorm; the CPU reference twin is reference::RmsNorm.
#include <cuda_runtime.h>

#include "cuda/launchers.h"

namespace lcd::kernels::cuda_internal {
namespace {

constexpr int kThreads = 256;

__device__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__global__ void RmsNormKernel(const float* __restrict__ x, int64_t dim,
                              const float* __restrict__ weight, float eps, float* y) {
  // x and y may alias (in-place), so only weight is __restrict__.
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  __shared__ float partial[kThreads / 32];
  ss = WarpSum(ss);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.0f;
    v = WarpSum(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float inv = rsqrtf(partial[0] / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * inv * weight[i];
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
                          float* y, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, dim, weight, eps, y);
  return cudaGetLastError();
}

}  // namespace lcd::kernels::cuda_internal
