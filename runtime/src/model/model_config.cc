// config.json / generation_config.json parsing. Defaults and semantics follow
// transformers 5.x (LlamaConfig, MistralConfig, Qwen2Config and
// modeling_rope_utils), including its backward-compatible reading of the
// 4.x keys "rope_scaling" and top-level "rope_theta".
#include "lcd/runtime/model_config.h"

#include <cmath>
#include <limits>
#include <numbers>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "src/json_util.h"

namespace lcd::runtime {
namespace {

using json = nlohmann::json;
using json_util::Sv;

constexpr std::string_view kWhat = "config.json";
constexpr int64_t kMaxDimension = int64_t{1} << 24;
constexpr int64_t kMaxPositions = int64_t{1} << 30;

absl::Status FieldError(std::string_view key, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(Sv(kWhat), ": field \"", Sv(key), "\" ", Sv(problem)));
}

// Absent and null both mean "use the default", as in transformers where a
// None argument selects the default.
const json* Get(const json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<int64_t>> OptInt(const json& obj, std::string_view key) {
  const json* v = Get(obj, key);
  if (v == nullptr) return std::nullopt;
  std::optional<int64_t> i = json_util::AsInt64(*v);
  if (!i) {
    return FieldError(key, absl::StrCat("must be an integer, got ", Sv(json_util::TypeName(*v))));
  }
  return i;
}

absl::StatusOr<int64_t> IntOr(const json& obj, std::string_view key, int64_t def) {
  LCD_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptInt(obj, key));
  return v.value_or(def);
}

absl::StatusOr<int64_t> RequiredInt(const json& obj, std::string_view key) {
  LCD_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptInt(obj, key));
  if (!v) return FieldError(key, "is missing");
  return *v;
}

absl::StatusOr<std::optional<double>> OptDouble(const json& obj, std::string_view key) {
  const json* v = Get(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) {
    return FieldError(key, absl::StrCat("must be a number, got ", Sv(json_util::TypeName(*v))));
  }
  return v->get<double>();
}

absl::StatusOr<double> DoubleOr(const json& obj, std::string_view key, double def) {
  LCD_ASSIGN_OR_RETURN(std::optional<double> v, OptDouble(obj, key));
  return v.value_or(def);
}

absl::StatusOr<std::optional<bool>> OptBool(const json& obj, std::string_view key) {
  const json* v = Get(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return FieldError(key, "must be true or false");
  return v->get<bool>();
}

// bos/eos ids: an integer, a list of integers, or null.
absl::StatusOr<std::vector<int32_t>> TokenIds(const json& obj, std::string_view key) {
  std::vector<int32_t> ids;
  const json* v = Get(obj, key);
  if (v == nullptr) return ids;
  auto one = [&](const json& e) -> absl::Status {
    std::optional<int64_t> i = json_util::AsInt64(e);
    if (!i || *i < 0 || *i > std::numeric_limits<int32_t>::max()) {
      return FieldError(key,
                        absl::StrCat("must hold non-negative 32-bit token ids, got ", e.dump()));
    }
    ids.push_back(static_cast<int32_t>(*i));
    return absl::OkStatus();
  };
  if (v->is_array()) {
    for (const json& e : *v) LCD_RETURN_IF_ERROR(one(e));
  } else {
    LCD_RETURN_IF_ERROR(one(*v));
  }
  return ids;
}

absl::StatusOr<Architecture> ArchitectureOf(const json& root) {
  if (const json* mt = Get(root, "model_type")) {
    if (!mt->is_string()) return FieldError("model_type", "must be a string");
    const std::string& s = mt->get_ref<const std::string&>();
    if (s == "llama") return Architecture::kLlama;
    if (s == "mistral") return Architecture::kMistral;
    if (s == "qwen2") return Architecture::kQwen2;
    return absl::UnimplementedError(absl::StrCat(
        Sv(kWhat), ": model_type \"", s, "\" is not supported (supported: llama, mistral, qwen2)"));
  }
  if (const json* archs = Get(root, "architectures")) {
    if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
      return FieldError("architectures", "must be a non-empty list of strings");
    }
    const std::string& s = (*archs)[0].get_ref<const std::string&>();
    if (s == "LlamaForCausalLM") return Architecture::kLlama;
    if (s == "MistralForCausalLM") return Architecture::kMistral;
    if (s == "Qwen2ForCausalLM") return Architecture::kQwen2;
    return absl::UnimplementedError(absl::StrCat(
        Sv(kWhat), ": architecture \"", s,
        "\" is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(Sv(kWhat), ": neither \"model_type\" nor \"architectures\" is present"));
}

// Mirrors convert_rope_params_to_dict + standardize_rope_params: the 4.x key
// "rope_scaling" wins over "rope_parameters"; rope_theta comes from the dict,
// else the top level, else 10000; the type from "rope_type", else "type".
absl::Status ParseRope(const json& root, ModelConfig& cfg) {
  const json* params = Get(root, "rope_scaling");
  std::string_view params_key = "rope_scaling";
  if (params == nullptr || (params->is_object() && params->empty())) {
    params = Get(root, "rope_parameters");
    params_key = "rope_parameters";
  }
  LCD_ASSIGN_OR_RETURN(cfg.rope_theta, DoubleOr(root, "rope_theta", 10000.0));
  if (params == nullptr) return absl::OkStatus();
  if (!params->is_object()) return FieldError(params_key, "must be an object");
  for (const auto& [k, v] : params->items()) {
    if (v.is_object()) {
      return absl::UnimplementedError(absl::StrCat(Sv(kWhat), ": per-layer-type \"", Sv(params_key),
                                                   "\" (\"", k, "\") are not supported"));
    }
  }
  LCD_ASSIGN_OR_RETURN(cfg.rope_theta, DoubleOr(*params, "rope_theta", cfg.rope_theta));
  LCD_ASSIGN_OR_RETURN(double partial, DoubleOr(*params, "partial_rotary_factor", 1.0));
  if (partial != 1.0) {
    return absl::UnimplementedError(
        absl::StrCat(Sv(kWhat), ": partial_rotary_factor ", partial, " is not supported"));
  }
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (const json* t = Get(*params, key)) {
      if (!t->is_string())
        return FieldError(absl::StrCat(Sv(params_key), ".", key), "must be a string");
      type = t->get<std::string>();
      break;
    }
  }
  RopeScaling& rs = cfg.rope_scaling;
  auto required = [&](std::string_view key) -> absl::StatusOr<double> {
    LCD_ASSIGN_OR_RETURN(std::optional<double> v, OptDouble(*params, key));
    if (!v) {
      return FieldError(absl::StrCat(Sv(params_key), ".", Sv(key)),
                        absl::StrCat("is missing (required by rope type \"", type, "\")"));
    }
    return *v;
  };
  if (type == "default") {
    rs = RopeScaling{};
  } else if (type == "linear") {
    rs.type = RopeScaling::Type::kLinear;
    LCD_ASSIGN_OR_RETURN(rs.factor, required("factor"));
  } else if (type == "llama3") {
    rs.type = RopeScaling::Type::kLlama3;
    LCD_ASSIGN_OR_RETURN(rs.factor, required("factor"));
    LCD_ASSIGN_OR_RETURN(rs.low_freq_factor, required("low_freq_factor"));
    LCD_ASSIGN_OR_RETURN(rs.high_freq_factor, required("high_freq_factor"));
    // transformers falls back to max_position_embeddings here.
    LCD_ASSIGN_OR_RETURN(
        rs.original_max_position_embeddings,
        IntOr(*params, "original_max_position_embeddings", cfg.max_position_embeddings));
    if (!(rs.high_freq_factor > rs.low_freq_factor) || !(rs.low_freq_factor > 0) ||
        rs.original_max_position_embeddings <= 0) {
      return FieldError(params_key,
                        "needs 0 < low_freq_factor < high_freq_factor and a positive "
                        "original_max_position_embeddings");
    }
  } else {
    return absl::UnimplementedError(
        absl::StrCat(Sv(kWhat), ": rope type \"", type,
                     "\" is not supported (supported: default, linear, llama3)"));
  }
  if (rs.type != RopeScaling::Type::kNone && !(rs.factor > 0 && std::isfinite(rs.factor))) {
    return FieldError(absl::StrCat(Sv(params_key), ".factor"), "must be a positive number");
  }
  return absl::OkStatus();
}

absl::Status Validate(const ModelConfig& c) {
  const std::pair<const char*, int64_t> positive[] = {
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position_embeddings},
  };
  for (const auto& [name, value] : positive) {
    if (value <= 0) return FieldError(name, absl::StrCat("must be positive, got ", value));
  }
  // Generous caps far above any real model, so that products of sizes that
  // later code forms (weights, KV cache, inv_freq) cannot overflow or ask for
  // absurd allocations on a hostile config.
  const std::pair<const char*, int64_t> capped[] = {
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"head_dim", c.head_dim},
  };
  for (const auto& [name, value] : capped) {
    if (value > kMaxDimension) {
      return FieldError(name, absl::StrCat("= ", value, " exceeds the limit of ", kMaxDimension));
    }
  }
  if (c.max_position_embeddings > kMaxPositions) {
    return FieldError(
        "max_position_embeddings",
        absl::StrCat("= ", c.max_position_embeddings, " exceeds the limit of ", kMaxPositions));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return FieldError(
        "num_key_value_heads",
        absl::StrCat("(", c.num_kv_heads, ") must divide num_attention_heads (", c.num_heads, ")"));
  }
  if (c.head_dim % 2 != 0)
    return FieldError("head_dim", absl::StrCat("must be even, got ", c.head_dim));
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) {
    return FieldError("rms_norm_eps", "must be a positive number");
  }
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
    return FieldError("rope_theta", "must be a positive number");
  }
  if (c.sliding_window && *c.sliding_window <= 0)
    return FieldError("sliding_window", "must be positive");
  return absl::OkStatus();
}

}  // namespace

std::string_view ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kMistral:
      return "mistral";
    case Architecture::kQwen2:
      return "qwen2";
  }
  return "unknown";
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view text) {
  LCD_ASSIGN_OR_RETURN(json root, json_util::ParseJson(text, kWhat));
  if (!root.is_object()) return absl::InvalidArgumentError("config.json: must be a JSON object");
  ModelConfig c;
  LCD_ASSIGN_OR_RETURN(c.arch, ArchitectureOf(root));
  LCD_ASSIGN_OR_RETURN(c.vocab_size, RequiredInt(root, "vocab_size"));
  LCD_ASSIGN_OR_RETURN(c.hidden_size, RequiredInt(root, "hidden_size"));
  LCD_ASSIGN_OR_RETURN(c.intermediate_size, RequiredInt(root, "intermediate_size"));
  LCD_ASSIGN_OR_RETURN(c.num_layers, RequiredInt(root, "num_hidden_layers"));
  LCD_ASSIGN_OR_RETURN(c.num_heads, RequiredInt(root, "num_attention_heads"));
  if (c.num_heads <= 0) return FieldError("num_attention_heads", "must be positive");

  // Class defaults where the key is absent: LlamaConfig None -> num_heads,
  // MistralConfig 8, Qwen2Config 32 (an explicit null means num_heads).
  int64_t kv_default = c.num_heads;
  if (!root.contains("num_key_value_heads")) {
    if (c.arch == Architecture::kMistral) kv_default = 8;
    if (c.arch == Architecture::kQwen2) kv_default = 32;
  }
  LCD_ASSIGN_OR_RETURN(c.num_kv_heads, IntOr(root, "num_key_value_heads", kv_default));
  LCD_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, OptInt(root, "head_dim"));
  if (!head_dim && c.hidden_size % c.num_heads != 0) {
    return FieldError("hidden_size", absl::StrCat("(", c.hidden_size,
                                                  ") must be a multiple of num_attention_heads (",
                                                  c.num_heads, ") when head_dim is absent"));
  }
  c.head_dim = head_dim.value_or(c.hidden_size / c.num_heads);

  const int64_t max_pos_default = c.arch == Architecture::kLlama     ? 2048
                                  : c.arch == Architecture::kMistral ? 4096 * 32
                                                                     : 32768;
  LCD_ASSIGN_OR_RETURN(c.max_position_embeddings,
                       IntOr(root, "max_position_embeddings", max_pos_default));
  LCD_ASSIGN_OR_RETURN(c.rms_norm_eps, DoubleOr(root, "rms_norm_eps", 1e-6));
  LCD_ASSIGN_OR_RETURN(std::optional<bool> tie, OptBool(root, "tie_word_embeddings"));
  c.tie_word_embeddings = tie.value_or(false);
  LCD_ASSIGN_OR_RETURN(std::optional<bool> attn_bias, OptBool(root, "attention_bias"));
  // Qwen2's attention always has q/k/v biases; the config has no switch.
  c.attention_bias = c.arch == Architecture::kQwen2 ? true : attn_bias.value_or(false);
  LCD_ASSIGN_OR_RETURN(std::optional<bool> mlp_bias, OptBool(root, "mlp_bias"));
  if (mlp_bias.value_or(false)) {
    return absl::UnimplementedError("config.json: mlp_bias=true is not supported");
  }
  if (const json* act = Get(root, "hidden_act")) {
    if (!act->is_string() || act->get<std::string>() != "silu") {
      return absl::UnimplementedError(absl::StrCat("config.json: hidden_act ", act->dump(),
                                                   " is not supported (only \"silu\")"));
    }
  }

  if (c.arch == Architecture::kMistral) {
    // Absent -> 4096 (MistralConfig's default); null -> full attention.
    if (!root.contains("sliding_window")) {
      c.sliding_window = 4096;
    } else {
      LCD_ASSIGN_OR_RETURN(c.sliding_window, OptInt(root, "sliding_window"));
    }
  } else if (c.arch == Architecture::kQwen2) {
    LCD_ASSIGN_OR_RETURN(std::optional<bool> use_sw, OptBool(root, "use_sliding_window"));
    if (use_sw.value_or(false)) {
      if (!root.contains("sliding_window")) {
        c.sliding_window = 4096;
      } else {
        LCD_ASSIGN_OR_RETURN(c.sliding_window, OptInt(root, "sliding_window"));
      }
    }
  }

  const std::vector<int32_t> default_bos =
      c.arch == Architecture::kQwen2 ? std::vector<int32_t>{} : std::vector<int32_t>{1};
  const std::vector<int32_t> default_eos =
      c.arch == Architecture::kQwen2 ? std::vector<int32_t>{} : std::vector<int32_t>{2};
  LCD_ASSIGN_OR_RETURN(c.bos_token_ids, TokenIds(root, "bos_token_id"));
  if (!root.contains("bos_token_id")) c.bos_token_ids = default_bos;
  LCD_ASSIGN_OR_RETURN(c.eos_token_ids, TokenIds(root, "eos_token_id"));
  if (!root.contains("eos_token_id")) c.eos_token_ids = default_eos;

  for (const char* key : {"dtype", "torch_dtype"}) {
    if (const json* d = Get(root, key); d != nullptr && d->is_string()) {
      c.torch_dtype = d->get<std::string>();
      break;
    }
  }
  LCD_RETURN_IF_ERROR(ParseRope(root, c));
  LCD_RETURN_IF_ERROR(Validate(c));
  return c;
}

std::vector<float> ModelConfig::RopeInvFreq() const {
  // Computed in double and rounded once; transformers computes the same
  // formulas in float32, so values agree to within a few float32 ulps.
  const int64_t half = head_dim / 2;
  std::vector<float> out(static_cast<size_t>(half));
  const double dim = static_cast<double>(head_dim);
  const RopeScaling& rs = rope_scaling;
  const double old_ctx = static_cast<double>(rs.original_max_position_embeddings);
  const double low_freq_wavelen = old_ctx / rs.low_freq_factor;
  const double high_freq_wavelen = old_ctx / rs.high_freq_factor;
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(rope_theta, static_cast<double>(2 * i) / dim);
    if (rs.type == RopeScaling::Type::kLinear) {
      f /= rs.factor;
    } else if (rs.type == RopeScaling::Type::kLlama3) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_freq_wavelen) {
        f /= rs.factor;
      } else if (!(wavelen < high_freq_wavelen)) {
        const double smooth =
            (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = (1.0 - smooth) * f / rs.factor + smooth * f;
      }
    }
    out[static_cast<size_t>(i)] = static_cast<float>(f);
  }
  return out;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  LCD_ASSIGN_OR_RETURN(std::string text, json_util::ReadTextFile(model_dir + "/config.json"));
  auto cfg = ParseModelConfig(text);
  if (!cfg.ok()) {
    return absl::Status(cfg.status().code(), absl::StrCat(model_dir, "/", cfg.status().message()));
  }
  return cfg;
}

absl::StatusOr<GenerationDefaults> ParseGenerationConfig(std::string_view text) {
  LCD_ASSIGN_OR_RETURN(json root, json_util::ParseJson(text, "generation_config.json"));
  if (!root.is_object()) {
    return absl::InvalidArgumentError("generation_config.json: must be a JSON object");
  }
  GenerationDefaults g;
  LCD_ASSIGN_OR_RETURN(g.eos_token_ids, TokenIds(root, "eos_token_id"));
  LCD_ASSIGN_OR_RETURN(std::vector<int32_t> bos, TokenIds(root, "bos_token_id"));
  if (bos.size() > 1) return FieldError("bos_token_id", "must be a single id");
  if (!bos.empty()) g.bos_token_id = bos[0];
  LCD_ASSIGN_OR_RETURN(g.temperature, OptDouble(root, "temperature"));
  LCD_ASSIGN_OR_RETURN(g.top_p, OptDouble(root, "top_p"));
  LCD_ASSIGN_OR_RETURN(g.top_k, OptInt(root, "top_k"));
  LCD_ASSIGN_OR_RETURN(g.repetition_penalty, OptDouble(root, "repetition_penalty"));
  LCD_ASSIGN_OR_RETURN(g.do_sample, OptBool(root, "do_sample"));
  LCD_ASSIGN_OR_RETURN(g.max_new_tokens, OptInt(root, "max_new_tokens"));
  if (g.temperature && !(*g.temperature >= 0)) return FieldError("temperature", "must be >= 0");
  if (g.top_p && !(*g.top_p > 0 && *g.top_p <= 1)) return FieldError("top_p", "must be in (0, 1]");
  if (g.top_k && *g.top_k < 0) return FieldError("top_k", "must be >= 0");
  if (g.repetition_penalty && !(*g.repetition_penalty > 0)) {
    return FieldError("repetition_penalty", "must be > 0");
  }
  if (g.max_new_tokens && *g.max_new_tokens <= 0)
    return FieldError("max_new_tokens", "must be positive");
  return g;
}

absl::StatusOr<GenerationDefaults> LoadGenerationConfig(const std::string& model_dir) {
  auto text = json_util::ReadTextFile(model_dir + "/generation_config.json");
  if (absl::IsNotFound(text.status())) return GenerationDefaults{};
  if (!text.ok()) return text.status();
  return ParseGenerationConfig(*text);
}

}  // namespace lcd::runtime
