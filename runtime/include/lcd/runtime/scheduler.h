// The iteration-level (continuous-batching) scheduler: decides, for one engine
// iteration, which sequences run and how many of their tokens, and owns the
// sequences' KV block tables. It is pure policy: it never touches a model,
// a tensor or a thread, so it is unit-tested on its own (STYLE.md 12).
//
// Usage per iteration (the engine thread's loop):
//   StepPlan plan = scheduler.Schedule(budget);
//   ... run Model::Forward over plan.seqs, sample where `samples` ...
//   scheduler.UpdateFromOutput(plan, outputs);
//
// Model of a sequence. A sequence's `tokens` are its prompt followed by every
// token generated so far. `num_computed` of them have their K/V in the cache;
// each step computes the next chunk tokens[num_computed, num_computed + n).
// A step whose chunk reaches the end of `tokens` produces logits for the last
// token, from which the engine samples one new token (appended by
// UpdateFromOutput). Decode is the special case n == 1; a prefill that does
// not fit the token budget is split into chunks over several iterations.
//
// Policy of Schedule (first-come, first-served, vLLM's shape):
//   1. Cancelled sequences are removed and their blocks freed.
//   2. Every running sequence in decode gets its 1 token, oldest first.
//   3. Running sequences still in (chunked) prefill get as many tokens as the
//      remaining budget allows, oldest first.
//   4. Waiting sequences are admitted in FIFO order while the token budget and
//      max_num_seqs allow and the free blocks hold all their known tokens
//      (those blocks are reserved at admission, so a chunked prefill never
//      runs short half-way); admission stops at the first one that does not
//      fit (no overtaking), and is skipped in an iteration that preempted.
//   When a decoding sequence needs a new block and none is free, the YOUNGEST
//   running sequence (largest id; possibly the one asking) is preempted: its
//   blocks are freed, it loses all computed K/V and goes to the front of the
//   waiting queue; when re-admitted it recomputes prompt + generated tokens.
//
// Thread safety: none. One thread (the engine's) owns a Scheduler; other
// threads reach it only through the engine.
#ifndef LCD_RUNTIME_SCHEDULER_H_
#define LCD_RUNTIME_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "lcd/runtime/kv_cache.h"

namespace lcd::runtime {

// Per-iteration limits.
struct SchedulerBudget {
  int64_t max_num_seqs = 32;               // Sequences in the running set.
  int64_t max_tokens_per_iteration = 512;  // Prefill-chunk + decode tokens per step.
};

enum class SeqState { kWaiting, kRunning };

// A sequence as the scheduler sees it. Owned by the Scheduler; pointers
// returned by Find stay valid until the sequence is removed (finished,
// cancelled or rejected).
struct SchedSequence {
  int64_t id = 0;                    // Unique; larger = younger (arrived later).
  std::vector<int32_t> tokens;       // Prompt + generated tokens.
  int64_t prompt_len = 0;
  int64_t max_total_tokens = 0;      // prompt_len + max_new_tokens: the most it can grow to.
  int64_t num_computed = 0;          // Prefix of `tokens` whose K/V is in the cache.
  std::vector<int32_t> block_table;  // Covers positions [0, num_computed) at least.
  SeqState state = SeqState::kWaiting;
  bool cancel_requested = false;
  int64_t num_preemptions = 0;

  int64_t num_uncomputed() const { return static_cast<int64_t>(tokens.size()) - num_computed; }
};

// One sequence's share of an iteration.
struct ScheduledChunk {
  int64_t seq_id = 0;
  int64_t start_pos = 0;   // == num_computed when scheduled.
  int64_t num_tokens = 0;  // Tokens tokens[start_pos, start_pos + num_tokens).
  bool samples = false;    // The chunk reaches the end of `tokens`: sample one new token.
};

// What one Schedule call decided.
struct StepPlan {
  std::vector<ScheduledChunk> chunks;  // Decodes first, then prefill chunks; by age within each.
  std::vector<int64_t> preempted;      // Sequences preempted in this call (now waiting).
  std::vector<int64_t> removed;        // Cancelled sequences removed in this call.
  int64_t num_tokens = 0;              // Sum of chunks' num_tokens.
  bool empty() const { return chunks.empty(); }
};

// The engine's report for one chunk of a plan (same order as plan.chunks).
struct ChunkOutput {
  int32_t new_token = -1;  // The sampled token when the chunk `samples`; ignored otherwise.
  bool finished = false;   // The sequence is done: it is removed and its blocks freed.
};

class Scheduler {
 public:
  // `allocator` is not owned and must outlive the Scheduler; the Scheduler is
  // its only user. block_size >= 1 is the number of token positions per block.
  Scheduler(BlockAllocator* allocator, int64_t block_size);
  ~Scheduler();  // Returns all blocks still held to the allocator.
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Blocks needed to hold `num_tokens` positions.
  int64_t BlocksFor(int64_t num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }
  // Whether a sequence that can grow to `max_total_tokens` could ever run
  // alone in this cache.
  bool CanEverFit(int64_t max_total_tokens) const {
    return BlocksFor(max_total_tokens) <= allocator_->num_blocks();
  }

  // Appends a new sequence to the waiting queue. Errors (nothing queued):
  // InvalidArgument for an id already present, an empty prompt,
  // max_new_tokens < 1, or when prompt + max_new_tokens needs more blocks
  // than the whole cache holds (it could never run, so waiting is useless).
  absl::Status Add(int64_t id, std::vector<int32_t> prompt, int64_t max_new_tokens);

  // Marks a sequence for removal; its blocks are freed in the next Schedule.
  // Unknown ids are ignored (the sequence may have just finished).
  void Cancel(int64_t id);

  // Plans one iteration (see the policy above). Allocates the blocks the
  // planned chunks need; they belong to the sequences from now on.
  StepPlan Schedule(const SchedulerBudget& budget);

  // Applies an iteration's results: advances num_computed by each chunk,
  // appends sampled tokens, removes finished sequences (freeing their
  // blocks). `outputs` must have one entry per plan.chunks entry (CHECK).
  void UpdateFromOutput(const StepPlan& plan, const std::vector<ChunkOutput>& outputs);

  // nullptr when the id is not (or no longer) present.
  const SchedSequence* Find(int64_t id) const;
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  int64_t block_size() const { return block_size_; }
  const BlockAllocator& allocator() const { return *allocator_; }
  // Ids in queue order (waiting: front first; running: oldest first).
  std::vector<int64_t> WaitingIds() const;
  std::vector<int64_t> RunningIds() const;

 private:
  // Grows seq's block table to cover `num_tokens` positions; false (nothing
  // allocated) when the allocator is short.
  bool EnsureBlocks(SchedSequence* seq, int64_t num_tokens);
  // Frees seq's blocks and resets its computed state.
  void ReleaseBlocks(SchedSequence* seq);
  // Preempts the youngest running sequence (not yet in `plan`: decodes are
  // planned oldest first). Returns the victim.
  SchedSequence* PreemptYoungest(StepPlan* plan);
  void Remove(int64_t id);

  BlockAllocator* allocator_;
  int64_t block_size_;
  std::map<int64_t, std::unique_ptr<SchedSequence>> seqs_;
  std::deque<SchedSequence*> waiting_;  // FIFO; preempted ones re-enter at the front.
  std::vector<SchedSequence*> running_;  // Sorted by id: oldest first.
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SCHEDULER_H_
