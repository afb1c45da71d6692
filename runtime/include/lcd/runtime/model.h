// A decoder-only transformer (Llama / Mistral / Qwen2) ready to run on the
// CPU backend, and its batched forward pass over a paged KV cache.
//
// Load maps the checkpoint (weights stay in their stored precision, fp32,
// fp16 or bf16, and are read in place from the mapping); small tensors
// (norms, biases) are widened to fp32 once.
//
// Thread safety: Forward is not reentrant (it uses per-model scratch
// buffers); one engine thread drives a model. Models that share a backend
// may run Forward concurrently (their kernel calls take turns on its pool). The
// weights are immutable, so a Model may be read while another is loaded.
#ifndef LCD_RUNTIME_MODEL_H_
#define LCD_RUNTIME_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/runtime/backend.h"
#include "lcd/runtime/kv_cache.h"
#include "lcd/runtime/model_config.h"

namespace lcd::runtime {

struct ModelOptions {
  // Implicit, so `{threads}` and ModelOptions{2} keep working.
  ModelOptions(int threads = 0) : num_threads(threads) {}  // NOLINT(google-explicit-constructor)

  // Threads of the model's own CPU backend when `backend` is null
  // (0 = lcd::AvailableCpus(): affinity mask and cgroup CPU quota).
  int num_threads = 0;
  // Where the model runs; lcd-server shares one backend among all models.
  std::shared_ptr<Backend> backend;
  // Polled between the loading phases (config, checkpoint mapping, weight
  // binding), before each artifact file's hash and before each layer's
  // binding (possibly from pool threads: it must be thread-safe); when it
  // returns true, Load stops and returns Cancelled. Unset: never cancelled.
  std::function<bool()> cancelled;
};

// One sequence's part of a batched forward step.
struct SeqBatchEntry {
  // New tokens of this sequence in this step (a prefill chunk, or 1 decode
  // token). They take positions start_pos .. start_pos + tokens.size() - 1.
  std::vector<int32_t> tokens;
  int64_t start_pos = 0;
  // Blocks covering positions 0 .. start_pos + tokens.size() - 1.
  const std::vector<int32_t>* block_table = nullptr;
  // When true, logits for every new token; otherwise only for the last one.
  bool all_logits = false;
};

// Calibration hook: called during Forward, on the forward thread, with the
// input x [m][cols] of every linear layer, named by its Hugging Face weight
// name ("model.layers.3.mlp.down_proj.weight"). Layers that read the same
// input (q/k/v, gate/up) are each reported, with the same x.
using LinearInputObserver =
    std::function<void(std::string_view weight_name, const float* x, int64_t m, int64_t cols)>;

struct ForwardOutput {
  // Rows of vocab_size logits, in batch order: for each entry, either one row
  // (its last token) or tokens.size() rows (all_logits).
  std::vector<float> logits;
  int64_t num_rows = 0;
};

class Model {
 public:
  // Loads a Hugging Face model directory (config.json + safetensors) or an
  // artifact directory (manifest.json, lcd/runtime/artifact.h; verified in
  // full before use). Errors name the missing tensor, unsupported field or
  // corrupt file.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir,
                                                     const ModelOptions& options = {});
  virtual ~Model() = default;

  virtual const ModelConfig& config() const = 0;
  // The KV layout this model needs for a given block size and cache dtype
  // (fp32, fp16 or bf16).
  virtual kernels::KvLayout KvLayoutFor(int64_t block_size, kernels::DType dtype) const = 0;
  // The backend the model runs on; KV caches for it come from there.
  virtual Backend& backend() const = 0;
  // Bytes of weights read per decoded token (for bandwidth figures).
  virtual uint64_t WeightBytes() const = 0;

  // Runs the batch: writes the new tokens' K/V into `cache` at their
  // positions and returns logits. InvalidArgument for token ids out of range,
  // positions beyond max_position_embeddings, block tables too short or
  // naming blocks outside the cache, a cache shaped for another model, and
  // contexts longer than config().sliding_window when the model has one
  // (attention here always spans the whole context, so a window is never
  // applied silently; Mistral checkpoints with sliding_window >= the context
  // used are computed exactly).
  // Thread safety: not reentrant (see the file comment).
  virtual absl::StatusOr<ForwardOutput> Forward(const std::vector<SeqBatchEntry>& batch,
                                                KvCache& cache) = 0;

  // Installs (or, with nullptr, removes) the calibration hook. Not to be
  // called while Forward runs. The default (test doubles) ignores it.
  virtual void SetLinearInputObserver(LinearInputObserver observer) {}
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_MODEL_H_
