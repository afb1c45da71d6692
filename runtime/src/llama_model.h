// Private: the Llama-family decoder (Llama, Mistral, Qwen2) behind
// lcd::runtime::Model. The three architectures differ only in which tensors
// exist (q/k/v biases, tied lm_head), so one class serves all of them.
#ifndef LCD_RUNTIME_SRC_LLAMA_MODEL_H_
#define LCD_RUNTIME_SRC_LLAMA_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/ops.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/model_config.h"

namespace lcd::runtime {

// Weights of one decoder layer. Matrices point into the checkpoint mapping;
// the small vectors are widened to fp32 copies. Empty bias = no bias.
struct LlamaLayerWeights {
  kernels::MatrixView q_proj, k_proj, v_proj, o_proj;
  kernels::MatrixView gate_proj, up_proj, down_proj;
  std::vector<float> q_bias, k_bias, v_bias, o_bias;
  std::vector<float> input_norm, post_attention_norm;
};

struct LlamaWeights {
  kernels::MatrixView embed_tokens;
  kernels::MatrixView lm_head;  // == embed_tokens when tied.
  std::vector<float> final_norm;
  std::vector<LlamaLayerWeights> layers;
};

// Validates and binds every tensor the config calls for: dtype F32/F16/BF16,
// exact shape. NotFound names a missing tensor; InvalidArgument names a
// tensor with a wrong shape or dtype.
absl::StatusOr<LlamaWeights> BindLlamaWeights(const ModelConfig& config, const Checkpoint& ckpt);

class LlamaModel : public Model {
 public:
  LlamaModel(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint, LlamaWeights weights,
             int num_threads);

  const ModelConfig& config() const override { return config_; }
  kernels::KvLayout KvLayoutFor(int64_t block_size) const override;
  uint64_t WeightBytes() const override { return weight_bytes_; }
  absl::StatusOr<ForwardOutput> Forward(const std::vector<SeqBatchEntry>& batch,
                                        KvCache& cache) override;

 private:
  absl::Status ValidateBatch(const std::vector<SeqBatchEntry>& batch, const KvCache& cache) const;
  void RunLayer(int64_t layer, int64_t num_tokens, KvCache& cache);

  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;  // Owns the mappings the views point into.
  LlamaWeights weights_;
  std::unique_ptr<kernels::ThreadPool> pool_;
  std::vector<float> inv_freq_;
  uint64_t weight_bytes_ = 0;

  // Per-step plan, rebuilt by Forward.
  std::vector<int32_t> tokens_;
  std::vector<int32_t> positions_;
  std::vector<int64_t> slots_;
  std::vector<kernels::AttentionSeq> seqs_;
  // Scratch activations, grown as needed and reused across calls.
  std::vector<float> x_, h_, q_, k_, v_, attn_, gate_, up_;
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_LLAMA_MODEL_H_
