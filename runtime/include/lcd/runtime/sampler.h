// Turns a row of logits into the next token.
//
// Order of operations (the Hugging Face / vLLM order):
//   1. repetition penalty (HF: logit / p if logit > 0 else logit * p, over
//      every token seen in prompt + output), then presence and frequency
//      penalties (OpenAI: logit -= presence * [count > 0] + frequency * count,
//      over output tokens only);
//   2. temperature == 0 (or top_k == 1) => greedy argmax (ties: lowest id);
//   3. otherwise logits / temperature, then top-k, top-p (nucleus, keeps the
//      smallest set whose probability mass >= top_p), min-p (drops tokens with
//      p < min_p * p_max), and a draw from the renormalised distribution.
//
// Reproducibility: a Sampler seeded with `seed` draws the same tokens for the
// same logits on every machine (its RNG is a fixed algorithm, not
// std::default_random_engine's implementation-defined one).
// Thread safety: a Sampler holds per-sequence RNG state; one per sequence.
#ifndef LCD_RUNTIME_SAMPLER_H_
#define LCD_RUNTIME_SAMPLER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace lcd::runtime {

struct SamplingParams {
  double temperature = 1.0;         // 0 = greedy. Valid: [0, 100].
  int64_t top_k = 0;                // 0 = off. Valid: >= 0.
  double top_p = 1.0;               // 1 = off. Valid: (0, 1].
  double min_p = 0.0;               // 0 = off. Valid: [0, 1].
  double repetition_penalty = 1.0;  // 1 = off. Valid: (0, 10].
  double presence_penalty = 0.0;    // Valid: [-2, 2].
  double frequency_penalty = 0.0;   // Valid: [-2, 2].
  std::optional<uint64_t> seed;     // Unset = seeded from a random device.
  int64_t max_new_tokens = 256;     // Valid: >= 1.
  std::vector<int32_t> stop_token_ids;   // In addition to the model's EOS ids.
  std::vector<std::string> stop_strings; // Matched on detokenized output text.
  bool ignore_eos = false;

  // InvalidArgument naming the first out-of-range field.
  absl::Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks the next token from `logits` (vocab_size values; modified in place
  // by penalties/temperature). `prompt_tokens` and `output_tokens` feed the
  // penalties.
  int32_t Sample(float* logits, int64_t vocab_size, const std::vector<int32_t>& prompt_tokens,
                 const std::vector<int32_t>& output_tokens);

  // log-softmax of the (penalised, temperature-scaled) distribution the last
  // Sample drew from, for the chosen token and the top `n` alternatives;
  // computed only when set_num_logprobs(n > 0) was called (greedy decoding
  // without logprobs costs one argmax pass over the logits).
  struct TokenLogprob {
    int32_t id;
    float logprob;
  };
  const std::vector<TokenLogprob>& last_top_logprobs() const { return last_top_; }
  float last_logprob() const { return last_logprob_; }
  void set_num_logprobs(int n) { num_logprobs_ = n; }

 private:
  // Draws from the truncated distribution (top-k, top-p, min-p).
  int32_t Draw(const float* logits, int64_t vocab_size, float max_logit);

  SamplingParams params_;
  uint64_t rng_state_[4];
  std::vector<int32_t> ids_;  // candidate ids, reused across calls
  int num_logprobs_ = 0;
  float last_logprob_ = 0.0f;
  std::vector<TokenLogprob> last_top_;
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SAMPLER_H_
