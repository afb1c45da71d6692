#include "lcd/runtime/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"

namespace lcd::runtime {

Scheduler::Scheduler(BlockAllocator* allocator, int64_t block_size)
    : allocator_(allocator), block_size_(block_size) {
  LCD_CHECK(allocator_ != nullptr);
  LCD_CHECK(block_size_ >= 1) << "block_size " << block_size_;
}

Scheduler::~Scheduler() {
  for (auto& [id, seq] : seqs_) ReleaseBlocks(seq.get());
}

absl::Status Scheduler::Add(int64_t id, std::vector<int32_t> prompt, int64_t max_new_tokens) {
  if (seqs_.count(id) != 0) return absl::InvalidArgumentError(absl::StrCat("duplicate sequence id ", id));
  if (prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  const int64_t max_total = static_cast<int64_t>(prompt.size()) + max_new_tokens;
  if (!CanEverFit(max_total)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request needs up to ", BlocksFor(max_total), " KV blocks (", max_total,
        " tokens) but the whole cache has ", allocator_->num_blocks(), " blocks of ", block_size_,
        " tokens"));
  }
  auto seq = std::make_unique<SchedSequence>();
  seq->id = id;
  seq->prompt_len = static_cast<int64_t>(prompt.size());
  seq->tokens = std::move(prompt);
  seq->max_total_tokens = max_total;
  waiting_.push_back(seq.get());
  seqs_.emplace(id, std::move(seq));
  return absl::OkStatus();
}

void Scheduler::Cancel(int64_t id) {
  auto it = seqs_.find(id);
  if (it != seqs_.end()) it->second->cancel_requested = true;
}

const SchedSequence* Scheduler::Find(int64_t id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

std::vector<int64_t> Scheduler::WaitingIds() const {
  std::vector<int64_t> ids;
  for (const SchedSequence* s : waiting_) ids.push_back(s->id);
  return ids;
}

std::vector<int64_t> Scheduler::RunningIds() const {
  std::vector<int64_t> ids;
  for (const SchedSequence* s : running_) ids.push_back(s->id);
  return ids;
}

bool Scheduler::EnsureBlocks(SchedSequence* seq, int64_t num_tokens) {
  const int64_t have = static_cast<int64_t>(seq->block_table.size());
  const int64_t need = BlocksFor(num_tokens) - have;
  if (need <= 0) return true;
  absl::StatusOr<std::vector<int32_t>> blocks = allocator_->Allocate(need);
  if (!blocks.ok()) return false;
  seq->block_table.insert(seq->block_table.end(), blocks->begin(), blocks->end());
  return true;
}

void Scheduler::ReleaseBlocks(SchedSequence* seq) {
  if (!seq->block_table.empty()) allocator_->Free(seq->block_table);
  seq->block_table.clear();
  seq->num_computed = 0;
}

SchedSequence* Scheduler::PreemptYoungest(StepPlan* plan) {
  LCD_CHECK(!running_.empty());
  SchedSequence* victim = running_.back();
  running_.pop_back();
  // Recompute rather than swap: dropping the K/V is free, and the sequence's
  // tokens are all we need to rebuild it.
  ReleaseBlocks(victim);
  victim->state = SeqState::kWaiting;
  ++victim->num_preemptions;
  waiting_.push_front(victim);
  plan->preempted.push_back(victim->id);
  return victim;
}

void Scheduler::Remove(int64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  SchedSequence* seq = it->second.get();
  if (seq->state == SeqState::kRunning) {
    running_.erase(std::find(running_.begin(), running_.end(), seq));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), seq));
  }
  ReleaseBlocks(seq);
  seqs_.erase(it);
}

StepPlan Scheduler::Schedule(const SchedulerBudget& budget) {
  StepPlan plan;
  for (auto it = seqs_.begin(); it != seqs_.end();) {
    const int64_t id = it->first;
    const bool cancel = it->second->cancel_requested;
    ++it;  // Remove invalidates the current iterator only.
    if (cancel) {
      plan.removed.push_back(id);
      Remove(id);
    }
  }

  int64_t budget_left = budget.max_tokens_per_iteration;
  auto add_chunk = [&](SchedSequence* seq, int64_t n) {
    plan.chunks.push_back({seq->id, seq->num_computed, n, n == seq->num_uncomputed()});
    plan.num_tokens += n;
    budget_left -= n;
  };

  // Decodes first: they are one token each and hold the latency users see.
  // Only a decode can need a new block (admission reserves a prefill's
  // blocks). Victims are always the youngest, i.e. at or after index i and
  // not yet planned, so the index loop stays valid while running_ shrinks
  // from the back.
  for (size_t i = 0; i < running_.size() && budget_left > 0; ++i) {
    SchedSequence* seq = running_[i];
    if (seq->num_uncomputed() != 1) continue;
    bool self_preempted = false;
    while (!EnsureBlocks(seq, seq->num_computed + 1)) {
      if (PreemptYoungest(&plan) == seq) {
        self_preempted = true;
        break;
      }
    }
    if (!self_preempted) add_chunk(seq, 1);
  }

  // Then running sequences part-way through a chunked prefill (or recompute).
  for (size_t i = 0; i < running_.size() && budget_left > 0; ++i) {
    SchedSequence* seq = running_[i];
    if (seq->num_uncomputed() <= 1) continue;
    const int64_t n = std::min(seq->num_uncomputed(), budget_left);
    LCD_CHECK(EnsureBlocks(seq, seq->num_computed + n)) << "prefill blocks were reserved at admission";
    add_chunk(seq, n);
  }

  // Admission, FIFO without overtaking. Not in an iteration that preempted:
  // the cache is under pressure, and the preempted ones are first in line.
  if (plan.preempted.empty()) {
    while (!waiting_.empty() && budget_left > 0 &&
           static_cast<int64_t>(running_.size()) < budget.max_num_seqs) {
      SchedSequence* seq = waiting_.front();
      // Reserve blocks for everything it already knows (prompt, or prompt +
      // generated on recompute) up front: admitting it with a partial chunk's
      // blocks would let the next iteration preempt it again (thrashing).
      if (!EnsureBlocks(seq, static_cast<int64_t>(seq->tokens.size()))) break;
      const int64_t n = std::min(seq->num_uncomputed(), budget_left);
      waiting_.pop_front();
      seq->state = SeqState::kRunning;
      running_.insert(std::upper_bound(running_.begin(), running_.end(), seq,
                                       [](const SchedSequence* a, const SchedSequence* b) {
                                         return a->id < b->id;
                                       }),
                      seq);
      add_chunk(seq, n);
    }
  }
  return plan;
}

void Scheduler::UpdateFromOutput(const StepPlan& plan, const std::vector<ChunkOutput>& outputs) {
  LCD_CHECK(outputs.size() == plan.chunks.size())
      << outputs.size() << " outputs for " << plan.chunks.size() << " chunks";
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    const ScheduledChunk& chunk = plan.chunks[i];
    auto it = seqs_.find(chunk.seq_id);
    LCD_CHECK(it != seqs_.end()) << "unknown sequence " << chunk.seq_id;
    SchedSequence* seq = it->second.get();
    LCD_CHECK(seq->num_computed == chunk.start_pos) << "plan applied twice or out of order";
    seq->num_computed += chunk.num_tokens;
    if (outputs[i].finished) {
      Remove(chunk.seq_id);
      continue;
    }
    if (chunk.samples) {
      LCD_CHECK(outputs[i].new_token >= 0) << "sampling chunk without a token";
      seq->tokens.push_back(outputs[i].new_token);
    }
  }
}

}  // namespace lcd::runtime
