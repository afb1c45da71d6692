// TaskQueue: every posted task runs exactly once, in FIFO start order on one
// worker, on the queue's own threads, concurrently with several workers;
// tasks may post tasks; the destructor runs what was posted and then
// refuses new tasks.
#include "lcd/base/task_queue.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace lcd {
namespace {

TEST(TaskQueueTest, OneWorkerRunsTasksInOrderOffTheCallingThread) {
  std::vector<int> order;
  absl::Mutex mu;
  std::atomic<bool> on_caller{false};
  const std::thread::id caller = std::this_thread::get_id();
  {
    TaskQueue q(1, "test");
    EXPECT_EQ(q.threads(), 1);
    for (int i = 0; i < 1000; ++i) {
      ASSERT_TRUE(q.Post([&, i] {
        if (std::this_thread::get_id() == caller) on_caller = true;
        absl::MutexLock lock(&mu);
        order.push_back(i);
      }));
    }
  }  // The destructor runs everything posted.
  ASSERT_EQ(order.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(order[i], i);
  EXPECT_FALSE(on_caller);
}

TEST(TaskQueueTest, WorkersRunConcurrentlyAndTasksMayPostTasks) {
  TaskQueue q(3, "test");
  // Three tasks that each wait for all three to have started: they can only
  // finish if the three workers run them at the same time.
  std::atomic<int> started{0};
  absl::Notification all_done;
  std::atomic<int> done{0};
  for (int i = 0; i < 3; ++i) {
    q.Post([&] {
      ++started;
      const absl::Time deadline = absl::Now() + absl::Seconds(30);
      while (started.load() < 3 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
      // A task posting a follow-up task.
      q.Post([&] {
        if (++done == 3) all_done.Notify();
      });
    });
  }
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(started.load(), 3);
  EXPECT_EQ(q.pending(), 0);
}

TEST(TaskQueueTest, RunsEveryAcceptedTaskAndRefusesOnceDestructionBegan) {
  auto q = std::make_unique<TaskQueue>(1, "test");
  std::atomic<int> accepted{0}, ran{0};
  std::atomic<bool> refused{false};
  absl::Notification release;
  TaskQueue* raw = q.get();
  q->Post([&] {
    release.WaitForNotification();
    // Destruction has begun (or is about to): keep posting until refused.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      if (!raw->Post([&] { ++ran; })) {
        refused = true;
        return;
      }
      ++accepted;
      absl::SleepFor(absl::Microseconds(100));
    }
  });
  std::thread destroy([&] { q.reset(); });
  release.Notify();
  destroy.join();
  EXPECT_TRUE(refused.load());
  EXPECT_EQ(ran.load(), accepted.load());  // Every accepted task ran before the workers were joined.
}

}  // namespace
}  // namespace lcd
