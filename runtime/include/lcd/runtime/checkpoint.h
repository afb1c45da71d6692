// A Hugging Face model directory's weights: `model.safetensors`, or the shards
// listed in `model.safetensors.index.json` ({"weight_map": {name: file}}).
// All shards are memory-mapped; tensors are returned as views into the
// mappings, so a Checkpoint must outlive every view taken from it.
//
// Thread safety: immutable after Open; safe to read concurrently.
#ifndef LCD_RUNTIME_CHECKPOINT_H_
#define LCD_RUNTIME_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/runtime/safetensors.h"

namespace lcd::runtime {

// "[2, 3]": a shape as error messages print it.
std::string ShapeString(const std::vector<int64_t>& shape);

struct TensorView {
  std::string_view name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  int64_t num_elements() const;
};

class Checkpoint {
 public:
  // Opens `dir`. Errors: NotFound when neither weight file exists;
  // InvalidArgument for a malformed index or shard, a shard path escaping the
  // directory (a shard name must be a plain file name: no '/', not ".."), a
  // shard listed in the index that does not exist, or a tensor listed in the
  // index but absent from its shard. With an index, it alone decides which
  // tensors exist; extra tensors in a shard are ignored, as in transformers.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  // NotFound naming the tensor when absent.
  absl::StatusOr<TensorView> Get(std::string_view name) const;
  bool Has(std::string_view name) const;
  std::vector<std::string> TensorNames() const;
  // Sum of all tensors' bytes.
  uint64_t TotalBytes() const;

 private:
  Checkpoint() = default;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  // name -> (file index, tensor info)
  std::vector<std::pair<std::string, std::pair<size_t, const TensorInfo*>>> sorted_;
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_CHECKPOINT_H_
