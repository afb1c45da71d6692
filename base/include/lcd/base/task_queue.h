// A fixed set of worker threads running posted tasks in FIFO order: where
// lcd-server does per-call work that must stay off the gRPC reactor threads
// (tokenizing prompts up to kMaxPromptBytes) and off the engine thread
// (building response messages and starting stream writes), so that the
// engine thread only steps the model.
//
//   TaskQueue q(4, "calls");
//   q.Post([] { ... });  // Returns at once; the task runs on a worker.
//
// Tasks start in the order posted (with several workers they may overlap
// and finish in any order). The destructor stops accepting tasks, runs every
// task already posted, and joins the workers. A task must not destroy the
// queue it runs on.
//
// Thread safety: Post may be called from any thread, including from tasks.
#ifndef LCD_BASE_TASK_QUEUE_H_
#define LCD_BASE_TASK_QUEUE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace lcd {

class TaskQueue {
 public:
  // threads >= 1 (smaller values mean 1). `name` labels the workers' log
  // lines and thread names ("<name>-<i>", truncated to 15 bytes).
  TaskQueue(int threads, std::string name);
  ~TaskQueue();
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;

  // Queues `task`. After the destructor has begun, returns false and drops
  // the task; otherwise true.
  bool Post(std::function<void()> task);

  int threads() const { return static_cast<int>(workers_.size()); }
  // Tasks posted and not yet started.
  int64_t pending() const;

 private:
  void Work();
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace lcd

#endif  // LCD_BASE_TASK_QUEUE_H_
