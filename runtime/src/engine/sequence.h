// Engine-private per-request state: what the engine thread keeps for one
// request beside the scheduler's token/block view of it (scheduler.h).
#ifndef LCD_RUNTIME_SRC_SEQUENCE_H_
#define LCD_RUNTIME_SRC_SEQUENCE_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "lcd/runtime/engine.h"
#include "lcd/runtime/sampler.h"
#include "lcd/runtime/tokenizer.h"

namespace lcd::runtime {

// Releases output text while holding back any tail that could still grow
// into a stop string. Text before the hold-back point can never be part of a
// match: for every earlier start, the text from there on is neither a stop
// string nor a prefix of one. Stop strings are valid UTF-8 and so start on a
// character boundary, so what is released is always whole characters.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds `piece` and returns the text now safe to emit. When a stop string
  // appears, *stopped is set and the returned text ends right before it (the
  // stop string itself is never emitted). `final` releases everything held.
  std::string Add(std::string_view piece, bool final, bool* stopped) {
    *stopped = false;
    pending_.append(piece);
    size_t first = std::string::npos;
    for (const std::string& s : stops_) first = std::min(first, pending_.find(s));
    if (first != std::string::npos) {
      *stopped = true;
      std::string out = pending_.substr(0, first);
      pending_.clear();
      return out;
    }
    size_t hold = 0;
    if (!final) {
      for (const std::string& s : stops_) {
        // Longest proper prefix of s that is a suffix of pending_.
        for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len) {
          if (std::string_view(pending_).substr(pending_.size() - len) == std::string_view(s).substr(0, len)) {
            hold = len;
            break;
          }
        }
      }
    }
    std::string out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
    return out;
  }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
};

// One request on the engine thread. Created by Submit, handed over through
// the engine's inbox (under its mutex), then touched only by the engine thread.
struct ActiveRequest {
  ActiveRequest(int64_t seq_id, GenerationRequest req, std::shared_ptr<RequestHandle> h,
                const Tokenizer* tokenizer)
      : id(seq_id),
        request(std::move(req)),
        handle(std::move(h)),
        sampler(request.sampling),
        detokenizer(tokenizer, /*skip_special=*/true),
        stop_filter(request.sampling.stop_strings) {
    sampler.set_num_logprobs(request.num_logprobs);
  }

  const int64_t id;  // The scheduler's sequence id.
  GenerationRequest request;
  std::shared_ptr<RequestHandle> handle;
  Sampler sampler;
  IncrementalDetokenizer detokenizer;
  StopStringFilter stop_filter;
  std::vector<int32_t> output_tokens;
  bool done = false;

  absl::Time submit_time = absl::Now();
  absl::Time first_scheduled = absl::InfinitePast();  // InfinitePast: not yet.
  absl::Time first_token = absl::InfinitePast();
  absl::Time last_token = absl::InfinitePast();
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_SEQUENCE_H_
