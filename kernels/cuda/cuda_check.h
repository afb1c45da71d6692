// Checked CUDA calls. Every CUDA runtime call in kernels/cuda goes through
// LCD_CUDA_RETURN_IF_ERROR, which turns a failure into absl::InternalError
// naming the operation, the CUDA error and the file:line of the call.
// Private to kernels/cuda (host C++ files only: it uses Abseil).
#ifndef LCD_KERNELS_CUDA_CUDA_CHECK_H_
#define LCD_KERNELS_CUDA_CUDA_CHECK_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace lcd::kernels::cuda_internal {

inline absl::Status CudaErrorToStatus(cudaError_t err, const char* what, const char* file,
                                      int line) {
  return absl::InternalError(absl::StrCat(what, " failed: ", cudaGetErrorName(err), " (",
                                          cudaGetErrorString(err), ") at ", file, ":", line));
}

}  // namespace lcd::kernels::cuda_internal

// Evaluates `expr` (a cudaError_t) once; on failure returns InternalError
// from the enclosing function, which must return absl::Status or StatusOr.
#define LCD_CUDA_RETURN_IF_ERROR(expr, what)                                                   \
  do {                                                                                         \
    const cudaError_t lcd_cuda_err_ = (expr);                                                  \
    if (lcd_cuda_err_ != cudaSuccess) {                                                        \
      return ::lcd::kernels::cuda_internal::CudaErrorToStatus(lcd_cuda_err_, (what), __FILE__, \
                                                              __LINE__);                       \
    }                                                                                          \
  } while (0)

#endif  // LCD_KERNELS_CUDA_CUDA_CHECK_H_
