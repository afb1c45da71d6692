// Single-sequence generation for the `lcd generate` CLI, benchmarks and the
// parity harness: prompt ids -> prefill (in chunks) -> decode one token per
// step until a stop condition. It runs the request through a private Engine
// (engine.h), the one generation loop lcdserve has, so what the CLI and the
// parity tests run is what the server serves.
//
// Stop conditions, checked after every sampled token, in this order:
//   1. the token is one of the model's EOS ids (config.json eos_token_id),
//      unless params.ignore_eos, or one of params.stop_token_ids;
//   2. the detokenized output contains one of params.stop_strings (the stop
//      string and anything after it are not part of the output text);
//   3. params.max_new_tokens tokens were generated, or the context reached
//      the model's max_position_embeddings.
//
// Thread safety: Generate drives `model` exclusively for its duration (Model
// is not reentrant); callers must not share a model with another thread
// meanwhile.
#ifndef LCD_RUNTIME_GENERATOR_H_
#define LCD_RUNTIME_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/runtime/engine.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/sampler.h"
#include "lcd/runtime/tokenizer.h"

namespace lcd::runtime {

// Finish reasons are the engine's (engine.h): kLength, kEos, kStop (a stop
// token id or stop string), kCancelled (the token callback returned false).

// Called once per generated token, in order. `text` is the output text that
// became final with this token: complete UTF-8, never part of a stop string,
// possibly empty (a partial character, a possible stop-string prefix held
// back, or a special token). Concatenating every `text` gives
// GenerationResult::text. Return false to stop generating (kCancelled).
using TokenCallback = std::function<bool(int32_t token_id, std::string_view text)>;

struct GenerateOptions {
  int64_t prefill_chunk = 256;  // Prompt tokens per Forward call (>= 1).
  int64_t block_size = 16;      // KV cache block size (>= 1).
  kernels::DType kv_dtype = kernels::DType::kF16;  // As EngineOptions::kv_dtype.
};

struct GenerationResult {
  FinishReason finish_reason = FinishReason::kLength;
  std::vector<int32_t> output_ids;  // Every generated token, including a final EOS/stop token.
  std::string text;                 // Detokenized output (special tokens skipped), stop string cut.
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;     // == output_ids.size().
  double prefill_seconds = 0.0;     // Prompt forward passes plus the first sample.
  double decode_seconds = 0.0;      // Every later step (forward + sample + callback).
};

// Generates a continuation of `prompt_ids`. `tokenizer` may be nullptr, in
// which case no text is produced and stop_strings must be empty.
// Errors: InvalidArgument for invalid params (SamplingParams::Validate), an
// empty prompt, a prompt at or beyond the model's context length, out-of-range
// token ids, or bad options; whatever Model::Forward or KvCache::Create
// return otherwise.
absl::StatusOr<GenerationResult> Generate(Model& model, const Tokenizer* tokenizer,
                                          const std::vector<int32_t>& prompt_ids,
                                          const SamplingParams& params, const TokenCallback& on_token,
                                          const GenerateOptions& options = {});

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_GENERATOR_H_
