#include "lcd/kernels/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "lcd/base/cpu_limit.h"

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

// Decode issues ~10 ParallelFor calls per layer, each tens of microseconds
// long with short serial gaps between them, so threads spin this long before
// sleeping on a condition variable: a futex wake-up per call would cost more
// than many of the loops themselves. Bounded by time, not iterations, because
// PAUSE takes ~10 cycles on some CPUs and ~140 on others.
constexpr auto kSpinTime = std::chrono::microseconds(50);

// Calls done() until it returns true or kSpinTime has passed.
template <typename Done>
bool SpinUntil(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      CpuRelax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

}  // namespace

// Work distribution. `state` packs (generation << 32 | chunks not yet
// claimed). A thread claims a chunk with a CAS that also checks the
// generation, so a worker that wakes late for an old call can never run a
// chunk of the wrong call, and the caller never waits for workers that did
// not get scheduled (important when cores are oversubscribed): it only waits
// until every claimed chunk has finished. Job fields are written before the
// generation is published and read only after a successful claim; while any
// chunk of a call is claimed but unfinished, the caller cannot start the next
// call, so they are stable for the claimer.
struct ThreadPool::Impl {
  int num_threads = 1;
  // Held for a whole ParallelFor: callers on different threads take turns.
  absl::Mutex call_mu;
  std::vector<std::thread> workers;

  // Sleeping only: the hot path is the atomics below.
  absl::Mutex mu;
  absl::CondVar work_cv;  // a new generation was published, or stop
  absl::CondVar done_cv;  // the last chunk of a call finished
  // Written under mu (so a waiting worker cannot miss it) but atomic so that
  // race detectors that cannot see inside absl::Mutex stay quiet.
  std::atomic<bool> stop{false};

  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t chunk = 0;
  int64_t num_chunks = 0;
  std::atomic<uint64_t> state{0};
  std::atomic<int64_t> chunks_done{0};

  static uint32_t Generation(uint64_t s) { return static_cast<uint32_t>(s >> 32); }

  // The pool whose chunk (or ParallelFor call) this thread is running, so a
  // nested call on the same pool runs inline.
  static thread_local const Impl* inside;

  // Runs chunks of generation `gen` until none are left. Returns true if this
  // thread finished the call's last chunk.
  bool RunChunks(uint32_t gen) {
    bool finished_last = false;
    uint64_t s = state.load(std::memory_order_acquire);
    for (;;) {
      if (Generation(s) != gen || static_cast<uint32_t>(s) == 0) return finished_last;
      if (!state.compare_exchange_weak(s, s - 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        continue;
      }
      const int64_t c = static_cast<int64_t>(static_cast<uint32_t>(s)) - 1;
      const int64_t begin = c * chunk;
      const int64_t end = std::min(n, begin + chunk);
      const int64_t total = num_chunks;
      (*fn)(begin, end);
      if (chunks_done.fetch_add(1, std::memory_order_acq_rel) + 1 == total) finished_last = true;
      s = state.load(std::memory_order_acquire);
    }
  }

  void WorkerLoop() {
    inside = this;  // a worker only ever runs this pool's chunks
    uint32_t seen = 0;
    for (;;) {
      const bool have_work =
          SpinUntil([&] { return Generation(state.load(std::memory_order_acquire)) != seen; });
      if (!have_work) {
        absl::MutexLock lock(&mu);
        while (!stop.load(std::memory_order_relaxed) &&
               Generation(state.load(std::memory_order_acquire)) == seen) {
          work_cv.Wait(&mu);
        }
        if (stop.load(std::memory_order_relaxed)) return;
      }
      seen = Generation(state.load(std::memory_order_acquire));
      if (RunChunks(seen)) {
        // Taking the lock orders this notify after the caller's predicate
        // check, so the wake-up cannot be lost.
        absl::MutexLock lock(&mu);
        done_cv.Signal();
      }
    }
  }
};

thread_local const ThreadPool::Impl* ThreadPool::Impl::inside = nullptr;

ThreadPool::ThreadPool(int num_threads) : impl_(std::make_unique<Impl>()) {
  if (num_threads <= 0) num_threads = AvailableCpus();
  impl_->num_threads = num_threads;
  impl_->workers.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) {
    impl_->workers.emplace_back([impl = impl_.get()] { impl->WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->stop.store(true, std::memory_order_relaxed);
    impl_->work_cv.SignalAll();
  }
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
  const int64_t wanted = std::min((n + min_chunk - 1) / min_chunk, max_chunks);
  if (s.workers.empty() || wanted <= 1 || Impl::inside == &s) {
    fn(0, n);
    return;
  }
  absl::MutexLock call_lock(&s.call_mu);
  // Restored on return: the caller may be a worker of another pool.
  struct Enter {
    explicit Enter(const Impl* p) : previous(Impl::inside) { Impl::inside = p; }
    ~Enter() { Impl::inside = previous; }
    const Impl* previous;
  } enter(&s);
  s.fn = &fn;
  s.n = n;
  s.chunk = std::max(min_chunk, (n + wanted - 1) / wanted);
  s.num_chunks = (n + s.chunk - 1) / s.chunk;
  s.chunks_done.store(0, std::memory_order_relaxed);
  const uint32_t gen = Impl::Generation(s.state.load(std::memory_order_relaxed)) + 1;
  {
    // Publishing under mu orders it against a worker's check-then-Wait, so
    // the wake-up cannot be lost.
    absl::MutexLock lock(&s.mu);
    s.state.store((static_cast<uint64_t>(gen) << 32) | static_cast<uint64_t>(s.num_chunks),
                  std::memory_order_release);
    s.work_cv.SignalAll();
  }
  s.RunChunks(gen);
  const int64_t total = s.num_chunks;
  if (SpinUntil([&] { return s.chunks_done.load(std::memory_order_acquire) == total; })) return;
  absl::MutexLock lock(&s.mu);
  while (s.chunks_done.load(std::memory_order_acquire) != total) s.done_cv.Wait(&s.mu);
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
