// Model::Load: picks the implementation for a checkpoint's architecture.
#include "lcd/runtime/model.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/artifact.h"
#include "lcd/runtime/checkpoint.h"
#include "src/model/llama_model.h"

namespace lcd::runtime {

namespace {

absl::Status CheckCancelled(const ModelOptions& options, const char* phase) {
  if (options.cancelled && options.cancelled()) {
    return absl::CancelledError(absl::StrCat("model load cancelled before ", phase));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir, const ModelOptions& options) {
  LCD_RETURN_IF_ERROR(CheckCancelled(options, "reading the configuration"));
  ModelConfig config;
  std::unique_ptr<TensorSource> source;
  int act_bits = 0;
  bool act_lm_head = false;
  if (IsArtifactDir(dir)) {
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<Artifact> artifact, Artifact::Open(dir, options.cancelled));
    config = artifact->config();
    act_bits = artifact->manifest().activation_bits;
    if (act_bits != 0) {
      // A8 quantizes the inputs of the quantized linears; q/k/v and gate/up
      // share one input, so every decoder linear must be quantized.
      for (int64_t l = 0; l < config.num_layers; ++l) {
        for (const char* s : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
          const std::string n = absl::StrCat("model.layers.", l, ".", s, ".weight");
          const ArtifactTensor* t = artifact->Find(n);
          if (t == nullptr || !t->quantized()) {
            return absl::InvalidArgumentError(absl::StrCat(dir, ": manifest.json: activations needs every decoder linear quantized; ", n, " is not"));
          }
        }
      }
      const ArtifactTensor* head = artifact->Find("lm_head.weight");
      act_lm_head = head != nullptr && head->quantized();
    }
    source = MakeArtifactSource(std::move(artifact));
  } else {
    LCD_ASSIGN_OR_RETURN(config, LoadModelConfig(dir));
  }
  switch (config.arch) {
    case Architecture::kLlama:
    case Architecture::kMistral:
    case Architecture::kQwen2:
      break;
    default:
      return absl::UnimplementedError(absl::StrCat("unsupported architecture ", std::string(ArchitectureName(config.arch))));
  }
  LCD_RETURN_IF_ERROR(CheckCancelled(options, "opening the checkpoint"));
  if (source == nullptr) {
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(dir));
    source = MakeCheckpointSource(std::move(checkpoint));
  }
  LCD_RETURN_IF_ERROR(CheckCancelled(options, "binding the weights"));
  std::shared_ptr<Backend> backend = options.backend ? options.backend : NewCpuBackend(options.num_threads);
  LCD_ASSIGN_OR_RETURN(LlamaWeights weights,
                       BindLlamaWeights(config, *source, backend->thread_pool(), options.cancelled));
  LCD_LOG(DEBUG) << "loaded " << ArchitectureName(config.arch) << " model from " << dir << " ("
                 << source->Describe() << "): " << config.num_layers << " layers, hidden " << config.hidden_size
                 << ", vocab " << config.vocab_size << ", layer 0 qkv " << weights.layers[0].qkv->Describe() << ", on " << backend->Describe();
  auto model = std::make_unique<LlamaModel>(std::move(config), std::move(source), std::move(weights), std::move(backend));
  model->SetActivationBits(act_bits, act_lm_head);
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace lcd::runtime
