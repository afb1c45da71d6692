// Binds a Hugging Face Llama/Mistral/Qwen2 checkpoint's tensors to the
// decoder's weight slots, checking every dtype and shape up front so Forward
// never reads out of bounds.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "llama_model.h"

namespace lcd::runtime {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<TensorView> GetChecked(const Checkpoint& ckpt, const std::string& name,
                                      const std::vector<int64_t>& shape) {
  absl::StatusOr<TensorView> t = ckpt.Get(name);
  if (!t.ok()) {
    return absl::NotFoundError(absl::StrCat("checkpoint has no tensor ", name, " (", t.status().message(), ")"));
  }
  absl::StatusOr<kernels::DType> dtype = ToKernelDType(t->dtype);
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ", std::string(StDTypeName(t->dtype)),
                                                   "; expected F32, F16 or BF16"));
  }
  if (t->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ", ShapeString(t->shape),
                                                   "; expected ", ShapeString(shape)));
  }
  return t;
}

absl::StatusOr<kernels::MatrixView> GetMatrix(const Checkpoint& ckpt, const std::string& name, int64_t rows,
                                              int64_t cols) {
  LCD_ASSIGN_OR_RETURN(TensorView t, GetChecked(ckpt, name, {rows, cols}));
  kernels::MatrixView m;
  m.data = t.data;
  m.dtype = *ToKernelDType(t.dtype);
  m.rows = rows;
  m.cols = cols;
  return m;
}

absl::StatusOr<std::vector<float>> GetVector(const Checkpoint& ckpt, const std::string& name, int64_t n) {
  LCD_ASSIGN_OR_RETURN(TensorView t, GetChecked(ckpt, name, {n}));
  std::vector<float> out(static_cast<size_t>(n));
  kernels::ConvertToF32(t.data, *ToKernelDType(t.dtype), static_cast<size_t>(n), out.data());
  return out;
}

}  // namespace

absl::StatusOr<LlamaWeights> BindLlamaWeights(const ModelConfig& c, const Checkpoint& ckpt) {
  const int64_t hidden = c.hidden_size;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t inter = c.intermediate_size;

  // Llama's optional MLP biases (config mlp_bias) are not modelled; refuse
  // rather than silently computing without them.
  if (ckpt.Has("model.layers.0.mlp.gate_proj.bias")) {
    return absl::UnimplementedError("checkpoint has MLP biases (mlp_bias=true), which are not supported");
  }

  LlamaWeights w;
  LCD_ASSIGN_OR_RETURN(w.embed_tokens, GetMatrix(ckpt, "model.embed_tokens.weight", c.vocab_size, hidden));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;
  } else {
    LCD_ASSIGN_OR_RETURN(w.lm_head, GetMatrix(ckpt, "lm_head.weight", c.vocab_size, hidden));
  }
  LCD_ASSIGN_OR_RETURN(w.final_norm, GetVector(ckpt, "model.norm.weight", hidden));

  // Qwen2 always has q/k/v biases and no o_proj bias; Llama's attention_bias
  // adds all four (transformers' LlamaAttention).
  const bool qkv_bias = c.attention_bias || c.arch == Architecture::kQwen2;
  const bool o_bias = c.attention_bias && c.arch == Architecture::kLlama;

  w.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LlamaLayerWeights& l = w.layers[i];
    LCD_ASSIGN_OR_RETURN(l.q_proj, GetMatrix(ckpt, p + "self_attn.q_proj.weight", q_dim, hidden));
    LCD_ASSIGN_OR_RETURN(l.k_proj, GetMatrix(ckpt, p + "self_attn.k_proj.weight", kv_dim, hidden));
    LCD_ASSIGN_OR_RETURN(l.v_proj, GetMatrix(ckpt, p + "self_attn.v_proj.weight", kv_dim, hidden));
    LCD_ASSIGN_OR_RETURN(l.o_proj, GetMatrix(ckpt, p + "self_attn.o_proj.weight", hidden, q_dim));
    if (qkv_bias) {
      LCD_ASSIGN_OR_RETURN(l.q_bias, GetVector(ckpt, p + "self_attn.q_proj.bias", q_dim));
      LCD_ASSIGN_OR_RETURN(l.k_bias, GetVector(ckpt, p + "self_attn.k_proj.bias", kv_dim));
      LCD_ASSIGN_OR_RETURN(l.v_bias, GetVector(ckpt, p + "self_attn.v_proj.bias", kv_dim));
    }
    if (o_bias) {
      LCD_ASSIGN_OR_RETURN(l.o_bias, GetVector(ckpt, p + "self_attn.o_proj.bias", hidden));
    }
    LCD_ASSIGN_OR_RETURN(l.gate_proj, GetMatrix(ckpt, p + "mlp.gate_proj.weight", inter, hidden));
    LCD_ASSIGN_OR_RETURN(l.up_proj, GetMatrix(ckpt, p + "mlp.up_proj.weight", inter, hidden));
    LCD_ASSIGN_OR_RETURN(l.down_proj, GetMatrix(ckpt, p + "mlp.down_proj.weight", hidden, inter));
    LCD_ASSIGN_OR_RETURN(l.input_norm, GetVector(ckpt, p + "input_layernorm.weight", hidden));
    LCD_ASSIGN_OR_RETURN(l.post_attention_norm, GetVector(ckpt, p + "post_attention_layernorm.weight", hidden));
  }
  return w;
}

}  // namespace lcd::runtime
