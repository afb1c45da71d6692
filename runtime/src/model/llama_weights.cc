// Binds a Llama/Mistral/Qwen2 model's tensors (from a Hugging Face checkpoint
// or an artifact, through TensorSource) to the decoder's weight slots,
// checking every shape up front so Forward never reads out of bounds.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "src/model/llama_model.h"

namespace lcd::runtime {
namespace {

absl::Status ShapeError(const std::string& name, const std::vector<int64_t>& got,
                        const std::vector<int64_t>& want) {
  return absl::InvalidArgumentError(
      absl::StrCat("tensor ", name, " has shape ", ShapeString(got), "; expected ", ShapeString(want)));
}

absl::StatusOr<kernels::MatrixView> GetDenseMatrix(const TensorSource& src, const std::string& name, int64_t rows,
                                                   int64_t cols) {
  LCD_ASSIGN_OR_RETURN(TensorView t, src.Dense(name));
  if (t.shape != std::vector<int64_t>{rows, cols}) return ShapeError(name, t.shape, {rows, cols});
  kernels::MatrixView m;
  m.data = t.data;
  m.dtype = *ToKernelDType(t.dtype);
  m.rows = rows;
  m.cols = cols;
  return m;
}

absl::StatusOr<LinearSource> GetLinear(const TensorSource& src, const std::string& name, int64_t rows,
                                       int64_t cols) {
  LCD_ASSIGN_OR_RETURN(LinearSource s, src.Linear(name));
  if (s.rows() != rows || s.cols() != cols) return ShapeError(name, {s.rows(), s.cols()}, {rows, cols});
  return s;
}

absl::StatusOr<std::vector<float>> GetVector(const TensorSource& src, const std::string& name, int64_t n) {
  LCD_ASSIGN_OR_RETURN(TensorView t, src.Dense(name));
  if (t.shape != std::vector<int64_t>{n}) return ShapeError(name, t.shape, {n});
  std::vector<float> out(static_cast<size_t>(n));
  kernels::ConvertToF32(t.data, *ToKernelDType(t.dtype), static_cast<size_t>(n), out.data());
  return out;
}

// Binds the named linear layers (same input) as one stacked weight.
absl::StatusOr<std::unique_ptr<LinearWeight>> GetStacked(const TensorSource& src,
                                                         const std::vector<std::string>& names,
                                                         const std::vector<int64_t>& rows, int64_t cols) {
  std::vector<LinearSource> parts;
  for (size_t i = 0; i < names.size(); ++i) {
    LCD_ASSIGN_OR_RETURN(LinearSource s, GetLinear(src, names[i], rows[i], cols));
    parts.push_back(s);
  }
  return StackLinearWeights(parts);
}

absl::Status BindLayer(const ModelConfig& c, const TensorSource& src, int64_t i, bool qkv_bias, bool o_bias,
                       LlamaLayerWeights& l) {
  const int64_t hidden = c.hidden_size;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t inter = c.intermediate_size;
  const std::string p = absl::StrCat("model.layers.", i, ".");
  LCD_ASSIGN_OR_RETURN(l.qkv, GetStacked(src,
                                         {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                                          p + "self_attn.v_proj.weight"},
                                         {q_dim, kv_dim, kv_dim}, hidden));
  LCD_ASSIGN_OR_RETURN(l.o_proj, GetStacked(src, {p + "self_attn.o_proj.weight"}, {hidden}, q_dim));
  if (qkv_bias) {
    for (const auto& [name, n] : {std::pair<std::string, int64_t>{"q", q_dim}, {"k", kv_dim}, {"v", kv_dim}}) {
      LCD_ASSIGN_OR_RETURN(std::vector<float> b, GetVector(src, p + "self_attn." + name + "_proj.bias", n));
      l.qkv_bias.insert(l.qkv_bias.end(), b.begin(), b.end());
    }
  }
  if (o_bias) {
    LCD_ASSIGN_OR_RETURN(l.o_bias, GetVector(src, p + "self_attn.o_proj.bias", hidden));
  }
  LCD_ASSIGN_OR_RETURN(l.gate_up,
                       GetStacked(src, {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}, {inter, inter}, hidden));
  LCD_ASSIGN_OR_RETURN(l.down_proj, GetStacked(src, {p + "mlp.down_proj.weight"}, {hidden}, inter));
  LCD_ASSIGN_OR_RETURN(l.input_norm, GetVector(src, p + "input_layernorm.weight", hidden));
  LCD_ASSIGN_OR_RETURN(l.post_attention_norm, GetVector(src, p + "post_attention_layernorm.weight", hidden));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LlamaWeights> BindLlamaWeights(const ModelConfig& c, const TensorSource& src,
                                              kernels::ThreadPool* pool,
                                              const std::function<bool()>& cancelled) {
  const int64_t hidden = c.hidden_size;

  // Llama's optional MLP biases (config mlp_bias) are not modelled; refuse
  // rather than silently computing without them.
  if (src.Has("model.layers.0.mlp.gate_proj.bias")) {
    return absl::UnimplementedError("checkpoint has MLP biases (mlp_bias=true), which are not supported");
  }

  LlamaWeights w;
  // Tied models: transformers accepts the shared matrix under either name.
  const bool embed_stored = src.Has("model.embed_tokens.weight");
  const bool head_stored = src.Has("lm_head.weight");
  const std::string embed_name =
      embed_stored || !c.tie_word_embeddings || !head_stored ? "model.embed_tokens.weight" : "lm_head.weight";
  LCD_ASSIGN_OR_RETURN(w.embed_tokens, GetDenseMatrix(src, embed_name, c.vocab_size, hidden));
  if (head_stored || !c.tie_word_embeddings) {
    // An artifact may store a tied model's head apart, quantized.
    LCD_ASSIGN_OR_RETURN(w.lm_head, GetStacked(src, {"lm_head.weight"}, {c.vocab_size}, hidden));
  } else {
    w.lm_head = MakeDenseWeight(w.embed_tokens);
  }
  LCD_ASSIGN_OR_RETURN(w.final_norm, GetVector(src, "model.norm.weight", hidden));

  // Qwen2 always has q/k/v biases and no o_proj bias; Llama's attention_bias
  // adds all four (transformers' LlamaAttention).
  const bool qkv_bias = c.attention_bias || c.arch == Architecture::kQwen2;
  const bool o_bias = c.attention_bias && c.arch == Architecture::kLlama;

  w.layers.resize(static_cast<size_t>(c.num_layers));
  std::vector<absl::Status> status(static_cast<size_t>(c.num_layers));
  kernels::ParallelFor(pool, c.num_layers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      status[i] = cancelled && cancelled()
                      ? absl::CancelledError(absl::StrCat("model load cancelled at layer ", i))
                      : BindLayer(c, src, i, qkv_bias, o_bias, w.layers[i]);
    }
  });
  for (const absl::Status& s : status) LCD_RETURN_IF_ERROR(s);
  return w;
}

}  // namespace lcd::runtime
