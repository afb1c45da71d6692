// The architecture description of a Hugging Face checkpoint (config.json) and
// its generation defaults (generation_config.json).
//
// Supported model_type / architectures: llama (Llama 2/3, incl. GQA,
// rope_theta, "llama3" and "linear" rope scaling, tied embeddings), mistral,
// qwen2 (q/k/v biases). Anything else is refused with a message naming it.
#ifndef LCD_RUNTIME_MODEL_CONFIG_H_
#define LCD_RUNTIME_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lcd::runtime {

enum class Architecture { kLlama, kMistral, kQwen2 };
std::string_view ArchitectureName(Architecture a);

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;                 // llama3 only
  double high_freq_factor = 4.0;                // llama3 only
  // llama3 only; transformers takes max_position_embeddings when absent.
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  // When absent: num_heads for llama, 8 for mistral, 32 for qwen2 (the
  // transformers class defaults); an explicit null means num_heads.
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;      // hidden_size / num_heads when absent
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2: always true)
  std::optional<int64_t> sliding_window;  // Mistral; recorded, see model.h
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;
  std::string torch_dtype;  // As declared ("float32", "bfloat16", ...); informational.

  // inv_freq[i] for i < head_dim/2 with rope scaling applied, as in
  // transformers' modeling_rope_utils (computed in double, rounded once to
  // float: within a few float ulps of transformers' float32 values).
  std::vector<float> RopeInvFreq() const;

  // The longest context this runtime serves exactly: max_position_embeddings,
  // or the sliding window when smaller (attention always spans the whole
  // context here, so longer contexts are refused, never windowed silently).
  int64_t ServableContext() const {
    return sliding_window.has_value() && *sliding_window < max_position_embeddings ? *sliding_window
                                                                                   : max_position_embeddings;
  }
};

// Parses and validates config.json text as transformers 5.x reads it (also
// the 4.x keys "rope_scaling" and top-level "rope_theta"): positive sizes,
// each at most 2^24 (positions 2^30), num_heads divisible by num_kv_heads,
// even head_dim, known architecture. Errors name the field: InvalidArgument
// for malformed or missing values, Unimplemented for a well-formed but
// unsupported feature (architecture, rope type other than default/linear/
// llama3, hidden_act other than silu, mlp_bias, partial rotary).
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

// generation_config.json: the defaults a model's authors recommend.
struct GenerationDefaults {
  std::vector<int32_t> eos_token_ids;
  std::optional<int32_t> bos_token_id;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> repetition_penalty;
  std::optional<bool> do_sample;
  std::optional<int64_t> max_new_tokens;
};
absl::StatusOr<GenerationDefaults> ParseGenerationConfig(std::string_view json);
// Returns defaults with nothing set when the file is absent.
absl::StatusOr<GenerationDefaults> LoadGenerationConfig(const std::string& model_dir);

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_MODEL_CONFIG_H_
