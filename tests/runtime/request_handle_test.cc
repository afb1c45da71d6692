// RequestHandle: the event queue between the engine thread and a consumer.
#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "lcd/runtime/engine.h"

namespace lcd::runtime {
namespace {

GenerationEvent TokenEvent(int32_t id) {
  GenerationEvent e;
  e.token_ids = {id};
  return e;
}

GenerationEvent FinalEvent(FinishReason r) {
  GenerationEvent e;
  e.finish = r;
  return e;
}

TEST(RequestHandleTest, DeliversInOrderAndEndsAfterTheFinalEvent) {
  RequestHandle h("req-1");
  EXPECT_EQ(h.request_id(), "req-1");
  h.Push(TokenEvent(1));
  h.Push(TokenEvent(2));
  EXPECT_FALSE(h.finished());
  h.Push(FinalEvent(FinishReason::kLength));
  EXPECT_TRUE(h.finished());
  GenerationEvent e;
  ASSERT_TRUE(h.Next(&e));
  EXPECT_EQ(e.token_ids[0], 1);
  ASSERT_TRUE(h.TryNext(&e));
  EXPECT_EQ(e.token_ids[0], 2);
  ASSERT_TRUE(h.Next(&e));
  EXPECT_EQ(e.finish, FinishReason::kLength);
  bool timed_out = true;
  EXPECT_FALSE(h.Next(&e, absl::InfiniteDuration(), &timed_out));  // Returns at once.
  EXPECT_FALSE(timed_out);
  EXPECT_FALSE(h.TryNext(&e));
}

TEST(RequestHandleTest, NextTimesOut) {
  RequestHandle h("r");
  GenerationEvent e;
  bool timed_out = false;
  const absl::Time start = absl::Now();
  EXPECT_FALSE(h.Next(&e, absl::Milliseconds(20), &timed_out));
  EXPECT_TRUE(timed_out);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(19));
  EXPECT_FALSE(h.TryNext(&e));
}

TEST(RequestHandleTest, NotifyRunsOutsideTheLockAndForAlreadyQueuedEvents) {
  RequestHandle h("r");
  h.Push(TokenEvent(7));
  std::vector<int32_t> drained;
  int calls = 0;
  // The callback drains with TryNext: it would deadlock if called under the lock.
  h.SetNotify([&] {
    ++calls;
    GenerationEvent e;
    while (h.TryNext(&e)) drained.push_back(e.token_ids.empty() ? -1 : e.token_ids[0]);
  });
  EXPECT_EQ(calls, 1);  // One immediate notify for the queued event.
  h.Push(TokenEvent(8));
  h.Push(FinalEvent(FinishReason::kStop));
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(drained, (std::vector<int32_t>{7, 8, -1}));
}

TEST(RequestHandleTest, CancelIsIdempotent) {
  RequestHandle h("r");
  EXPECT_FALSE(h.cancelled());
  h.Cancel();
  h.Cancel();
  EXPECT_TRUE(h.cancelled());
}

TEST(RequestHandleTest, ProducerAndConsumerThreads) {
  RequestHandle h("r");
  constexpr int kN = 2000;
  std::thread producer([&] {
    for (int i = 0; i < kN; ++i) h.Push(TokenEvent(i));
    h.Push(FinalEvent(FinishReason::kLength));
  });
  GenerationEvent e;
  int expected = 0;
  bool saw_final = false;
  while (h.Next(&e, absl::Seconds(30))) {
    if (e.finish != FinishReason::kNone) {
      saw_final = true;
    } else {
      EXPECT_EQ(e.token_ids[0], expected++);
    }
  }
  producer.join();
  EXPECT_EQ(expected, kN);
  EXPECT_TRUE(saw_final);
}

TEST(RequestHandleTest, FinishReasonNames) {
  EXPECT_EQ(FinishReasonName(FinishReason::kLength), "length");
  EXPECT_EQ(FinishReasonName(FinishReason::kStop), "stop");
  EXPECT_EQ(FinishReasonName(FinishReason::kEos), "eos");
  EXPECT_EQ(FinishReasonName(FinishReason::kCancelled), "cancelled");
  EXPECT_EQ(FinishReasonName(FinishReason::kError), "error");
}

}  // namespace
}  // namespace lcd::runtime
