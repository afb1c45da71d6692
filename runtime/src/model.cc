// Model::Load: picks the implementation for a checkpoint's architecture.
#include "lcd/runtime/model.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/checkpoint.h"
#include "llama_model.h"

namespace lcd::runtime {

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir, const ModelOptions& options) {
  LCD_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  switch (config.arch) {
    case Architecture::kLlama:
    case Architecture::kMistral:
    case Architecture::kQwen2:
      break;
    default:
      return absl::UnimplementedError(absl::StrCat("unsupported architecture ", std::string(ArchitectureName(config.arch))));
  }
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(dir));
  LCD_ASSIGN_OR_RETURN(LlamaWeights weights, BindLlamaWeights(config, *checkpoint));
  LCD_LOG(DEBUG) << "loaded " << ArchitectureName(config.arch) << " model from " << dir << ": "
                 << config.num_layers << " layers, hidden " << config.hidden_size << ", vocab "
                 << config.vocab_size;
  return std::unique_ptr<Model>(
      new LlamaModel(std::move(config), std::move(checkpoint), std::move(weights), options.num_threads));
}

}  // namespace lcd::runtime
