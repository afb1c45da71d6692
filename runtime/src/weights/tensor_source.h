// Private: where a model's tensors come from. A Hugging Face folder serves
// every tensor dense from its safetensors; an artifact serves linear layers
// dense or quantized, as its manifest says. The model binds its weights
// through this interface only, so it never knows which one it was given.
#ifndef LCD_RUNTIME_SRC_WEIGHTS_TENSOR_SOURCE_H_
#define LCD_RUNTIME_SRC_WEIGHTS_TENSOR_SOURCE_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "lcd/runtime/artifact.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/linear_weight.h"

namespace lcd::runtime {

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual bool Has(std::string_view name) const = 0;
  // A dense F32/F16/BF16 tensor. NotFound naming the tensor when absent;
  // InvalidArgument when it is not dense or has another dtype.
  virtual absl::StatusOr<TensorView> Dense(const std::string& name) const = 0;
  // A linear layer's weight, dense or quantized. Errors as Dense.
  virtual absl::StatusOr<LinearSource> Linear(const std::string& name) const = 0;
  // Label for logs: "checkpoint" or "artifact <method> b<bits>".
  virtual std::string Describe() const = 0;
};

// Both own what they wrap; views they hand out live as long as they do.
std::unique_ptr<TensorSource> MakeCheckpointSource(std::unique_ptr<Checkpoint> checkpoint);
std::unique_ptr<TensorSource> MakeArtifactSource(std::unique_ptr<Artifact> artifact);

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_WEIGHTS_TENSOR_SOURCE_H_
