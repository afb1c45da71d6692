#include "lcd/runtime/generator.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/kv_cache.h"

namespace lcd::runtime {
namespace {

// Releases output text while holding back any tail that could still grow
// into a stop string. Text before the hold-back point can never be part of a
// match: for every earlier start position, the text from there on is neither
// a stop string nor a prefix of one.
class StopStringFilter {
 public:
  explicit StopStringFilter(const std::vector<std::string>& stops) : stops_(stops) {}

  // Adds `piece`; returns text now safe to emit. Sets *stopped when a stop
  // string appeared (the returned text then ends right before it). `final`
  // releases everything held back.
  std::string Add(std::string_view piece, bool final, bool* stopped) {
    pending_.append(piece);
    *stopped = false;
    size_t first = std::string::npos;
    for (const std::string& s : stops_) first = std::min(first, pending_.find(s));
    std::string out;
    if (first != std::string::npos) {
      *stopped = true;
      out = pending_.substr(0, first);
      pending_.clear();
      return out;
    }
    size_t hold = 0;
    if (!final) {
      for (const std::string& s : stops_) {
        for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k) {
          if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
            hold = k;
            break;
          }
        }
      }
    }
    out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
    return out;
  }

 private:
  const std::vector<std::string>& stops_;
  std::string pending_;
};

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool Contains(const std::vector<int32_t>& v, int32_t x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

absl::StatusOr<GenerationResult> Generate(Model& model, const Tokenizer* tokenizer,
                                          const std::vector<int32_t>& prompt_ids,
                                          const SamplingParams& params, const TokenCallback& on_token,
                                          const GenerateOptions& options) {
  LCD_RETURN_IF_ERROR(params.Validate());
  if (tokenizer == nullptr && !params.stop_strings.empty()) {
    return absl::InvalidArgumentError("stop_strings need a tokenizer");
  }
  if (options.prefill_chunk < 1 || options.block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("invalid generate options: prefill_chunk=",
                                                   options.prefill_chunk, " block_size=", options.block_size));
  }
  if (prompt_ids.empty()) return absl::InvalidArgumentError("empty prompt");
  const ModelConfig& config = model.config();
  const int64_t prompt_len = static_cast<int64_t>(prompt_ids.size());
  if (prompt_len >= config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt_len,
                                                   " tokens leaves no room in the context of ",
                                                   config.max_position_embeddings));
  }
  const int64_t max_new = std::min(params.max_new_tokens, config.max_position_embeddings - prompt_len);

  // One sequence: a private cache exactly large enough, blocks 0..n-1 in order.
  const int64_t num_blocks = (prompt_len + max_new + options.block_size - 1) / options.block_size;
  LCD_ASSIGN_OR_RETURN(KvCache cache,
                       KvCache::Create(config.num_layers, model.KvLayoutFor(options.block_size), num_blocks));
  std::vector<int32_t> block_table(static_cast<size_t>(num_blocks));
  for (int64_t b = 0; b < num_blocks; ++b) block_table[b] = static_cast<int32_t>(b);

  Sampler sampler(params);
  std::optional<IncrementalDetokenizer> detok;
  if (tokenizer != nullptr) detok.emplace(tokenizer, /*skip_special=*/true);
  StopStringFilter stop_filter(params.stop_strings);

  GenerationResult result;
  result.prompt_tokens = prompt_len;
  const auto t_start = std::chrono::steady_clock::now();

  std::vector<SeqBatchEntry> batch(1);
  batch[0].block_table = &block_table;
  ForwardOutput fwd;
  for (int64_t start = 0; start < prompt_len; start += options.prefill_chunk) {
    const int64_t end = std::min(prompt_len, start + options.prefill_chunk);
    batch[0].tokens.assign(prompt_ids.begin() + start, prompt_ids.begin() + end);
    batch[0].start_pos = start;
    LCD_ASSIGN_OR_RETURN(fwd, model.Forward(batch, cache));
  }

  auto t_decode = t_start;
  const int64_t vocab = config.vocab_size;
  while (true) {
    // Forward returns exactly one row here (all_logits is false).
    const int32_t token = sampler.Sample(fwd.logits.data(), vocab, prompt_ids, result.output_ids);
    result.output_ids.push_back(token);

    std::optional<FinishReason> reason;
    if (!params.ignore_eos && Contains(config.eos_token_ids, token)) {
      reason = FinishReason::kEos;
    } else if (Contains(params.stop_token_ids, token)) {
      reason = FinishReason::kStop;
    } else if (static_cast<int64_t>(result.output_ids.size()) >= max_new) {
      reason = FinishReason::kLength;
    }
    std::string piece;
    if (detok.has_value()) {
      // Stop tokens are not part of the text (as in vLLM).
      const bool is_stop = reason == FinishReason::kEos || reason == FinishReason::kStop;
      if (!is_stop) piece = detok->Push(token);
      if (reason.has_value()) piece += detok->Flush();
    }
    bool hit_stop_string = false;
    std::string emit = stop_filter.Add(piece, reason.has_value(), &hit_stop_string);
    if (hit_stop_string) reason = FinishReason::kStop;
    result.text += emit;
    const bool keep_going = on_token(token, emit);
    if (result.output_ids.size() == 1) {
      result.prefill_seconds = SecondsSince(t_start);
      t_decode = std::chrono::steady_clock::now();
    }
    if (!keep_going && !reason.has_value()) reason = FinishReason::kCancelled;
    if (reason.has_value()) {
      result.finish_reason = *reason;
      break;
    }
    batch[0].tokens.assign(1, token);
    batch[0].start_pos = prompt_len + static_cast<int64_t>(result.output_ids.size()) - 1;
    LCD_ASSIGN_OR_RETURN(fwd, model.Forward(batch, cache));
  }
  if (result.output_ids.size() > 1) result.decode_seconds = SecondsSince(t_decode);
  result.generated_tokens = static_cast<int64_t>(result.output_ids.size());
  return result;
}

}  // namespace lcd::runtime
