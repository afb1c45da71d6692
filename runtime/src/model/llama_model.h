// Private: the Llama-family decoder (Llama, Mistral, Qwen2) behind
// lcd::runtime::Model. The three architectures differ only in which tensors
// exist (q/k/v biases, tied lm_head), so one class serves all of them.
#ifndef LCD_RUNTIME_SRC_LLAMA_MODEL_H_
#define LCD_RUNTIME_SRC_LLAMA_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/ops.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/runtime/backend.h"
#include "lcd/runtime/linear_weight.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/model_config.h"
#include "src/weights/tensor_source.h"

namespace lcd::runtime {

// Weights of one decoder layer. Linear layers that read the same input are
// stacked (qkv: q_dim + 2 kv_dim output rows; gate_up: 2 * intermediate); the
// small vectors are widened to fp32 copies. Empty bias = no bias.
struct LlamaLayerWeights {
  std::unique_ptr<LinearWeight> qkv, o_proj, gate_up, down_proj;
  std::vector<float> qkv_bias, o_bias;
  std::vector<float> input_norm, post_attention_norm;
};

struct LlamaWeights {
  kernels::MatrixView embed_tokens;      // Always dense: a lookup reads one row per token.
  std::unique_ptr<LinearWeight> lm_head;  // The embedding's matrix when tied and not stored apart.
  std::vector<float> final_norm;
  std::vector<LlamaLayerWeights> layers;
};

// Validates and binds every tensor the config calls for, with exact shapes.
// NotFound names a missing tensor; InvalidArgument names a tensor with a
// wrong shape or dtype. A tied model whose checkpoint stores the matrix only
// as lm_head.weight (transformers accepts that) uses it for both.
// Layers are bound in parallel on `pool` (repacking quantized weights is the
// slow part of loading an artifact); pool may be nullptr.
// `cancelled` (may be empty) is polled before each layer; Cancelled then.
absl::StatusOr<LlamaWeights> BindLlamaWeights(const ModelConfig& config, const TensorSource& source,
                                              kernels::ThreadPool* pool,
                                              const std::function<bool()>& cancelled = {});

class LlamaModel : public Model {
 public:
  LlamaModel(ModelConfig config, std::unique_ptr<TensorSource> source, LlamaWeights weights,
             std::shared_ptr<Backend> backend);

  const ModelConfig& config() const override { return config_; }
  kernels::KvLayout KvLayoutFor(int64_t block_size, kernels::DType dtype) const override;
  Backend& backend() const override { return *backend_; }
  uint64_t WeightBytes() const override { return weight_bytes_; }
  absl::StatusOr<ForwardOutput> Forward(const std::vector<SeqBatchEntry>& batch,
                                        KvCache& cache) override;
  void SetLinearInputObserver(LinearInputObserver observer) override { observer_ = std::move(observer); }
  // The artifact's "activations" field: 8 = the inputs of the decoder
  // linears (and of lm_head when lm_head_quantized) are quantize-dequantized
  // per token to int8 (lcd/kernels/act_quant.h) before their kernels,
  // once per shared input (q/k/v, gate/up). Correct W·A8 semantics on the
  // fp kernels; an integer kernel consuming the int8 codes is a later step.
  void SetActivationBits(int bits, bool lm_head_quantized) {
    act_bits_ = bits;
    act_lm_head_ = lm_head_quantized;
  }

 private:
  // Reports `in` to the observer under each name (no-op without one).
  void Observe(const std::vector<std::string>& names, const LinearInput& in) const;
  absl::Status ValidateBatch(const std::vector<SeqBatchEntry>& batch, const KvCache& cache) const;
  void RunLayer(int64_t layer, int64_t num_tokens, KvCache& cache);

  ModelConfig config_;
  std::unique_ptr<TensorSource> source_;  // Owns the mappings the weights point into.
  LlamaWeights weights_;
  LinearInputObserver observer_;
  int act_bits_ = 0;
  bool act_lm_head_ = false;
  // in_ with the A8 quantize-dequantize applied when act_bits_ is 8 (into x_q_).
  void ResetInput(const float* x, int64_t m, int64_t cols, bool quantized_linear);
  std::vector<float> x_q_;
  // Per layer, the Hugging Face names behind each stacked weight (observer).
  std::vector<std::vector<std::string>> qkv_names_, o_names_, gate_up_names_, down_names_;
  std::shared_ptr<Backend> backend_;
  kernels::ThreadPool* pool_;  // backend_'s
  std::vector<float> inv_freq_;
  uint64_t weight_bytes_ = 0;

  // Per-step plan, rebuilt by Forward.
  std::vector<int32_t> tokens_;
  std::vector<int32_t> positions_;
  std::vector<int64_t> slots_;
  std::vector<kernels::AttentionSeq> seqs_;
  // Scratch activations, grown as needed and reused across calls.
  std::vector<float> x_, h_, qkv_, q_, k_, v_, attn_, gate_up_, gate_, up_;
  LinearInput in_;
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_LLAMA_MODEL_H_
