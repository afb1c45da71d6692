// Driver for tests/python/test_gptq.py: runs lcd's GPTQ (and RTN) on one
// matrix given as a safetensors file and writes what they produced.
//
//   gptq_dump --in in.safetensors --out out.safetensors --bits B --group-size G
//             [--act-order] [--damp D] [--block-size K] [--threads T]
// Inputs: "w" F32 [rows][cols], "h" F64 [cols][cols] (E[x x^T]).
// Outputs: "codes" I32 [rows][cols] (original column order), "scale" and
// "zero" F32 [rows][groups] (the stored fp16 values, widened), "perm" I32
// [cols], "u" F64 [cols][cols] (the prepared factor, processing order),
// "damp" F64 [1], "rtn_codes" I32, "rtn_scale", "rtn_zero" F32 (QuantizeRtn
// on the same w), "output_error" F64 [2] (LayerOutputError of GPTQ, RTN).
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cxxopts.hpp"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/gptq.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "lcd/runtime/safetensors.h"

namespace {

using lcd::runtime::StDType;
using lcd::runtime::TensorToWrite;

struct Out {
  std::string name;
  std::vector<int64_t> shape;
  StDType dtype;
  std::string bytes;
};

template <typename T>
Out Make(const std::string& name, std::vector<int64_t> shape, StDType dtype, const std::vector<T>& v) {
  return {name, std::move(shape), dtype, std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T))};
}

// Codes one int per weight and (scale, zero) per group from a kAffine matrix.
void Unpack(const lcd::quantizer::QuantizedMatrix& q, std::vector<int32_t>* codes, std::vector<float>* scale,
            std::vector<float>* zero) {
  const auto& l = q.layout;
  const int64_t groups = l.groups(), row_bytes = l.CodeRowBytes();
  codes->resize(static_cast<size_t>(l.rows * l.cols));
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t c = 0; c < l.cols; ++c) {
      const int64_t bit = c * l.bits;
      uint32_t v = q.codes[r * row_bytes + bit / 8];
      if (bit % 8 + l.bits > 8) v |= static_cast<uint32_t>(q.codes[r * row_bytes + bit / 8 + 1]) << 8;
      (*codes)[r * l.cols + c] = static_cast<int32_t>((v >> (bit % 8)) & ((1u << l.bits) - 1u));
    }
  }
  scale->resize(static_cast<size_t>(l.rows * groups));
  zero->resize(scale->size());
  for (size_t i = 0; i < scale->size(); ++i) {
    (*scale)[i] = lcd::kernels::Fp16ToFloat(q.params[2 * i]);
    (*zero)[i] = lcd::kernels::Fp16ToFloat(q.params[2 * i + 1]);
  }
}

absl::Status Run(const std::string& in, const std::string& out, int bits, int64_t group_size,
                 const lcd::quantizer::GptqOptions& opts, int threads) {
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<lcd::runtime::SafetensorsFile> file, lcd::runtime::SafetensorsFile::Open(in));
  std::vector<float> w;
  std::vector<double> h;
  int64_t rows = 0, cols = 0;
  for (const lcd::runtime::TensorInfo& t : file->tensors()) {
    if (t.name == "w" && t.dtype == StDType::kF32 && t.shape.size() == 2) {
      rows = t.shape[0], cols = t.shape[1];
      w.resize(static_cast<size_t>(rows * cols));
      std::memcpy(w.data(), file->Data(t), w.size() * 4);
    } else if (t.name == "h" && t.dtype == StDType::kF64) {
      h.resize(static_cast<size_t>(t.num_elements()));
      std::memcpy(h.data(), file->Data(t), h.size() * 8);
    }
  }
  if (w.empty() || h.size() != static_cast<size_t>(cols * cols)) {
    return absl::InvalidArgumentError("need w F32 [rows][cols] and h F64 [cols][cols]");
  }
  lcd::kernels::ThreadPool pool(threads);
  LCD_ASSIGN_OR_RETURN(lcd::quantizer::GptqHessian hs, lcd::quantizer::PrepareGptqHessian(h.data(), cols, opts));
  LCD_ASSIGN_OR_RETURN(lcd::quantizer::QuantizedMatrix q,
                       lcd::quantizer::QuantizeGptq(w.data(), rows, cols, bits, group_size, hs, &pool));
  LCD_ASSIGN_OR_RETURN(lcd::quantizer::QuantizedMatrix r,
                       lcd::quantizer::QuantizeRtn(w.data(), rows, cols, bits, group_size, &pool));
  LCD_ASSIGN_OR_RETURN(double eq, lcd::quantizer::LayerOutputError(w.data(), rows, cols, q, h.data()));
  LCD_ASSIGN_OR_RETURN(double er, lcd::quantizer::LayerOutputError(w.data(), rows, cols, r, h.data()));
  const int64_t groups = q.layout.groups();
  std::vector<int32_t> codes, rcodes;
  std::vector<float> scale, zero, rscale, rzero;
  Unpack(q, &codes, &scale, &zero);
  Unpack(r, &rcodes, &rscale, &rzero);
  std::vector<Out> outs = {
      Make("codes", {rows, cols}, StDType::kI32, codes),
      Make("scale", {rows, groups}, StDType::kF32, scale),
      Make("zero", {rows, groups}, StDType::kF32, zero),
      Make("rtn_codes", {rows, cols}, StDType::kI32, rcodes),
      Make("rtn_scale", {rows, groups}, StDType::kF32, rscale),
      Make("rtn_zero", {rows, groups}, StDType::kF32, rzero),
      Make("perm", {cols}, StDType::kI32, hs.perm),
      Make("u", {cols, cols}, StDType::kF64, hs.u),
      Make("damp", {1}, StDType::kF64, std::vector<double>{hs.damp}),
      Make("output_error", {2}, StDType::kF64, std::vector<double>{eq, er}),
  };
  std::vector<TensorToWrite> tw;
  for (const Out& o : outs) {
    TensorToWrite t;
    t.name = o.name;
    t.shape = o.shape;
    t.dtype = o.dtype;
    t.bytes = o.bytes;
    tw.push_back(t);
  }
  return lcd::runtime::WriteSafetensors(out, tw);
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("gptq_dump", "lcd's GPTQ on one matrix, for the numpy reference test");
  options.add_options()("in", "", cxxopts::value<std::string>())("out", "", cxxopts::value<std::string>())(
      "bits", "", cxxopts::value<int>())("group-size", "", cxxopts::value<int64_t>())("act-order", "")(
      "damp", "", cxxopts::value<double>()->default_value("0.01"))(
      "block-size", "", cxxopts::value<int64_t>()->default_value("128"))(
      "threads", "", cxxopts::value<int>()->default_value("1"));
  try {
    cxxopts::ParseResult f = options.parse(argc, argv);
    lcd::quantizer::GptqOptions opts;
    opts.act_order = f.count("act-order") > 0;
    opts.percdamp = f["damp"].as<double>();
    opts.block_size = f["block-size"].as<int64_t>();
    absl::Status s = Run(f["in"].as<std::string>(), f["out"].as<std::string>(), f["bits"].as<int>(),
                         f["group-size"].as<int64_t>(), opts, f["threads"].as<int>());
    if (!s.ok()) {
      std::fprintf(stderr, "gptq_dump: %s\n", s.ToString().c_str());
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gptq_dump: %s\n", e.what());
    return 2;
  }
  return 0;
}
