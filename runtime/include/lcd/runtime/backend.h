// Where models run: a device's compute threads (or streams), its memory, and
// the KV caches of the models on it. A model is loaded onto a backend
// (ModelOptions::backend) and asks it for its KV cache; the engine and the
// server only ever see this interface, so a CUDA backend plugs in here
// without changes to either.
//
// One backend per process and device: every model of lcd-server shares the
// CPU backend's one thread pool (sized from the container's CPU quota), so
// two models never fight over the cores with two spinning pools; their
// kernel calls take turns (kernels::ThreadPool serialises callers).
//
// Thread safety: all methods may be called from any thread.
#ifndef LCD_RUNTIME_BACKEND_H_
#define LCD_RUNTIME_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "lcd/kernels/ops.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/runtime/kv_cache.h"

namespace lcd::runtime {

class Backend {
 public:
  virtual ~Backend() = default;
  // For logs: "cpu (2 threads, avx2)".
  virtual std::string Describe() const = 0;
  // The threads kernels run on; nullptr means "on the calling thread".
  virtual kernels::ThreadPool* thread_pool() = 0;
  // A paged KV cache of num_blocks blocks per layer, holding layout.dtype.
  // InvalidArgument for a bad shape, ResourceExhausted when it does not fit.
  virtual absl::StatusOr<KvCache> CreateKvCache(int64_t num_layers, const kernels::KvLayout& layout,
                                                int64_t num_blocks) = 0;
};

// The CPU backend: host memory and one kernels::ThreadPool of num_threads
// threads (<= 0: lcd::AvailableCpus(), the affinity mask and cgroup quota).
std::shared_ptr<Backend> NewCpuBackend(int num_threads);

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_BACKEND_H_
