// CUDA GEMV (Linear with m = 1) for fp32/fp16/bf16 weights; the CPU reference
// twin is reference::Linear. One warp per output row: lanes stride over k so
// a warp's loads of one row are coalesced, then reduce with shuffles.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/launchers.h"

namespace lcd::kernels::cuda_internal {
namespace {

constexpr int kWarpsPerBlock = 8;

template <int kType>
__device__ __forceinline__ float LoadWeight(const void* row, int64_t i) {
  if constexpr (kType == kWeightF32) {
    return static_cast<const float*>(row)[i];
  } else if constexpr (kType == kWeightF16) {
    return __half2float(static_cast<const __half*>(row)[i]);
  } else {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(row)[i]);
  }
}

template <int kType>
__global__ void GemvKernel(const float* __restrict__ x, const void* __restrict__ w, int64_t n,
                           int64_t k, const float* __restrict__ bias, float* __restrict__ y) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= n) return;
  const int lane = threadIdx.x & 31;
  const size_t elem = kType == kWeightF32 ? 4 : 2;
  const void* wr = static_cast<const char*>(w) + row * k * elem;
  float acc = 0.0f;
  for (int64_t i = lane; i < k; i += 32) acc += x[i] * LoadWeight<kType>(wr, i);
  for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  if (lane == 0) y[row] = acc + (bias != nullptr ? bias[row] : 0.0f);
}

}  // namespace

cudaError_t LaunchGemv(const float* x, const void* w, int weight_type, int64_t n, int64_t k,
                       const float* bias, float* y, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((n + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const unsigned threads = kWarpsPerBlock * 32;
  switch (weight_type) {
    case kWeightF32:
      GemvKernel<kWeightF32><<<blocks, threads, 0, stream>>>(x, w, n, k, bias, y);
      break;
    case kWeightF16:
      GemvKernel<kWeightF16><<<blocks, threads, 0, stream>>>(x, w, n, k, bias, y);
      break;
    case kWeightBF16:
      GemvKernel<kWeightBF16><<<blocks, threads, 0, stream>>>(x, w, n, k, bias, y);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace lcd::kernels::cuda_internal
