// Safetensors in and out for the oracle drivers of tests/python/cpp (the
// Python tests write their inputs with numpy and read the drivers' outputs):
// tensors by name, F32, I32 or F64 each, plus the file's metadata.
#ifndef LCD_TESTS_PYTHON_CPP_TENSOR_IO_H_
#define LCD_TESTS_PYTHON_CPP_TENSOR_IO_H_

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/safetensors.h"

namespace lcd::test_io {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> f;    // F32 tensors.
  std::vector<int32_t> i;  // I32 tensors.
  std::vector<double> d;   // F64 tensors.
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
};
using Tensors = std::map<std::string, Tensor>;

// Every tensor of the file (F32, I32 or F64; InvalidArgument naming any
// other), and its metadata when `metadata` is given.
inline absl::StatusOr<Tensors> Read(const std::string& path, std::map<std::string, std::string>* metadata = nullptr) {
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::SafetensorsFile> file, runtime::SafetensorsFile::Open(path));
  Tensors out;
  for (const runtime::TensorInfo& t : file->tensors()) {
    Tensor x;
    x.shape = t.shape;
    const size_t n = static_cast<size_t>(t.num_elements());
    if (t.dtype == runtime::StDType::kF32) {
      x.f.resize(n);
      std::memcpy(x.f.data(), file->Data(t), n * 4);
    } else if (t.dtype == runtime::StDType::kI32) {
      x.i.resize(n);
      std::memcpy(x.i.data(), file->Data(t), n * 4);
    } else if (t.dtype == runtime::StDType::kF64) {
      x.d.resize(n);
      std::memcpy(x.d.data(), file->Data(t), n * 8);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", t.name, " must be F32, I32 or F64"));
    }
    out[t.name] = std::move(x);
  }
  if (metadata != nullptr) *metadata = file->metadata();
  return out;
}

// Each tensor as F64 when it has d, else I32 when it has i, else F32.
inline absl::Status Write(const std::string& path, const Tensors& ts) {
  std::vector<runtime::TensorToWrite> w;
  for (const auto& [name, t] : ts) {
    runtime::TensorToWrite x;
    x.name = name;
    x.shape = t.shape;
    if (!t.d.empty()) {
      x.dtype = runtime::StDType::kF64;
      x.bytes = std::string_view(reinterpret_cast<const char*>(t.d.data()), t.d.size() * 8);
    } else if (!t.i.empty()) {
      x.dtype = runtime::StDType::kI32;
      x.bytes = std::string_view(reinterpret_cast<const char*>(t.i.data()), t.i.size() * 4);
    } else {
      x.dtype = runtime::StDType::kF32;
      x.bytes = std::string_view(reinterpret_cast<const char*>(t.f.data()), t.f.size() * 4);
    }
    w.push_back(x);
  }
  return runtime::WriteSafetensors(path, w);
}

inline absl::StatusOr<const Tensor*> Need(const Tensors& in, const std::string& name) {
  auto it = in.find(name);
  if (it == in.end()) return absl::InvalidArgumentError(absl::StrCat("input tensor ", name, " missing"));
  return &it->second;
}

}  // namespace lcd::test_io

#endif  // LCD_TESTS_PYTHON_CPP_TENSOR_IO_H_
