// A fixed pool of worker threads for data-parallel kernels.
//
// ParallelFor splits [0, n) into contiguous chunks, runs them on the pool's
// threads plus the calling thread, and returns when all are done. It is the
// only scheduling primitive kernels use; the pool is owned by the caller
// (usually one per model) and may be nullptr everywhere a kernel takes one,
// meaning "run on the calling thread".
//
// Thread safety: a pool may be shared (one per process serves every model):
// concurrent ParallelFor calls from different threads run one after another,
// and a ParallelFor issued from inside a chunk of the same pool runs inline
// on the calling thread instead of deadlocking.
#ifndef LCD_KERNELS_THREAD_POOL_H_
#define LCD_KERNELS_THREAD_POOL_H_

#include <cstdint>
#include <functional>
#include <memory>

namespace lcd::kernels {

class ThreadPool {
 public:
  // num_threads counts the calling thread: ThreadPool(2) starts one worker.
  // num_threads <= 0 means lcd::AvailableCpus() (affinity and cgroup quota).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const;

  // Calls fn(begin, end) on disjoint chunks covering [0, n). Chunks are at
  // least `min_chunk` long (except possibly the last) so tiny loops do not pay
  // for synchronisation.
  void ParallelFor(int64_t n, int64_t min_chunk,
                   const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs fn over [0, n) on `pool`, or inline when pool is nullptr.
void ParallelFor(ThreadPool* pool, int64_t n, int64_t min_chunk,
                 const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace lcd::kernels

#endif  // LCD_KERNELS_THREAD_POOL_H_
