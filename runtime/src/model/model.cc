// Model::Load: picks the implementation for a checkpoint's architecture.
#include "lcd/runtime/model.h"

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
  if (IsArtifactDir(dir)) {
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<Artifact> artifact, Artifact::Open(dir, options.cancelled));
    config = artifact->config();
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
  return std::unique_ptr<Model>(
      new LlamaModel(std::move(config), std::move(source), std::move(weights), std::move(backend)));
}

}  // namespace lcd::runtime
