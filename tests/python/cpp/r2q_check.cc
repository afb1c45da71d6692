// Driver for tests/python/test_r2q.py: runs R2Q's quantizer
// (lcd/quantizer/r2q.h) and its training-loop quantizer
// (lcd/quantizer/train/r2q_loop_quantizer.h) on inputs given as a
// safetensors file and writes what they computed as another, for comparison
// with numpy / torch float64 references.
//
//   r2q_check --op fit --in in.safetensors --out out.safetensors
//       Inputs: w F32 [rows][cols], optional importance F32 [cols];
//       metadata group_size, refit. Outputs: per (row, group) R2qFitGroup's
//       alphas F32 [rows][groups][2], codes I32 [rows][cols] and objective
//       F64 [rows][groups][refit+1]; QuantizeR2q's stored matrix: params F32
//       [rows][groups][3] (fp16 widened), qcodes I32 [rows][cols] (read with
//       kernels::CanonicalCode), dequant F32 [rows][cols]
//       (kernels::DequantizeRows) and error F64 [1] (WeightedSquaredError
//       with the importance). A QuantizeR2q error is printed and exits 1.
//   r2q_check --op loop --in in.safetensors --out out.safetensors
//       One linear y = x Ŵ^T through R2qLoopQuantizer: x F32 [T][K], latent
//       w F32 [N][K], alphas F32 [N][G][2], dout F32 [T][N], optional
//       init_dw / init_dalphas (the gradients start there, to test that
//       Backward accumulates); metadata group_size. Codes = Assign(w,
//       alphas). Outputs: codes I32 [N][K], out [T][N], dx, dw, dalphas.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cxxopts.hpp"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/quant_linear.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "lcd/quantizer/r2q.h"
#include "lcd/quantizer/train/ops.h"
#include "lcd/quantizer/train/r2q_loop_quantizer.h"
#include "lcd/runtime/safetensors.h"
#include "tensor_io.h"

namespace {

namespace q = lcd::quantizer;
namespace tr = lcd::quantizer::train;
using lcd::runtime::SafetensorsFile;
using lcd::runtime::StDType;
using lcd::runtime::TensorToWrite;

using lcd::test_io::Need;
using lcd::test_io::Read;
using lcd::test_io::Tensor;
using lcd::test_io::Tensors;
using lcd::test_io::Write;

absl::StatusOr<int64_t> MetaInt(const std::map<std::string, std::string>& meta, const std::string& k) {
  auto it = meta.find(k);
  if (it == meta.end()) return absl::InvalidArgumentError(absl::StrCat("metadata ", k, " missing"));
  return std::stoll(it->second);
}

Tensor Zeros(std::vector<int64_t> shape) {
  Tensor t;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t s : t.shape) n *= s;
  t.f.assign(static_cast<size_t>(n), 0.0f);
  return t;
}

absl::Status Fit(const Tensors& in, const std::map<std::string, std::string>& meta, Tensors& out,
                 lcd::kernels::ThreadPool* pool) {
  LCD_ASSIGN_OR_RETURN(const Tensor* w, Need(in, "w"));
  LCD_ASSIGN_OR_RETURN(int64_t gs, MetaInt(meta, "group_size"));
  LCD_ASSIGN_OR_RETURN(int64_t refit, MetaInt(meta, "refit"));
  const float* imp = in.count("importance") ? in.at("importance").f.data() : nullptr;
  const int64_t rows = w->shape[0], cols = w->shape[1];
  LCD_ASSIGN_OR_RETURN(q::QuantizedMatrix m, q::QuantizeR2q(w->f.data(), rows, cols, gs, imp, static_cast<int>(refit),
                                                            pool));
  const int64_t groups = m.layout.groups();
  Tensor alphas = Zeros({rows, groups, 2});
  Tensor codes;
  codes.shape = {rows, cols};
  codes.i.resize(static_cast<size_t>(rows * cols));
  Tensor obj;
  obj.shape = {rows, groups, refit + 1};
  obj.d.resize(static_cast<size_t>(rows * groups * (refit + 1)));
  std::vector<uint8_t> c8(static_cast<size_t>(gs));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * gs, n = std::min(cols, c0 + gs) - c0;
      q::R2qFitGroup(w->f.data() + r * cols + c0, imp ? imp + c0 : nullptr, n, static_cast<int>(refit),
                     alphas.f.data() + (r * groups + g) * 2, c8.data(), obj.d.data() + (r * groups + g) * (refit + 1));
      for (int64_t j = 0; j < n; ++j) codes.i[r * cols + c0 + j] = c8[j];
    }
  }
  Tensor params = Zeros({rows, groups, 3});
  for (size_t k = 0; k < m.params.size(); ++k) params.f[k] = lcd::kernels::Fp16ToFloat(m.params[k]);
  const lcd::kernels::QuantMatrixView view{m.layout, m.codes.data(), m.params.data()};
  Tensor qcodes;
  qcodes.shape = {rows, cols};
  qcodes.i.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) qcodes.i[r * cols + c] = lcd::kernels::CanonicalCode(view, r, c);
  }
  Tensor dequant = Zeros({rows, cols});
  lcd::kernels::DequantizeRows(view, 0, rows, dequant.f.data());
  LCD_ASSIGN_OR_RETURN(double err, q::WeightedSquaredError(w->f.data(), rows, cols, m, imp));
  Tensor e;
  e.shape = {1};
  e.d = {err};
  out["alphas"] = std::move(alphas);
  out["codes"] = std::move(codes);
  out["objective"] = std::move(obj);
  out["params"] = std::move(params);
  out["qcodes"] = std::move(qcodes);
  out["dequant"] = std::move(dequant);
  out["error"] = std::move(e);
  return absl::OkStatus();
}

absl::Status Loop(const Tensors& in, const std::map<std::string, std::string>& meta, Tensors& out,
                  lcd::kernels::ThreadPool* pool) {
  LCD_ASSIGN_OR_RETURN(const Tensor* x, Need(in, "x"));
  LCD_ASSIGN_OR_RETURN(const Tensor* w, Need(in, "w"));
  LCD_ASSIGN_OR_RETURN(const Tensor* alphas, Need(in, "alphas"));
  LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
  LCD_ASSIGN_OR_RETURN(int64_t gs, MetaInt(meta, "group_size"));
  const int64_t T = x->shape[0], K = x->shape[1], N = w->shape[0];
  tr::R2qLoopQuantizer lq(N, K, gs);
  if (alphas->shape != lq.param_shape()) return absl::InvalidArgumentError("alphas must be [N][groups][2]");
  lq.Assign(w->f.data(), alphas->f.data(), lq.codes().data(), pool);
  std::vector<float> w_hat(static_cast<size_t>(N * K)), dw_hat(w_hat.size(), 0.0f);
  lq.Decode(w->f.data(), alphas->f.data(), w_hat.data(), pool);
  Tensor y = Zeros({T, N});
  tr::LinearForward(x->f.data(), w_hat.data(), nullptr, T, K, N, y.f.data());
  Tensor dx = Zeros({T, K});
  Tensor dw = in.count("init_dw") ? in.at("init_dw") : Zeros(w->shape);
  Tensor da = in.count("init_dalphas") ? in.at("init_dalphas") : Zeros(alphas->shape);
  tr::LinearBackward(dout->f.data(), x->f.data(), w_hat.data(), T, K, N, dx.f.data(), dw_hat.data(), nullptr, pool);
  lq.Backward(w->f.data(), alphas->f.data(), dw_hat.data(), dw.f.data(), da.f.data(), pool);
  Tensor codes;
  codes.shape = {N, K};
  codes.i.assign(lq.codes().begin(), lq.codes().end());
  out["codes"] = std::move(codes);
  out["out"] = std::move(y);
  out["dx"] = std::move(dx);
  out["dw"] = std::move(dw);
  out["dalphas"] = std::move(da);
  return absl::OkStatus();
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "r2q_check: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("r2q_check", "Run R2Q's quantizers on safetensors inputs");
  options.add_options()("op", "fit or loop", cxxopts::value<std::string>())(
      "in", "input safetensors", cxxopts::value<std::string>())("out", "output safetensors",
                                                                cxxopts::value<std::string>())(
      "threads", "threads", cxxopts::value<int>()->default_value("2"));
  try {
    auto r = options.parse(argc, argv);
    if (!r.count("op") || !r.count("in") || !r.count("out")) return Fail("--op, --in and --out are required");
    std::map<std::string, std::string> meta;
    absl::StatusOr<Tensors> in = Read(r["in"].as<std::string>(), &meta);
    if (!in.ok()) return Fail(in.status().ToString());
    lcd::kernels::ThreadPool pool(r["threads"].as<int>());
    Tensors out;
    const std::string op = r["op"].as<std::string>();
    absl::Status st = op == "fit"    ? Fit(*in, meta, out, &pool)
                      : op == "loop" ? Loop(*in, meta, out, &pool)
                                     : absl::InvalidArgumentError(absl::StrCat("unknown op ", op));
    if (!st.ok()) return Fail(st.ToString());
    st = Write(r["out"].as<std::string>(), out);
    if (!st.ok()) return Fail(st.ToString());
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
  return 0;
}
