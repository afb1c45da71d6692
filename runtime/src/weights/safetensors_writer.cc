// WriteSafetensors: the writer half of lcd/runtime/safetensors.h.
#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "lcd/base/file_util.h"
#include "lcd/runtime/safetensors.h"
#include "nlohmann/json.hpp"

namespace lcd::runtime {

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // Largest elements first (stable, so equal sizes keep the caller's order):
  // with power-of-two element sizes every tensor then starts aligned to its
  // element size, although the format forbids padding between tensors.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return StDTypeSize(tensors[a].dtype) > StDTypeSize(tensors[b].dtype);
  });

  nlohmann::json header = nlohmann::json::object();
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (size_t i : order) {
    const TensorToWrite& t = tensors[i];
    if (t.name.empty() || t.name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat("WriteSafetensors: invalid tensor name \"", t.name, "\""));
    }
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("WriteSafetensors: duplicate tensor name \"", t.name, "\""));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("WriteSafetensors: tensor \"", t.name, "\" has a negative dimension"));
      }
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
        return absl::InvalidArgumentError(
            absl::StrCat("WriteSafetensors: tensor \"", t.name, "\" has an overflowing shape"));
      }
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, StDTypeSize(t.dtype), &nbytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("WriteSafetensors: tensor \"", t.name, "\" has an overflowing shape"));
    }
    if (nbytes != t.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat("WriteSafetensors: tensor \"", t.name,
                                                     "\" needs ", nbytes, " bytes, got ",
                                                     t.bytes.size()));
    }
    header[t.name] = {{"dtype", std::string(StDTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    // Names or metadata that are not valid UTF-8.
    return absl::InvalidArgumentError(absl::StrCat("WriteSafetensors: ", e.what()));
  }
  // Pad with spaces (valid JSON whitespace) so the data section is 8-byte
  // aligned within the file, as the Python package does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  char prefix[8];
  uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((n >> (8 * i)) & 0xff);

  std::vector<std::string_view> chunks = {std::string_view(prefix, sizeof(prefix)), header_text};
  for (size_t i : order) chunks.push_back(tensors[i].bytes);
  return WriteFileAtomic(path, chunks);
}

}  // namespace lcd::runtime
