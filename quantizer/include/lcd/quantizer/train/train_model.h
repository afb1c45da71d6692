// A trainable Llama-family decoder (the architectures runtime::ModelConfig
// accepts: Llama with GQA and rope scaling, tied or untied lm_head, Qwen2
// with q/k/v biases, Mistral within its sliding window) built from the
// operations of ops.h: parameters and gradients in two flat fp32 buffers,
// every activation the backward needs saved in buffers that are sized once
// per (batch, length) and reused across steps.
//
// Typical step:
//   model.ZeroGrad();
//   model.Forward(tokens, B, L);               // logits(): [B*L][V]
//   CrossEntropyLoss(model.logits(), targets, B*L, V, model.dlogits(), pool);
//   model.Backward();                          // grads() += dL/dparams
//   ClipGradNorm(model.grads(), model.num_params(), 1.0);
//   adamw.Step(model.params(), model.grads(), model.tensors(), lr, pool);
//
// Quantized linears (the quantizer in the loop, loop_quantizer.h):
// EnableQuantized gives chosen linear weights a LoopQuantizer. Their weight
// tensor then holds the latent W, the quantizer's parameters become the
// tensor "<prefix>.<param_name>" (prefix = the weight's name without
// ".weight"; trainable, no weight decay), and the forward uses Ŵ =
// Decode(W, params, codes). EnableCodebook is the codebook case (LCD): a
// tensor "<prefix>.centroids" [rows][groups][k]. Codes start at 0; set the
// parameters, then ReassignCodes (or write codes()) before training.
// FreezeDense(true) computes gradients only for the latent weights and the
// quantizers' parameters (the setting of LCD and the QAT methods:
// embeddings, norms, biases and dense linears stay as they are, and cost no
// gradient work).
//
// Thread safety: none; one step at a time.
#ifndef LCD_QUANTIZER_TRAIN_TRAIN_MODEL_H_
#define LCD_QUANTIZER_TRAIN_TRAIN_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/train/codebook_linear.h"
#include "lcd/quantizer/train/loop_quantizer.h"
#include "lcd/quantizer/train/optimizer.h"
#include "lcd/runtime/model_config.h"

namespace lcd::quantizer::train {

struct CodebookSpec {
  int64_t group_size = 128;  // >= 1; the last group of a row may be shorter.
  int64_t k = 4;             // Centroids per (row, group), in [1, 256].
};

class TrainModel {
 public:
  // Parameters zero-initialised (see InitRandom / FromCheckpoint). `threads`
  // counts the calling thread (<= 0: all cores) and is also given to OpenBLAS.
  static absl::StatusOr<std::unique_ptr<TrainModel>> Create(const runtime::ModelConfig& config, int threads);
  // A Hugging Face model directory (config.json + safetensors, any float dtype).
  static absl::StatusOr<std::unique_ptr<TrainModel>> FromCheckpoint(const std::string& model_dir, int threads);
  ~TrainModel();

  // Seeded: matrices N(0, stddev), norms 1, biases 0 (std::mt19937_64).
  void InitRandom(uint64_t seed, float stddev = 0.02f);

  const runtime::ModelConfig& config() const { return config_; }
  // Tensors in Hugging Face names; a tied model has no lm_head.weight.
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  int64_t num_params() const { return static_cast<int64_t>(params_.size()); }
  float* params() { return params_.data(); }
  float* grads() { return grads_.data(); }
  // NotFound naming the tensor when absent.
  absl::StatusOr<const ParamTensor*> Find(std::string_view name) const;
  kernels::ThreadPool* pool() { return pool_.get(); }

  // Makes the named weights (decoder linears q/k/v/o, gate/up/down, or
  // lm_head.weight when untied) quantized by the given quantizers (their
  // rows/cols must match the weight); parameter values are kept, the
  // quantizers' parameters start at 0. Re-lays out params()/grads() (offsets
  // in tensors() change; gradients are zeroed) and drops saved activations
  // (call Forward again before Backward). InvalidArgument for an unknown or
  // non-linear name, a null quantizer or one of another shape, or a name
  // already quantized (nothing is changed then).
  absl::Status EnableQuantized(std::vector<std::pair<std::string, std::unique_ptr<LoopQuantizer>>> quantizers);
  // EnableQuantized with a CodebookLoopQuantizer per weight; InvalidArgument
  // also for a group size < 1 or k outside [1, 256].
  absl::Status EnableCodebook(const std::vector<std::pair<std::string, CodebookSpec>>& specs);
  // Names of the quantized weights, in layout order.
  std::vector<std::string> QuantizedWeights() const;
  // The quantizer of a weight (NotFound when not quantized).
  absl::StatusOr<LoopQuantizer*> quantizer(std::string_view weight_name);
  // Codes [rows][cols] of a quantized weight (NotFound when not quantized).
  absl::StatusOr<uint8_t*> codes(std::string_view weight_name);
  // Re-assigns the codes of every quantized weight whose name starts with
  // `prefix` (all by default; "model.layers.3." for one block) from its
  // latent value (LoopQuantizer::Assign; for a codebook, the nearest
  // centroid); returns how many codes changed.
  int64_t ReassignCodes(std::string_view prefix = {});
  // See the class comment. Default false.
  void FreezeDense(bool frozen) { freeze_dense_ = frozen; }
  // 8: the input of every quantized linear is quantize-dequantized per token
  // to int8 (lcd/kernels/act_quant.h) before the matmul, in the forward and
  // for the weight gradient; the input gradient passes straight through
  // (STE). 0 (default): fp activations. InvalidArgument for other values.
  absl::Status SetActivationBits(int bits);
  int activation_bits() const { return act_bits_; }
  // Called by every forward of a quantized linear with activation bits 8,
  // with the weight's offset (ParamTensor::offset) and the int8-grid input
  // the matmul sees [T][K]; for tests that replay the rounding decisions.
  using ActivationObserver = std::function<void(int64_t weight, const float* x_q, int64_t T, int64_t K)>;
  void SetActivationObserver(ActivationObserver observer) { act_observer_ = std::move(observer); }
  // The tensors an optimizer should step: all, or with FreezeDense the
  // quantized latent weights and their quantizers' parameters.
  std::vector<ParamTensor> TrainableTensors() const;

  // tokens [B][L] (position of token j of a sequence: j). InvalidArgument
  // for a token outside the vocabulary, L beyond max_position_embeddings or
  // the sliding window. Resizes the activation buffers when (B, L) grows.
  //
  // blocks >= 0 runs only the embedding and the first `blocks` decoder
  // blocks (no final norm, no logits; Backward is then a no-op and
  // BackwardBlocks propagates from the last block's output): the
  // progressive block-wise stage of LCD.
  absl::Status Forward(const int32_t* tokens, int64_t B, int64_t L, int64_t blocks = -1);
  // Runs only decoder blocks [first, end) from x, the residual stream
  // entering block `first` ([B*L][hidden]; token j of a sequence at position
  // j): one block's cost whatever its depth, for the block-wise stage that
  // keeps each block's input. No logits; Backward is then a no-op.
  // InvalidArgument unless 0 <= first < end <= num_layers, and as Forward
  // for B and L.
  absl::Status ForwardBlocks(const float* x, int64_t B, int64_t L, int64_t first, int64_t end);
  // The residual stream entering block l ([B*L][hidden]) of the last
  // Forward or ForwardBlocks (for the blocks it ran, and l one past the
  // last); l == num_layers: the last block's output (before the final norm).
  const float* residual(int64_t l) const;
  // grads() += d loss / d params of blocks [first, blocks run), given
  // dout = d loss / d (output of the last block run); lower blocks, and
  // blocks below a ForwardBlocks' first, get no gradient (first <= 0 after a
  // Forward also reaches the embedding unless FreezeDense).
  void BackwardBlocks(const float* dout, int64_t first);
  const float* logits() const { return logits_.data(); }
  // Gradient of the loss w.r.t. logits(): zeroed by Forward; the losses of
  // ops.h accumulate into it.
  float* dlogits() { return dlogits_.data(); }
  // grads() += d loss / d params, from dlogits() and the last successful
  // Forward (none: no-op). Quantized linears back-propagate through the Ŵ
  // that Forward decoded (kept, not decoded again) and give the quantizer
  // parameters' gradient for the codes current at Backward (unchanged in a
  // normal step).
  void Backward();
  void ZeroGrad();

  // Per-operation wall time of Forward / Backward / BackwardBlocks, for
  // `lcd bench-train --breakdown`. Off by default (then no clock is read).
  // Entries "fwd.<op>" / "bwd.<op>" (op: embedding, norm, qkv, rope,
  // attention, o, gate_up, swiglu, down, residual, lm_head, decode,
  // quant_grad), seconds summed since the last ResetProfile, in first-seen
  // order; exclusive: a quantized linear's decode (forward) and its dŴ
  // zeroing + LoopQuantizer::Backward (backward) are in fwd.decode /
  // bwd.quant_grad, not in the linear's entry.
  void EnableProfile(bool on) { profile_on_ = on; }
  const std::vector<std::pair<std::string, double>>& profile() const { return profile_; }
  void ResetProfile() { profile_.clear(); }

 private:
  struct Layer;       // Parameter pointers of one block.
  struct Quantized {  // One quantized weight.
    std::string name;
    LoopQuantizer* q = nullptr;         // Owned by quantizers_.
    int64_t weight = 0, params = -1;    // Offsets; params -1: the quantizer has none.
    int64_t hat = 0;                    // Offset of its decoded Ŵ in w_hat_.
  };
  struct LayerActs;   // Saved activations of one block.
  TrainModel(runtime::ModelConfig config, int threads);
  void Layout();
  // InvalidArgument for a (B, L) that Forward cannot run.
  absl::Status CheckShape(int64_t B, int64_t L) const;
  void Resize(int64_t B, int64_t L);
  // The decoder blocks [first, end) on acts_[first].x (B_, L_ set).
  void RunBlocks(int64_t first, int64_t end);
  // Back through blocks end-1 down to first, dx_ holding d loss / d (output of block end-1).
  void BackwardLayers(int64_t end, int64_t first);
  // Runs fn, adding its wall time (less nested decode time) to `name` when profiling.
  template <typename Fn>
  void Timed(const char* name, Fn&& fn);
  void AddProfile(const char* name, double seconds);
  float* P(int64_t offset) { return params_.data() + offset; }
  float* G(int64_t offset) { return grads_.data() + offset; }
  // The linear at weight offset w: dense or quantized (see ops.h/loop_quantizer.h).
  const Quantized* QuantAt(int64_t w) const;
  // x itself, or (activation_bits 8) its per-token int8 quantize-dequantize in x_q_.
  const float* QuantizedInput(const float* x, int64_t T, int64_t K);
  void Linear(const float* x, int64_t w, const float* b, int64_t T, int64_t K, int64_t N, float* y);
  // dx may be nullptr; weight and bias gradients follow FreezeDense.
  void LinearBack(const float* dy, const float* x, int64_t w, int64_t b, int64_t T, int64_t K, int64_t N, float* dx);

  runtime::ModelConfig config_;
  std::unique_ptr<kernels::ThreadPool> pool_;
  std::vector<ParamTensor> tensors_;
  std::vector<float> params_, grads_;
  std::vector<Layer> layers_;
  int64_t embed_ = 0, final_norm_ = 0, lm_head_ = 0;  // Offsets; lm_head_ == embed_ when tied.
  std::vector<float> inv_freq_;
  std::vector<std::pair<std::string, std::unique_ptr<LoopQuantizer>>> quantizers_;  // As given to EnableQuantized.
  std::vector<Quantized> quant_;                                                     // Built by Layout.
  bool freeze_dense_ = false;
  int act_bits_ = 0;
  std::vector<float> x_q_;  // The quantized input of one linear (scratch, act_bits_ 8).
  ActivationObserver act_observer_;
  // Decoded Ŵ of every quantized linear, written by Forward and read by the
  // backward (rows * cols floats per quantized weight: the memory of the
  // decode it saves); dŴ scratch of one quantized linear.
  std::vector<float> w_hat_, dw_hat_;

  bool profile_on_ = false;
  double nested_seconds_ = 0.0;  // Profiled time inside an outer Timed (decode, quant_grad).
  std::vector<std::pair<std::string, double>> profile_;

  int64_t B_ = 0, L_ = 0, first_run_ = 0, blocks_run_ = 0;  // Blocks [first_run_, blocks_run_) ran last.
  std::vector<int32_t> tokens_;
  std::vector<float> rope_cos_, rope_sin_;
  std::vector<LayerActs> acts_;
  std::vector<float> x_final_, rstd_final_, h_final_, logits_, dlogits_;
  // Backward scratch, reused by every layer.
  std::vector<float> dx_, dh_, dq_, dk_, dv_, dattn_, dgate_, dup_, dact_;
};

}  // namespace lcd::quantizer::train

#endif  // LCD_QUANTIZER_TRAIN_TRAIN_MODEL_H_
