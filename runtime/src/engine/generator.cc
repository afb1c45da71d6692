// Generate: one request through a private Engine. The engine is the only
// code that turns logits into tokens (EOS, stop ids and strings, limits), so
// the CLI, the benchmarks and the parity harness run exactly what serves.
#include "lcd/runtime/generator.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/kv_cache.h"

namespace lcd::runtime {

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
  GenerationRequest request;
  request.prompt_tokens = prompt_ids;
  request.sampling = params;
  request.sampling.max_new_tokens = std::min(params.max_new_tokens, config.max_position_embeddings - prompt_len);

  // A cache exactly large enough for this one sequence; prompt chunks of
  // prefill_chunk tokens (the iteration budget).
  EngineOptions eo;
  eo.block_size = options.block_size;
  eo.kv_dtype = options.kv_dtype;
  const int64_t blocks =
      (prompt_len + request.sampling.max_new_tokens + options.block_size - 1) / options.block_size;
  eo.kv_cache_bytes = KvCache::BytesForBlocks(config.num_layers, model.KvLayoutFor(options.block_size, options.kv_dtype),
                                           blocks);
  eo.max_num_seqs = 1;
  eo.max_tokens_per_iteration = options.prefill_chunk;
  eo.max_waiting = 1;
  // Non-owning: the caller's model and tokenizer outlive this call.
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                       Engine::Create(std::shared_ptr<Model>(std::shared_ptr<Model>(), &model),
                                      std::shared_ptr<const Tokenizer>(std::shared_ptr<const Tokenizer>(), tokenizer),
                                      eo));
  const absl::Time t_start = absl::Now();
  LCD_ASSIGN_OR_RETURN(std::shared_ptr<RequestHandle> handle, engine->Submit(std::move(request)));

  GenerationResult result;
  result.prompt_tokens = prompt_len;
  absl::Time t_first = t_start;
  bool cancelled = false;
  GenerationEvent ev;
  while (handle->Next(&ev)) {
    // After the callback asked to stop, the engine may still deliver tokens
    // it computed before it saw the cancel: they are not part of the result.
    if (!cancelled) {
      for (size_t i = 0; i < ev.token_ids.size(); ++i) {
        result.output_ids.push_back(ev.token_ids[i]);
        if (result.output_ids.size() == 1) t_first = absl::Now();
        // An event carries one token; its text belongs to that token.
        const std::string_view text = i + 1 == ev.token_ids.size() ? std::string_view(ev.text) : std::string_view();
        result.text += text;
        if (!on_token(ev.token_ids[i], text) && ev.finish == FinishReason::kNone) {
          cancelled = true;
          handle->Cancel();
          break;
        }
      }
    }
    if (ev.finish == FinishReason::kNone) continue;
    if (ev.finish == FinishReason::kError) return ev.error;
    result.finish_reason = cancelled ? FinishReason::kCancelled : ev.finish;
  }
  const absl::Time t_end = absl::Now();
  result.prefill_seconds = absl::ToDoubleSeconds(t_first - t_start);
  if (result.output_ids.size() > 1) result.decode_seconds = absl::ToDoubleSeconds(t_end - t_first);
  result.generated_tokens = static_cast<int64_t>(result.output_ids.size());
  return result;
}

}  // namespace lcd::runtime
