// Host side of lcd/kernels/cuda_ops.h: validation, device buffers, copies
// and checked launches. Compiled only when LCD_WITH_CUDA.
#include "lcd/kernels/cuda_ops.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/launchers.h"
#include "lcd/base/status_macros.h"

namespace lcd::kernels {
namespace {

using cuda_internal::CudaStream;
using cuda_internal::DeviceBuffer;

absl::Status RequireDevice() {
  if (CudaDeviceCount() == 0) {
    return absl::FailedPreconditionError("no CUDA device is available (no GPU or no driver)");
  }
  return absl::OkStatus();
}

}  // namespace

int CudaDeviceCount() {
  static const int count = [] {
    int n = 0;
    // Without a driver this returns cudaErrorNoDevice / InsufficientDriver;
    // clear the sticky per-thread error so later calls start clean.
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

bool CudaRmsNormIsSupported(int64_t rows, int64_t dim) {
  return rows >= 1 && dim >= 1 && rows <= INT32_MAX && CudaDeviceCount() > 0;
}

absl::Status CudaRmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
                         float* y) {
  if (rows < 1 || dim < 1 || rows > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaRmsNorm: unsupported shape rows=", rows, " dim=", dim));
  }
  if (x == nullptr || weight == nullptr || y == nullptr) {
    return absl::InvalidArgumentError("CudaRmsNorm: null pointer");
  }
  LCD_RETURN_IF_ERROR(RequireDevice());
  const size_t bytes = static_cast<size_t>(rows * dim) * sizeof(float);
  LCD_ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create());
  LCD_ASSIGN_OR_RETURN(DeviceBuffer d_x, DeviceBuffer::FromHost(x, bytes, stream));
  LCD_ASSIGN_OR_RETURN(DeviceBuffer d_w,
                       DeviceBuffer::FromHost(weight, dim * sizeof(float), stream));
  LCD_ASSIGN_OR_RETURN(DeviceBuffer d_y, DeviceBuffer::Allocate(bytes));
  LCD_CUDA_RETURN_IF_ERROR(cuda_internal::LaunchRmsNorm(d_x.as<float>(), rows, dim, d_w.as<float>(),
                                                        eps, d_y.as<float>(), stream.get()),
                           "RmsNorm kernel launch");
  LCD_RETURN_IF_ERROR(d_y.CopyToHost(y, bytes, stream));
  return stream.Synchronize();
}

bool CudaLinearIsSupported(int64_t m, const MatrixView& w) {
  return m == 1 && w.rows >= 1 && w.cols >= 1 && w.data != nullptr &&
         (w.rows + 7) / 8 <= INT32_MAX && CudaDeviceCount() > 0;
}

absl::Status CudaLinear(const float* x, int64_t m, const MatrixView& w, const float* bias,
                        float* y) {
  if (m != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaLinear: only m == 1 (GEMV) is supported, got m=", m));
  }
  if (w.rows < 1 || w.cols < 1 || w.data == nullptr || x == nullptr || y == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaLinear: bad problem rows=", w.rows, " cols=", w.cols));
  }
  LCD_RETURN_IF_ERROR(RequireDevice());
  const int64_t n = w.rows, k = w.cols;
  LCD_ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create());
  LCD_ASSIGN_OR_RETURN(DeviceBuffer d_x, DeviceBuffer::FromHost(x, k * sizeof(float), stream));
  LCD_ASSIGN_OR_RETURN(
      DeviceBuffer d_w,
      DeviceBuffer::FromHost(w.data, static_cast<size_t>(n * k) * DTypeSize(w.dtype), stream));
  LCD_ASSIGN_OR_RETURN(
      DeviceBuffer d_b,
      DeviceBuffer::FromHost(bias, bias != nullptr ? n * sizeof(float) : 0, stream));
  LCD_ASSIGN_OR_RETURN(DeviceBuffer d_y, DeviceBuffer::Allocate(n * sizeof(float)));
  LCD_CUDA_RETURN_IF_ERROR(
      cuda_internal::LaunchGemv(d_x.as<float>(), d_w.data(), static_cast<int>(w.dtype), n, k,
                                d_b.as<float>(), d_y.as<float>(), stream.get()),
      "GEMV kernel launch");
  LCD_RETURN_IF_ERROR(d_y.CopyToHost(y, n * sizeof(float), stream));
  return stream.Synchronize();
}

}  // namespace lcd::kernels
