// Scheduler policy tests: no model, only the scheduler and a BlockAllocator.
// A tiny simulated engine (Step) applies plans the way the real engine does.
#include "lcd/runtime/scheduler.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lcd::runtime {
namespace {

using ::testing::ElementsAre;

std::vector<int32_t> Prompt(int64_t n, int32_t base = 1) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), base);
  return p;
}

// Sampled token = a function of (seq id, length), so recompute is checkable.
int32_t FakeToken(int64_t id, size_t len) { return static_cast<int32_t>((id * 31 + len) % 1000); }

// Applies `plan` as an engine would: samples where due, finishes sequences
// that produced `max_new[id]` tokens. Returns the ids that finished.
std::vector<int64_t> Step(Scheduler& s, const StepPlan& plan, const std::map<int64_t, int64_t>& max_new) {
  std::vector<ChunkOutput> out(plan.chunks.size());
  std::vector<int64_t> finished;
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    const ScheduledChunk& c = plan.chunks[i];
    const SchedSequence* seq = s.Find(c.seq_id);
    EXPECT_NE(seq, nullptr);
    EXPECT_GE(static_cast<int64_t>(seq->block_table.size()) * s.block_size(), c.start_pos + c.num_tokens)
        << "block table too short for the chunk";
    if (!c.samples) continue;
    out[i].new_token = FakeToken(c.seq_id, seq->tokens.size());
    const int64_t generated = static_cast<int64_t>(seq->tokens.size()) + 1 - seq->prompt_len;
    auto it = max_new.find(c.seq_id);
    if (it != max_new.end() && generated >= it->second) {
      out[i].finished = true;
      finished.push_back(c.seq_id);
    }
  }
  s.UpdateFromOutput(plan, out);
  return finished;
}

int64_t BlocksHeld(const Scheduler& s) {
  int64_t n = 0;
  for (int64_t id : s.RunningIds()) n += static_cast<int64_t>(s.Find(id)->block_table.size());
  for (int64_t id : s.WaitingIds()) n += static_cast<int64_t>(s.Find(id)->block_table.size());
  return n;
}

TEST(SchedulerTest, RejectsRequestsThatCanNeverFit) {
  BlockAllocator alloc(4);
  Scheduler s(&alloc, 16);  // 64 positions in all.
  EXPECT_TRUE(s.Add(1, Prompt(60), 4).ok());
  absl::Status st = s.Add(2, Prompt(60), 5);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("KV blocks"));
  EXPECT_EQ(s.Add(3, {}, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Add(1, Prompt(3), 4).code(), absl::StatusCode::kInvalidArgument);  // Duplicate id.
  EXPECT_EQ(s.Add(4, Prompt(3), 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.num_waiting(), 1);
}

TEST(SchedulerTest, ChunkedPrefillSpansIterationsThenDecodes) {
  BlockAllocator alloc(64);
  Scheduler s(&alloc, 4);
  ASSERT_TRUE(s.Add(7, Prompt(50), 3).ok());
  const SchedulerBudget budget{4, 16};
  std::vector<int64_t> starts, sizes;
  std::vector<bool> samples;
  for (int it = 0; it < 4; ++it) {
    StepPlan plan = s.Schedule(budget);
    ASSERT_EQ(plan.chunks.size(), 1u);
    starts.push_back(plan.chunks[0].start_pos);
    sizes.push_back(plan.chunks[0].num_tokens);
    samples.push_back(plan.chunks[0].samples);
    Step(s, plan, {{7, 3}});
  }
  EXPECT_THAT(starts, ElementsAre(0, 16, 32, 48));
  EXPECT_THAT(sizes, ElementsAre(16, 16, 16, 2));
  EXPECT_THAT(samples, ElementsAre(false, false, false, true));
  // Blocks grow with the computed prefix only (50 positions -> 13 blocks of 4).
  EXPECT_EQ(s.Find(7)->block_table.size(), 13u);
  EXPECT_EQ(s.Find(7)->tokens.size(), 51u);
  // Decode: one token per step; finishes after 3 generated tokens.
  StepPlan d1 = s.Schedule(budget);
  ASSERT_EQ(d1.chunks.size(), 1u);
  EXPECT_EQ(d1.chunks[0].start_pos, 50);
  EXPECT_EQ(d1.chunks[0].num_tokens, 1);
  EXPECT_TRUE(d1.chunks[0].samples);
  Step(s, d1, {{7, 3}});
  EXPECT_TRUE(Step(s, s.Schedule(budget), {{7, 3}}) == std::vector<int64_t>{7});
  EXPECT_EQ(s.Find(7), nullptr);
  EXPECT_EQ(alloc.num_free(), 64);
}

TEST(SchedulerTest, TokenBudgetAndMaxNumSeqsAreRespected) {
  BlockAllocator alloc(1000);
  Scheduler s(&alloc, 8);
  for (int64_t id = 1; id <= 6; ++id) ASSERT_TRUE(s.Add(id, Prompt(40), 100).ok());
  const SchedulerBudget budget{3, 64};
  for (int it = 0; it < 30; ++it) {
    StepPlan plan = s.Schedule(budget);
    int64_t sum = 0;
    for (const auto& c : plan.chunks) sum += c.num_tokens;
    EXPECT_EQ(sum, plan.num_tokens);
    EXPECT_LE(plan.num_tokens, 64);
    EXPECT_LE(s.num_running(), 3);
    EXPECT_LE(static_cast<int64_t>(plan.chunks.size()), 3);
    Step(s, plan, {});
  }
  // With nothing finishing, the running set saturates at max_num_seqs and
  // every step is 3 decodes.
  StepPlan plan = s.Schedule(budget);
  EXPECT_EQ(plan.num_tokens, 3);
  EXPECT_EQ(s.num_waiting(), 3);
}

TEST(SchedulerTest, DecodesComeBeforePrefillAndAdmission) {
  BlockAllocator alloc(1000);
  Scheduler s(&alloc, 4);
  ASSERT_TRUE(s.Add(1, Prompt(3), 50).ok());
  const SchedulerBudget budget{8, 10};
  Step(s, s.Schedule(budget), {});  // 1 prefilled and sampled: now decoding.
  ASSERT_TRUE(s.Add(2, Prompt(30), 5).ok());
  ASSERT_TRUE(s.Add(3, Prompt(5), 5).ok());
  StepPlan plan = s.Schedule(budget);
  ASSERT_EQ(plan.chunks.size(), 2u);
  EXPECT_EQ(plan.chunks[0].seq_id, 1);  // The decode first,
  EXPECT_EQ(plan.chunks[0].num_tokens, 1);
  EXPECT_EQ(plan.chunks[1].seq_id, 2);  // then the head of the queue takes the rest.
  EXPECT_EQ(plan.chunks[1].num_tokens, 9);
  EXPECT_EQ(s.num_waiting(), 1);  // 3 could not overtake 2.
  Step(s, plan, {});
  // Next: decode of 1, prefill continuation of 2 takes the remaining 9.
  plan = s.Schedule(budget);
  ASSERT_EQ(plan.chunks.size(), 2u);
  EXPECT_EQ(plan.chunks[0].seq_id, 1);
  EXPECT_EQ(plan.chunks[1].seq_id, 2);
  EXPECT_EQ(plan.chunks[1].start_pos, 9);
  EXPECT_EQ(plan.chunks[1].num_tokens, 9);
}

TEST(SchedulerTest, FifoAdmissionWithoutOvertaking) {
  BlockAllocator alloc(10);
  Scheduler s(&alloc, 4);  // 40 positions.
  ASSERT_TRUE(s.Add(1, Prompt(20), 4).ok());  // 6 blocks over its life.
  ASSERT_TRUE(s.Add(2, Prompt(30), 2).ok());  // 8 blocks: cannot start while 1 holds 5-6.
  ASSERT_TRUE(s.Add(3, Prompt(2), 2).ok());   // Small, but must wait behind 2.
  const SchedulerBudget budget{8, 64};
  StepPlan plan = s.Schedule(budget);
  // 1 takes 5 blocks (20 positions); 2 needs 8 for its prompt and only 5 are
  // free, so it waits, and 3 must not overtake it.
  ASSERT_EQ(plan.chunks.size(), 1u);
  EXPECT_EQ(plan.chunks[0].seq_id, 1);
  EXPECT_THAT(s.WaitingIds(), ElementsAre(2, 3));
  std::vector<int64_t> order, admitted;
  std::map<int64_t, int64_t> max_new{{1, 4}, {2, 2}, {3, 2}};
  Step(s, plan, max_new);
  for (int it = 0; it < 100 && s.has_work(); ++it) {
    plan = s.Schedule(budget);
    for (const auto& c : plan.chunks)
      if (c.start_pos == 0) admitted.push_back(c.seq_id);
    for (int64_t id : Step(s, plan, max_new)) order.push_back(id);
  }
  EXPECT_FALSE(s.has_work());
  EXPECT_THAT(admitted, ElementsAre(2, 3));
  EXPECT_THAT(order, ElementsAre(1, 2, 3));
  EXPECT_EQ(alloc.num_free(), 10);
}

TEST(SchedulerTest, PreemptsYoungestAndRecomputes) {
  BlockAllocator alloc(6);
  Scheduler s(&alloc, 4);  // 24 positions.
  for (int64_t id = 1; id <= 3; ++id) ASSERT_TRUE(s.Add(id, Prompt(7, 10 * id), 10).ok());
  const SchedulerBudget budget{8, 64};
  // Step 1: all three prefill 7 tokens (2 blocks each: the cache is full).
  StepPlan p1 = s.Schedule(budget);
  ASSERT_EQ(p1.chunks.size(), 3u);
  EXPECT_EQ(alloc.num_free(), 0);
  Step(s, p1, {});
  // Step 2: position 7 is still in block 2 for everyone: no new blocks.
  StepPlan p2 = s.Schedule(budget);
  EXPECT_EQ(p2.chunks.size(), 3u);
  EXPECT_TRUE(p2.preempted.empty());
  Step(s, p2, {});
  const std::vector<int32_t> tokens3 = s.Find(3)->tokens;  // 7 prompt + 2 generated.
  ASSERT_EQ(tokens3.size(), 9u);
  // Step 3: position 8 needs a third block for everyone. Seq 1 gets it by
  // preempting 3 (the youngest), whose two blocks also cover seq 2.
  StepPlan p3 = s.Schedule(budget);
  EXPECT_THAT(p3.preempted, ElementsAre(3));
  ASSERT_EQ(p3.chunks.size(), 2u);
  EXPECT_EQ(p3.chunks[0].seq_id, 1);
  EXPECT_EQ(p3.chunks[1].seq_id, 2);
  EXPECT_THAT(s.WaitingIds(), ElementsAre(3));
  EXPECT_EQ(s.Find(3)->num_computed, 0);
  EXPECT_TRUE(s.Find(3)->block_table.empty());
  EXPECT_EQ(s.Find(3)->num_preemptions, 1);
  Step(s, p3, {});
  // Run to completion; preempted sequences recompute prompt + generated
  // tokens in one (re-)prefill chunk that then samples.
  // Before seq 3 samples again it must recompute all 9 known tokens (in one
  // or more chunks, as free blocks allow), starting from position 0.
  int64_t recomputed = 0;
  bool saw_recompute = false;
  std::map<int64_t, int64_t> max_new{{1, 10}, {2, 10}, {3, 10}};
  std::vector<int64_t> finished;
  for (int it = 0; it < 200 && s.has_work(); ++it) {
    StepPlan plan = s.Schedule(budget);
    for (const auto& c : plan.chunks) {
      if (c.seq_id != 3 || saw_recompute) continue;
      EXPECT_EQ(c.start_pos, recomputed);
      recomputed += c.num_tokens;
      EXPECT_EQ(s.Find(3)->tokens, tokens3);
      if (c.samples) {
        saw_recompute = true;
        EXPECT_EQ(recomputed, 9);  // 7 prompt + 2 generated before preemption.
      }
    }
    for (int64_t id : Step(s, plan, max_new)) finished.push_back(id);
  }
  EXPECT_TRUE(saw_recompute);
  EXPECT_THAT(finished, ElementsAre(1, 2, 3));
  EXPECT_EQ(alloc.num_free(), 6);
}

TEST(SchedulerTest, YoungestDecodePreemptsItself) {
  // A decode that needs a block when it is itself the youngest running
  // sequence gives way; the older one's chunked prefill goes on.
  BlockAllocator alloc(4);
  Scheduler s(&alloc, 4);  // 16 positions.
  ASSERT_TRUE(s.Add(9, Prompt(3), 5).ok());
  Step(s, s.Schedule({8, 3}), {});  // 9: prefilled (1 block), decoding now.
  ASSERT_TRUE(s.Add(2, Prompt(12), 1).ok());
  StepPlan p = s.Schedule({8, 9});  // 9 decodes; 2 prefills 8 (reserving 3 blocks).
  ASSERT_EQ(p.chunks.size(), 2u);
  Step(s, p, {});
  EXPECT_EQ(alloc.num_free(), 0);
  // 9's decode at position 4 needs a second block: none is free and 9 is the
  // youngest, so 9 is preempted; 2 finishes its prompt.
  p = s.Schedule({8, 16});
  EXPECT_THAT(p.preempted, ElementsAre(9));
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].seq_id, 2);
  EXPECT_EQ(p.chunks[0].start_pos, 8);
  EXPECT_EQ(p.chunks[0].num_tokens, 4);
  EXPECT_TRUE(p.chunks[0].samples);
  EXPECT_EQ(p.num_tokens, 4);
  EXPECT_THAT(s.WaitingIds(), ElementsAre(9));
  EXPECT_EQ(s.Find(9)->tokens.size(), 5u);  // 3 prompt + 2 generated survive preemption.
  EXPECT_EQ(alloc.num_free(), 1);           // 2 holds 3 blocks, 9 none.
}

TEST(SchedulerTest, CancelFreesBlocksAtNextSchedule) {
  BlockAllocator alloc(20);
  Scheduler s(&alloc, 4);
  ASSERT_TRUE(s.Add(1, Prompt(10), 5).ok());
  ASSERT_TRUE(s.Add(2, Prompt(10), 5).ok());
  Step(s, s.Schedule({8, 64}), {});
  EXPECT_EQ(alloc.num_free(), 20 - 6);
  s.Cancel(1);
  s.Cancel(42);  // Unknown: ignored.
  EXPECT_EQ(alloc.num_free(), 20 - 6);  // Not before the next Schedule.
  StepPlan plan = s.Schedule({8, 64});
  EXPECT_THAT(plan.removed, ElementsAre(1));
  EXPECT_EQ(s.Find(1), nullptr);
  ASSERT_EQ(plan.chunks.size(), 1u);
  EXPECT_EQ(plan.chunks[0].seq_id, 2);
  EXPECT_EQ(alloc.num_free(), 20 - 3);
  Step(s, plan, {});
  s.Cancel(2);
  EXPECT_TRUE(s.Schedule({8, 64}).chunks.empty());
  EXPECT_EQ(alloc.num_free(), 20);
  EXPECT_FALSE(s.has_work());
}

// Random adds, cancels and finishes under a small cache: the block
// accounting must balance after every step, every plan must be within
// budget, and everything must drain to zero blocks in use.
TEST(SchedulerTest, RandomOperationsNeverLeakBlocks) {
  int64_t preemptions = 0;
  for (uint32_t seed : {1u, 2u, 3u, 17u, 12345u}) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    BlockAllocator alloc(24);
    Scheduler s(&alloc, 4);
    std::map<int64_t, int64_t> max_new;
    int64_t next_id = 1, finished = 0, cancelled = 0;
    const SchedulerBudget budget{2 + static_cast<int64_t>(rng() % 6), 8 + static_cast<int64_t>(rng() % 40)};
    for (int it = 0; it < 400; ++it) {
      if (it < 300 && rng() % 3 == 0) {
        const int64_t plen = 1 + rng() % 40, mnew = 1 + rng() % 40;
        if (s.Add(next_id, Prompt(plen), mnew).ok()) max_new[next_id] = mnew;
        ++next_id;
      }
      if (rng() % 10 == 0 && next_id > 1) {
        const int64_t victim = 1 + rng() % (next_id - 1);
        if (s.Find(victim) != nullptr) ++cancelled;
        s.Cancel(victim);
      }
      StepPlan plan = s.Schedule(budget);
      EXPECT_LE(plan.num_tokens, budget.max_tokens_per_iteration);
      EXPECT_LE(s.num_running(), budget.max_num_seqs);
      preemptions += static_cast<int64_t>(plan.preempted.size());
      std::set<int64_t> ids;
      for (const auto& c : plan.chunks) {
        EXPECT_TRUE(ids.insert(c.seq_id).second) << "sequence scheduled twice";
        EXPECT_GE(c.num_tokens, 1);
      }
      finished += static_cast<int64_t>(Step(s, plan, max_new).size());
      EXPECT_EQ(BlocksHeld(s) + alloc.num_free(), alloc.num_blocks());
      // No block is owned twice.
      std::set<int32_t> owned;
      for (int64_t id : s.RunningIds())
        for (int32_t b : s.Find(id)->block_table) EXPECT_TRUE(owned.insert(b).second);
      for (int64_t id : s.WaitingIds()) EXPECT_TRUE(s.Find(id)->block_table.empty());
    }
    // No cancels from here: everything left must finish (no livelock).
    for (int it = 0; it < 5000 && s.has_work(); ++it) {
      finished += static_cast<int64_t>(Step(s, s.Schedule(budget), max_new).size());
    }
    EXPECT_FALSE(s.has_work());
    EXPECT_EQ(finished + cancelled, static_cast<int64_t>(max_new.size()));
    EXPECT_EQ(alloc.num_free(), alloc.num_blocks());
  }
  EXPECT_GT(preemptions, 0) << "the cache was meant to be small enough to force preemption";
}

}  // namespace
}  // namespace lcd::runtime
