// Driver for tests/python/test_bitdistiller.py: runs BitDistiller's
// quantizers (lcd/quantizer/bitdistiller.h) and its training-loop quantizer
// (lcd/quantizer/train/bitdistiller_loop.h) on inputs from a safetensors
// file and writes what they computed as another.
//
//   bitdistiller_check --op clip --bits B --group-size G --in IN --out OUT
//       Inputs: w F32 [R][C], optional h F64 [C][C] (E[x x^T]; absent: no
//       search). Runs BitDistillerClipSearch, ApplyBitDistillerClip and
//       QuantizeBitDistiller on the clipped w. Outputs: a_step, b_step I32
//       [R][G]; lo, hi F32 [R][G]; err F64 [R][G]; clipped F32 [R][C];
//       packed I32 [R][row_bytes] (the code bytes); params I32 [R][G][P]
//       (the fp16 bit patterns); format I32 [1] (0 codebook, 1 affine).
//   bitdistiller_check --op loop --bits B --group-size G [--no-range-grad]
//       Inputs: w F32 [R][C], dw_hat F32 [R][C], optional init_dw F32.
//       Outputs: w_hat F32 (Decode), codes I32 (Assign), dw F32 (Backward
//       accumulated onto init_dw, or zeros).
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cxxopts.hpp"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/bitdistiller.h"
#include "lcd/quantizer/train/bitdistiller_loop.h"
#include "lcd/runtime/safetensors.h"
#include "tensor_io.h"

namespace {

namespace lq = lcd::quantizer;
using lcd::runtime::StDType;

using lcd::test_io::Read;
using lcd::test_io::Tensor;
using lcd::test_io::Tensors;
using lcd::test_io::Write;

Tensor Ints(std::vector<int64_t> shape, const std::vector<int32_t>& v) {
  Tensor t;
  t.shape = std::move(shape);
  t.i = v;
  return t;
}

absl::Status Clip(const Tensors& in, int bits, int64_t g, lcd::kernels::ThreadPool* pool, Tensors& out) {
  auto wi = in.find("w");
  if (wi == in.end() || wi->second.shape.size() != 2) return absl::InvalidArgumentError("w [R][C] F32 missing");
  const int64_t R = wi->second.shape[0], C = wi->second.shape[1];
  std::vector<float> w = wi->second.f;
  lq::InputGram gram;
  auto hi = in.find("h");
  if (hi != in.end()) {
    gram.cols = C;
    gram.xtx = hi->second.d;
  }
  LCD_ASSIGN_OR_RETURN(lq::BitDistillerClip clip, lq::BitDistillerClipSearch(w.data(), R, C, bits, g,
                                                                              hi != in.end() ? &gram : nullptr, pool));
  lq::ApplyBitDistillerClip(clip, w.data(), C, g);
  LCD_ASSIGN_OR_RETURN(lq::QuantizedMatrix q, lq::QuantizeBitDistiller(w.data(), R, C, bits, g, pool));
  const int64_t G = clip.groups;
  out["a_step"] = Ints({R, G}, std::vector<int32_t>(clip.a_step.begin(), clip.a_step.end()));
  out["b_step"] = Ints({R, G}, std::vector<int32_t>(clip.b_step.begin(), clip.b_step.end()));
  out["lo"].shape = {R, G};
  out["lo"].f = clip.lo;
  out["hi"].shape = {R, G};
  out["hi"].f = clip.hi;
  out["err"].shape = {R, G};
  out["err"].d = clip.err;
  out["clipped"].shape = {R, C};
  out["clipped"].f = w;
  out["packed"] = Ints({R, q.layout.CodeRowBytes()}, std::vector<int32_t>(q.codes.begin(), q.codes.end()));
  const int64_t P = static_cast<int64_t>(q.params.size()) / (R * G);
  out["params"] = Ints({R, G, P}, std::vector<int32_t>(q.params.begin(), q.params.end()));
  out["format"] = Ints({1}, {q.layout.format == lcd::kernels::QuantFormat::kCodebook ? 0 : 1});
  return absl::OkStatus();
}

absl::Status Loop(const Tensors& in, int bits, int64_t g, bool range_grad, lcd::kernels::ThreadPool* pool,
                  Tensors& out) {
  auto wi = in.find("w");
  auto di = in.find("dw_hat");
  if (wi == in.end() || di == in.end()) return absl::InvalidArgumentError("w and dw_hat are required");
  const int64_t R = wi->second.shape[0], C = wi->second.shape[1];
  lcd::quantizer::train::BitDistillerLoopQuantizer q(R, C, g, bits, range_grad);
  Tensor w_hat, dw, codes;
  w_hat.shape = dw.shape = codes.shape = {R, C};
  w_hat.f.resize(static_cast<size_t>(R * C));
  auto init = in.find("init_dw");
  dw.f = init != in.end() ? init->second.f : std::vector<float>(static_cast<size_t>(R * C), 0.0f);
  q.Decode(wi->second.f.data(), nullptr, w_hat.f.data(), pool);
  q.Backward(wi->second.f.data(), nullptr, di->second.f.data(), dw.f.data(), nullptr, pool);
  q.Assign(wi->second.f.data(), nullptr, q.codes().data(), pool);
  codes.i.assign(q.codes().begin(), q.codes().end());
  out["w_hat"] = std::move(w_hat);
  out["dw"] = std::move(dw);
  out["codes"] = std::move(codes);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("bitdistiller_check", "Run BitDistiller's quantizers on safetensors inputs");
  options.add_options()("op", "clip or loop", cxxopts::value<std::string>())(
      "in", "input safetensors", cxxopts::value<std::string>())("out", "output safetensors",
                                                                cxxopts::value<std::string>())(
      "bits", "bits", cxxopts::value<int>()->default_value("2"))(
      "group-size", "group size", cxxopts::value<int64_t>()->default_value("64"))(
      "threads", "threads", cxxopts::value<int>()->default_value("2"))("no-range-grad", "straight-through only");
  try {
    auto r = options.parse(argc, argv);
    if (!r.count("op") || !r.count("in") || !r.count("out")) {
      std::fprintf(stderr, "--op, --in and --out are required\n");
      return 2;
    }
    absl::StatusOr<Tensors> in = Read(r["in"].as<std::string>());
    if (!in.ok()) {
      std::fprintf(stderr, "%s\n", in.status().ToString().c_str());
      return 1;
    }
    lcd::kernels::ThreadPool pool(r["threads"].as<int>());
    Tensors out;
    const std::string op = r["op"].as<std::string>();
    const int bits = r["bits"].as<int>();
    const int64_t g = r["group-size"].as<int64_t>();
    absl::Status st = op == "clip"   ? Clip(*in, bits, g, &pool, out)
                      : op == "loop" ? Loop(*in, bits, g, r.count("no-range-grad") == 0, &pool, out)
                                     : absl::InvalidArgumentError("unknown --op " + op);
    if (st.ok()) st = Write(r["out"].as<std::string>(), out);
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  return 0;
}
