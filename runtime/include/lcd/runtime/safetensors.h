// Reader for the safetensors format (https://huggingface.co/docs/safetensors):
//   [u64 little-endian N][N bytes of JSON header][data section]
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end)}
// relative to the data section, plus an optional "__metadata__" string map.
//
// Files come from outside, so the header is validated strictly before any
// tensor is touched: size limits, known dtypes, shape/size consistency,
// offsets inside the data section, no two tensors overlapping, no duplicate
// names, and (as in the reference Rust crate) the tensors must tile the data
// section exactly: no holes, no trailing bytes. The JSON must be valid UTF-8,
// nest at most 64 levels and repeat no key at any level; a tensor entry has
// exactly the fields dtype, shape and data_offsets; "__metadata__" maps
// strings to strings. A malformed or hostile file yields InvalidArgumentError
// (DataLossError when the file is shorter than its header or tensors say,
// i.e. truncated), with a message naming the tensor and the problem; never a
// crash.
//
// Thread safety: a SafetensorsFile is immutable after Open and may be read
// from any number of threads.
#ifndef LCD_RUNTIME_SAFETENSORS_H_
#define LCD_RUNTIME_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/dtype.h"

namespace lcd::runtime {

// Every dtype the format defines. Only F32/F16/BF16 map to kernels::DType;
// the integer types carry packed quantization indices in artifacts.
enum class StDType : uint8_t { kBool, kU8, kI8, kU16, kI16, kF16, kBF16, kU32, kI32, kF32, kU64, kI64, kF64, kF8E4M3, kF8E5M2 };

std::string_view StDTypeName(StDType t);
size_t StDTypeSize(StDType t);
// kernels::DType for float types the kernels consume; error otherwise.
absl::StatusOr<kernels::DType> ToKernelDType(StDType t);

struct TensorInfo {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // Byte offsets into the data section, [begin, end).
  uint64_t end = 0;
  int64_t num_elements() const;
};

struct SafetensorsLimits {
  uint64_t max_header_bytes = 100ull << 20;  // The reference implementation's limit.
  size_t max_tensors = 1 << 20;
  size_t max_rank = 8;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // Sorted by begin offset.
  std::map<std::string, std::string> metadata;
};

// Parses and validates a header JSON against a data section of
// `data_size` bytes. Pure function of its inputs (the fuzz target's entry).
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view header_json,
                                                         uint64_t data_size,
                                                         const SafetensorsLimits& limits = {});

// Parses a whole in-memory file (prefix + header + data).
absl::StatusOr<SafetensorsHeader> ParseSafetensorsBuffer(std::string_view file_bytes,
                                                         const SafetensorsLimits& limits = {});

// A memory-mapped, validated safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors: NotFound when it does not exist;
  // otherwise as ParseSafetensorsBuffer, with the path in the message.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path,
                                                               const SafetensorsLimits& limits = {});
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // nullptr when absent.
  const TensorInfo* Find(std::string_view name) const;
  // Pointer to the tensor's first byte inside the mapping (valid while *this
  // lives). Files written by the Python package or WriteSafetensors align
  // every tensor to its element size; other files need not, so readers of
  // arbitrary files should memcpy rather than cast.
  const uint8_t* Data(const TensorInfo& t) const { return data_ + t.begin; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  const uint8_t* data_ = nullptr;  // Start of the data section.
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
};

// Writes tensors to a safetensors file (used by tests, tools and the
// artifact writer). The header is space-padded so the data section starts
// 8-byte aligned; tensors follow without gaps (the format forbids them) in
// order of decreasing element size, ties in the given order, so that each is
// aligned to its element size. The file is written to `path`.tmp, fsynced and
// renamed over `path`, so readers never see a partial file. Errors:
// InvalidArgument for a byte count that does not match shape and dtype, a
// duplicate, empty or "__metadata__" name, a negative dimension, or names or
// metadata that are not valid UTF-8; Internal for I/O failures.
struct TensorToWrite {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  std::string_view bytes;  // Exactly num_elements * size(dtype) bytes.
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SAFETENSORS_H_
