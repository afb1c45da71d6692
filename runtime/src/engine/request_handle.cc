// RequestHandle: the per-request event queue between the engine thread
// (producer) and one consumer (a blocking reader or a gRPC reactor).
#include <utility>

#include "lcd/base/logging.h"
#include "lcd/runtime/engine.h"

namespace lcd::runtime {

bool RequestHandle::Next(GenerationEvent* event, absl::Duration timeout, bool* timed_out) {
  if (timed_out != nullptr) *timed_out = false;
  const absl::Time deadline =
      timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || final_popped_;
  };
  if (!mu_.AwaitWithDeadline(absl::Condition(&ready), deadline)) {
    if (timed_out != nullptr) *timed_out = true;
    return false;
  }
  if (queue_.empty()) return false;  // The final event was already returned.
  *event = std::move(queue_.front());
  queue_.pop_front();
  if (event->finish != FinishReason::kNone) final_popped_ = true;
  return true;
}

bool RequestHandle::TryNext(GenerationEvent* event) {
  absl::MutexLock lock(&mu_);
  if (queue_.empty()) return false;
  *event = std::move(queue_.front());
  queue_.pop_front();
  if (event->finish != FinishReason::kNone) final_popped_ = true;
  return true;
}

void RequestHandle::SetNotify(std::function<void()> notify) {
  bool pending = false;
  {
    absl::MutexLock lock(&mu_);
    pending = !queue_.empty();
    // After the final event there is nothing more to announce; keeping the
    // callback would only keep whatever it captures alive (see Push).
    if (!final_pushed_) notify_ = notify;
  }
  // Outside the lock: the callback may call TryNext.
  if (pending && notify) notify();
}

void RequestHandle::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

bool RequestHandle::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool RequestHandle::finished() const {
  absl::MutexLock lock(&mu_);
  return final_pushed_;
}

void RequestHandle::Push(GenerationEvent event) {
  std::function<void()> notify;
  {
    absl::MutexLock lock(&mu_);
    LCD_CHECK(!final_pushed_) << "event pushed after the final one for " << request_id_;
    if (event.finish != FinishReason::kNone) final_pushed_ = true;
    queue_.push_back(std::move(event));
    // The final event is the last notification, so the handle lets go of the
    // callback then. Consumers' callbacks usually own the consumer's state,
    // which owns this handle; dropping it breaks that cycle.
    if (final_pushed_) {
      notify = std::move(notify_);
      notify_ = nullptr;
    } else {
      notify = notify_;
    }
  }
  // Outside the lock, so a reactor's callback can drain with TryNext.
  if (notify) notify();
}

}  // namespace lcd::runtime
