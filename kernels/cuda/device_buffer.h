// RAII owners of device memory and streams (private to kernels/cuda; host
// C++ files only). Both are move-only; destruction frees the resource and
// ignores errors (there is no one to report them to, and a failed free at
// shutdown must not abort).
#ifndef LCD_KERNELS_CUDA_DEVICE_BUFFER_H_
#define LCD_KERNELS_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/cuda_check.h"

namespace lcd::kernels::cuda_internal {

// A stream owned by this object (never the legacy default stream), so every
// launch names an explicit stream.
class CudaStream {
 public:
  static absl::StatusOr<CudaStream> Create() {
    cudaStream_t s = nullptr;
    LCD_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking),
                             "cudaStreamCreate");
    return CudaStream(s);
  }
  CudaStream(CudaStream&& o) noexcept : stream_(std::exchange(o.stream_, nullptr)) {}
  CudaStream& operator=(CudaStream&& o) noexcept {
    std::swap(stream_, o.stream_);
    return *this;
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  ~CudaStream() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  cudaStream_t get() const { return stream_; }
  absl::Status Synchronize() const {
    LCD_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return absl::OkStatus();
  }

 private:
  explicit CudaStream(cudaStream_t s) : stream_(s) {}
  cudaStream_t stream_ = nullptr;
};

// `bytes` of device memory. A zero-byte buffer holds nullptr.
class DeviceBuffer {
 public:
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) {
    void* p = nullptr;
    if (bytes > 0) LCD_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes), "cudaMalloc");
    return DeviceBuffer(p, bytes);
  }
  // Allocates and copies `bytes` from host memory `src` on `stream`.
  static absl::StatusOr<DeviceBuffer> FromHost(const void* src, size_t bytes,
                                               const CudaStream& stream) {
    absl::StatusOr<DeviceBuffer> buf = Allocate(bytes);
    if (!buf.ok()) return buf.status();
    if (bytes > 0) {
      LCD_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(buf->data(), src, bytes, cudaMemcpyHostToDevice, stream.get()),
          "cudaMemcpyAsync(host to device)");
    }
    return buf;
  }

  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

  // Copies the first `bytes` of the buffer to host memory `dst` on `stream`
  // (asynchronous: synchronize the stream before reading dst).
  absl::Status CopyToHost(void* dst, size_t bytes, const CudaStream& stream) const {
    if (bytes > bytes_) return absl::InvalidArgumentError("CopyToHost past the end of the buffer");
    if (bytes > 0) {
      LCD_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst, ptr_, bytes, cudaMemcpyDeviceToHost, stream.get()),
          "cudaMemcpyAsync(device to host)");
    }
    return absl::OkStatus();
  }

 private:
  DeviceBuffer(void* p, size_t bytes) : ptr_(p), bytes_(bytes) {}
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace lcd::kernels::cuda_internal

#endif  // LCD_KERNELS_CUDA_DEVICE_BUFFER_H_
