// Host API of the CUDA kernels. This header holds no CUDA types, so any
// module can include it whether or not the build has CUDA; without CUDA
// (LCD_WITH_CUDA undefined) every call reports that it is unavailable.
//
// Every function takes HOST pointers: inputs are copied to the device, the
// kernel runs on a private stream, and results are copied back before the
// call returns. These entry points exist to exercise the CUDA twins of the CPU
// ops (the CPU kernels in ops.h are their reference) and as the seed of the
// CUDA backend; they are correct, not fast (each call allocates and copies).
//
// Errors: InvalidArgument for shapes an op does not support (see the
// *IsSupported checks, which callers use to fall back to the CPU instead of
// failing), Unimplemented when built without CUDA, FailedPrecondition when no
// GPU is usable, Internal (with file:line) when a CUDA call fails.
//
// Thread safety: all functions may be called concurrently; each call uses its
// own stream and buffers on the current device (device 0 unless the caller
// changed it).
#ifndef LCD_KERNELS_CUDA_OPS_H_
#define LCD_KERNELS_CUDA_OPS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "lcd/kernels/ops.h"

namespace lcd::kernels {

// Number of CUDA devices usable by this process: 0 when built without CUDA,
// when no driver is installed, or when no GPU is present. Never crashes and
// never logs; the first result is cached.
int CudaDeviceCount();

// True when CudaRmsNorm can run this problem here: built with CUDA, a device
// is present, rows >= 1 and dim >= 1.
bool CudaRmsNormIsSupported(int64_t rows, int64_t dim);

// y[r][:] = x[r][:] / sqrt(mean(x[r]^2) + eps) * weight[:], as ops.h RmsNorm.
// x, y: [rows][dim]; weight: [dim]; host pointers. y may alias x.
absl::Status CudaRmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
                         float* y);

// True when CudaLinear can run this problem here: built with CUDA, a device
// is present, m == 1 (GEMV only), w.rows >= 1, w.cols >= 1, w.data != null.
bool CudaLinearIsSupported(int64_t m, const MatrixView& w);

// y[m][n] = x[m][k] . w[n][k]^T + bias, as ops.h Linear, for m == 1 and
// weights stored as fp32, fp16 or bf16 (widened to fp32 on the device; fp32
// accumulation). x: [m][k], bias: [n] or nullptr, y: [m][n]; host pointers.
absl::Status CudaLinear(const float* x, int64_t m, const MatrixView& w, const float* bias,
                        float* y);

}  // namespace lcd::kernels

#endif  // LCD_KERNELS_CUDA_OPS_H_
