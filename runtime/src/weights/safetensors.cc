#include "lcd/runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lcd/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "src/json_util.h"

namespace lcd::runtime {
namespace {

using json = nlohmann::json;
using json_util::Sv;

constexpr std::string_view kMetadataKey = "__metadata__";

struct DTypeEntry {
  StDType type;
  std::string_view name;
  size_t size;
};

// The names are the format's spelling (see the safetensors crate's Dtype).
constexpr DTypeEntry kDTypes[] = {
    {StDType::kBool, "BOOL", 1}, {StDType::kU8, "U8", 1},          {StDType::kI8, "I8", 1},
    {StDType::kU16, "U16", 2},   {StDType::kI16, "I16", 2},        {StDType::kF16, "F16", 2},
    {StDType::kBF16, "BF16", 2}, {StDType::kU32, "U32", 4},        {StDType::kI32, "I32", 4},
    {StDType::kF32, "F32", 4},   {StDType::kU64, "U64", 8},        {StDType::kI64, "I64", 8},
    {StDType::kF64, "F64", 8},   {StDType::kF8E4M3, "F8_E4M3", 1}, {StDType::kF8E5M2, "F8_E5M2", 1},
};

const DTypeEntry* FindDType(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

const DTypeEntry& EntryOf(StDType t) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.type == t) return e;
  }
  return kDTypes[0];  // Unreachable: every enumerator is in the table.
}

// Reads one non-negative JSON integer; `what` names it in the error.
absl::StatusOr<uint64_t> NonNegativeInteger(const json& v, std::string_view tensor,
                                            std::string_view what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0)
    return static_cast<uint64_t>(v.get<int64_t>());
  return absl::InvalidArgumentError(
      absl::StrCat("safetensors: tensor \"", Sv(tensor), "\": ", Sv(what),
                   " must be a non-negative integer, got ", v.dump()));
}

absl::StatusOr<TensorInfo> ParseTensorEntry(const std::string& name, const json& entry,
                                            const SafetensorsLimits& limits) {
  auto bad = [&name](auto&&... parts) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors: tensor \"", name, "\": ", parts...));
  };
  if (!entry.is_object())
    return bad("entry must be an object, got ", Sv(json_util::TypeName(entry)));
  for (const auto& [key, unused] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return bad("unexpected field \"", key, "\"");
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) return bad("missing field \"", key, "\"");
  }
  TensorInfo info;
  info.name = name;

  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) return bad("dtype must be a string");
  const DTypeEntry* dt = FindDType(dtype.get_ref<const std::string&>());
  if (dt == nullptr) return bad("unknown dtype \"", dtype.get_ref<const std::string&>(), "\"");
  info.dtype = dt->type;

  const json& shape = entry["shape"];
  if (!shape.is_array()) return bad("shape must be an array");
  if (shape.size() > limits.max_rank) {
    return bad("rank ", shape.size(), " exceeds the limit of ", limits.max_rank);
  }
  // Element count and byte size are computed in uint64 with overflow checks
  // so that a hostile shape cannot wrap around to match small offsets.
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t numel = 1;
  for (const json& d : shape) {
    LCD_ASSIGN_OR_RETURN(uint64_t dim, NonNegativeInteger(d, name, "shape entry"));
    if (dim > kMax) return bad("shape entry ", dim, " is too large");
    if (dim != 0 && numel > kMax / dim) return bad("shape ", shape.dump(), " overflows");
    numel *= dim;
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  if (numel > kMax / dt->size) return bad("byte size of shape ", shape.dump(), " overflows");
  const uint64_t nbytes = numel * dt->size;

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    return bad("data_offsets must be an array of two integers");
  }
  LCD_ASSIGN_OR_RETURN(info.begin, NonNegativeInteger(offsets[0], name, "data_offsets[0]"));
  LCD_ASSIGN_OR_RETURN(info.end, NonNegativeInteger(offsets[1], name, "data_offsets[1]"));
  if (info.end < info.begin) {
    return bad("data_offsets [", info.begin, ", ", info.end, "] end before begin");
  }
  if (info.end - info.begin != nbytes) {
    return bad("data_offsets [", info.begin, ", ", info.end, "] span ", info.end - info.begin,
               " bytes but shape ", shape.dump(), " of ", Sv(dt->name), " needs ", nbytes);
  }
  return info;
}

}  // namespace

std::string_view StDTypeName(StDType t) { return EntryOf(t).name; }
size_t StDTypeSize(StDType t) { return EntryOf(t).size; }

absl::StatusOr<kernels::DType> ToKernelDType(StDType t) {
  switch (t) {
    case StDType::kF32:
      return kernels::DType::kF32;
    case StDType::kF16:
      return kernels::DType::kF16;
    case StDType::kBF16:
      return kernels::DType::kBF16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "dtype ", Sv(StDTypeName(t)), " is not a floating-point type the kernels take"));
  }
}

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view header_json,
                                                         uint64_t data_size,
                                                         const SafetensorsLimits& limits) {
  if (header_json.size() > limits.max_header_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: header of ", header_json.size(),
                                                   " bytes exceeds the limit of ",
                                                   limits.max_header_bytes));
  }
  LCD_ASSIGN_OR_RETURN(json root, json_util::ParseJson(header_json, "safetensors header"));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors: header must be a JSON object, got ", Sv(json_util::TypeName(root))));
  }
  SafetensorsHeader header;
  for (const auto& [key, value] : root.items()) {
    if (key == kMetadataKey) {
      if (value.is_null()) continue;
      if (!value.is_object()) {
        return absl::InvalidArgumentError("safetensors: __metadata__ must be an object");
      }
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat("safetensors: __metadata__ value of \"",
                                                         mkey, "\" must be a string, got ",
                                                         Sv(json_util::TypeName(mvalue))));
        }
        header.metadata.emplace(mkey, mvalue.get<std::string>());
      }
      continue;
    }
    if (header.tensors.size() >= limits.max_tensors) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: more than ", limits.max_tensors, " tensors"));
    }
    LCD_ASSIGN_OR_RETURN(TensorInfo info, ParseTensorEntry(key, value, limits));
    header.tensors.push_back(std::move(info));
  }
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  // Like the reference implementation, the tensors must tile the data
  // section exactly: each starts where the previous ended. Holes would hide
  // unaccounted bytes, overlaps would alias two tensors.
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : header.tensors) {
    if (t.begin < expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: tensor \"", t.name, "\" at [", t.begin, ", ", t.end, ") overlaps tensor \"",
          prev->name, "\" at [", prev->begin, ", ", prev->end, ")"));
    }
    if (t.begin > expected) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: tensor \"", t.name, "\" starts at byte ", t.begin,
                       " leaving a hole after byte ", expected, " of the data section"));
    }
    if (t.end > data_size) {
      return absl::DataLossError(absl::StrCat("safetensors: tensor \"", t.name, "\" ends at byte ",
                                              t.end, " but the data section has only ", data_size,
                                              " bytes (truncated file?)"));
    }
    expected = t.end;
    prev = &t;
  }
  if (expected != data_size) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: data section has ", data_size,
                                                   " bytes but the tensors cover ", expected));
  }
  return header;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsBuffer(std::string_view file_bytes,
                                                         const SafetensorsLimits& limits) {
  if (file_bytes.size() < 8) {
    return absl::DataLossError(absl::StrCat("safetensors: file of ", file_bytes.size(),
                                            " bytes is shorter than the 8-byte length prefix"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file_bytes[i]);
  if (n > limits.max_header_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors: header length ", n, " exceeds the limit of ", limits.max_header_bytes));
  }
  if (n > file_bytes.size() - 8) {
    return absl::DataLossError(absl::StrCat("safetensors: header length ", n, " exceeds the ",
                                            file_bytes.size() - 8,
                                            " bytes after the prefix (truncated file?)"));
  }
  return ParseSafetensorsHeader(file_bytes.substr(8, n), file_bytes.size() - 8 - n, limits);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path, const SafetensorsLimits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::DataLossError(
        absl::StrCat(path, ": file of ", size, " bytes is shorter than the 8-byte length prefix"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // The mapping keeps the file alive.
  if (map == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(map_err)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = map;
  file->mapping_size_ = size;
  const std::string_view bytes(static_cast<const char*>(map), size);
  auto header = ParseSafetensorsBuffer(bytes, limits);
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat(path, ": ", header.status().message()));
  }
  file->header_ = std::move(header).value();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  file->data_ = static_cast<const uint8_t*>(map) + 8 + n;
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) {
    file->index_.emplace(file->header_.tensors[i].name, i);
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

}  // namespace lcd::runtime
