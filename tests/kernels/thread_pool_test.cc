// ThreadPool: every index covered exactly once, chunk bounds respected, many
// back-to-back calls (the decode pattern), n smaller than the thread count,
// the nullptr pool path, a pool shared by several calling threads (one pool
// per process serves every model), and nested calls on the same pool.
#include "lcd/kernels/thread_pool.h"

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "lcd/base/cpu_limit.h"

namespace lcd::kernels {
namespace {

void ExpectCoversOnce(ThreadPool* pool, int64_t n, int64_t min_chunk) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  std::atomic<int64_t> short_chunks{0};
  ParallelFor(pool, n, min_chunk, [&](int64_t begin, int64_t end) {
    ASSERT_LE(0, begin);
    ASSERT_LT(begin, end);
    ASSERT_LE(end, n);
    if (end - begin < min_chunk && end != n) short_chunks.fetch_add(1);
    for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
  });
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i << " of " << n;
  EXPECT_EQ(short_chunks.load(), 0) << "only the last chunk may be shorter than min_chunk";
}

TEST(ThreadPoolTest, CoversAllIndicesExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {1, 2, 3, 7, 8, 100, 1001, 65536}) {
      for (int64_t min_chunk : {1, 3, 64}) {
        SCOPED_TRACE(::testing::Message()
                     << "threads=" << threads << " n=" << n << " min_chunk=" << min_chunk);
        ExpectCoversOnce(&pool, n, min_chunk);
      }
    }
  }
}

TEST(ThreadPoolTest, SharedByConcurrentCallers) {
  // Three threads (three engines) drive one pool at once; every call must
  // cover its own range exactly once and never see another caller's chunks.
  ThreadPool pool(3);
  constexpr int kCallers = 3, kCalls = 2000;
  std::vector<std::vector<int64_t>> data(kCallers, std::vector<int64_t>(257, 0));
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      for (int call = 0; call < kCalls; ++call) {
        pool.ParallelFor(static_cast<int64_t>(data[c].size()), 8, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) data[c][i] += i + c;
        });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  for (int c = 0; c < kCallers; ++c) {
    for (size_t i = 0; i < data[c].size(); ++i) {
      ASSERT_EQ(data[c][i], (static_cast<int64_t>(i) + c) * kCalls) << "caller " << c << " index " << i;
    }
  }
}

TEST(ThreadPoolTest, NestedCallOnSamePoolRunsInline) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(64 * 32);
  pool.ParallelFor(64, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const std::thread::id outer = std::this_thread::get_id();
      pool.ParallelFor(32, 1, [&](int64_t ib, int64_t ie) {
        EXPECT_EQ(std::this_thread::get_id(), outer);
        for (int64_t j = ib; j < ie; ++j) hits[i * 32 + j].fetch_add(1);
      });
    }
  });
  for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i].load(), 1) << i;
}

TEST(ThreadPoolTest, ZeroThreadsMeansAvailableCpus) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.num_threads(), AvailableCpus());
}

TEST(ThreadPoolTest, ManyCallsInARow) {
  ThreadPool pool(4);
  std::vector<int64_t> data(513, 0);
  for (int call = 0; call < 20000; ++call) {
    pool.ParallelFor(static_cast<int64_t>(data.size()), 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) data[i] += i;
    });
  }
  for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(data[i], static_cast<int64_t>(i) * 20000);
}

TEST(ThreadPoolTest, UsesMoreThanOneThreadWhenWorthIt) {
  ThreadPool pool(3);
  std::mutex mu;
  std::set<std::thread::id> ids;
  // Enough chunks and work that the workers (woken at the start) take some.
  for (int attempt = 0; attempt < 50 && ids.size() < 2; ++attempt) {
    pool.ParallelFor(64, 1, [&](int64_t, int64_t) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(std::this_thread::get_id());
    });
  }
  EXPECT_GE(ids.size(), 2u);
}

TEST(ThreadPoolTest, NullPoolAndEmptyRangeRunInline) {
  int calls = 0;
  ParallelFor(nullptr, 10, 1, [&](int64_t b, int64_t e) {
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 10);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
  ThreadPool pool(2);
  pool.ParallelFor(0, 1, [&](int64_t, int64_t) { ++calls; });
  ParallelFor(&pool, -5, 1, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 1);
}

TEST(ThreadPoolTest, DefaultSizeIsHardwareConcurrency) {
  ThreadPool pool(0);
  EXPECT_GE(pool.num_threads(), 1);
  ExpectCoversOnce(&pool, 12345, 7);
}

TEST(ThreadPoolTest, DestroyWhileIdleAfterSleeping) {
  // Workers that have gone to sleep on the condition variable must wake for
  // new work and for shutdown.
  auto pool = std::make_unique<ThreadPool>(3);
  ExpectCoversOnce(pool.get(), 100, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  ExpectCoversOnce(pool.get(), 100, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  pool.reset();
}

}  // namespace
}  // namespace lcd::kernels
