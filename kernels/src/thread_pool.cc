#include "lcd/kernels/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lcd::kernels {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Decode issues ~10 ParallelFor calls per layer, each a few tens of
// microseconds long, so workers spin this many pause iterations (~20-50 us)
// before sleeping on the condition variable; a futex round trip per call
// would cost more than many of the loops themselves.
constexpr int kSpinIterations = 20000;

}  // namespace

struct ThreadPool::Impl {
  int num_threads = 1;
  std::vector<std::thread> workers;

  std::mutex mu;
  std::condition_variable work_cv;
  std::condition_variable done_cv;
  bool stop = false;  // guarded by mu

  // The current job. Written by the caller before `generation` is bumped
  // (release) and read by workers after they observe the bump (acquire).
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t chunk = 0;
  int64_t num_chunks = 0;
  std::atomic<int64_t> next_chunk{0};
  std::atomic<uint64_t> generation{0};
  std::atomic<int> workers_left{0};

  void RunChunks() {
    for (;;) {
      const int64_t c = next_chunk.fetch_add(1, std::memory_order_relaxed);
      if (c >= num_chunks) return;
      const int64_t begin = c * chunk;
      const int64_t end = std::min(n, begin + chunk);
      (*fn)(begin, end);
    }
  }

  void WorkerLoop() {
    uint64_t seen = 0;
    for (;;) {
      bool have_work = false;
      for (int i = 0; i < kSpinIterations; ++i) {
        if (generation.load(std::memory_order_acquire) != seen) {
          have_work = true;
          break;
        }
        CpuRelax();
      }
      if (!have_work) {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] {
          return stop || generation.load(std::memory_order_acquire) != seen;
        });
        if (stop) return;
      }
      seen = generation.load(std::memory_order_acquire);
      RunChunks();
      if (workers_left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        // Taking the lock orders this notify after the caller's predicate
        // check, so the wake-up cannot be lost.
        std::lock_guard<std::mutex> lock(mu);
        done_cv.notify_one();
      }
    }
  }
};

ThreadPool::ThreadPool(int num_threads) : impl_(std::make_unique<Impl>()) {
  if (num_threads <= 0) {
    num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  impl_->num_threads = num_threads;
  impl_->workers.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) {
    impl_->workers.emplace_back([impl = impl_.get()] { impl->WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->work_cv.notify_all();
  for (auto& t : impl_->workers) t.join();
}

int ThreadPool::num_threads() const { return impl_->num_threads; }

void ThreadPool::ParallelFor(int64_t n, int64_t min_chunk,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  Impl& s = *impl_;
  // A few chunks per thread balance load when a core is busy elsewhere,
  // without making the shared counter hot.
  const int64_t max_chunks = static_cast<int64_t>(s.num_threads) * 4;
  const int64_t num_chunks = std::min((n + min_chunk - 1) / min_chunk, max_chunks);
  if (s.workers.empty() || num_chunks <= 1) {
    fn(0, n);
    return;
  }
  s.fn = &fn;
  s.n = n;
  s.chunk = (n + num_chunks - 1) / num_chunks;
  s.num_chunks = (n + s.chunk - 1) / s.chunk;
  s.next_chunk.store(0, std::memory_order_relaxed);
  s.workers_left.store(static_cast<int>(s.workers.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.generation.fetch_add(1, std::memory_order_release);
  }
  s.work_cv.notify_all();
  s.RunChunks();
  for (int i = 0; i < kSpinIterations; ++i) {
    if (s.workers_left.load(std::memory_order_acquire) == 0) return;
    CpuRelax();
  }
  std::unique_lock<std::mutex> lock(s.mu);
  s.done_cv.wait(lock, [&] { return s.workers_left.load(std::memory_order_acquire) == 0; });
}

void ParallelFor(ThreadPool* pool, int64_t n, int64_t min_chunk,
                 const std::function<void(int64_t begin, int64_t end)>& fn) {
  if (n <= 0) return;
  if (pool == nullptr) {
    fn(0, n);
    return;
  }
  pool->ParallelFor(n, min_chunk, fn);
}

}  // namespace lcd::kernels
