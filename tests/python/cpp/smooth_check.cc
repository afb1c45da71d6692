// Driver for tests/python/test_smoothing.py: activation smoothing
// (lcd/quantizer/smoothing.h) and the W·A8 fake quantizer
// (lcd/kernels/act_quant.h) on inputs given as safetensors.
//
//   smooth_check --fold DIR --in in.safetensors --out out.safetensors
//       Calibration statistics of the model in DIR (CollectCalibrationStats
//       with E[x x^T] of every decoder linear) on tokens I32 [N] (no BOS,
//       metadata window), then SmoothModel with the grid alphas F64 [A],
//       s = 1 excluded (every input is smoothed, so every fold is exercised),
//       the quantizer of the search being 2-bit k-means (metadata group_size).
//       Outputs every parameter of the folded TrainModel under its HF name
//       and "alphas_chosen" F64 [inputs].
//   smooth_check --alpha --in in.safetensors --out out.safetensors
//       ChooseSmoothing on weights w0..w{n-1} [rows_i][cols] reading samples
//       x [N][cols] (max|x_j|, E[x_j^2] and E[x x^T] computed here in double),
//       grid alphas F64 [A], optional tie I32 [cols]; quantizer k-means with
//       metadata bits and group_size. Outputs "chosen" F64 [1] (-1 = off),
//       "error" F64 [1], "error_off" F64 [1], "errors" F64 [A], "s" [cols];
//       and, for every candidate row of s_candidates [C][cols] given, the
//       dequantized Q(w_i diag s; E[x^2]/s^2) as "q<i>_<c>" [rows_i][cols]
//       (the test restates the search in numpy around these).
//   smooth_check --a8 --in in.safetensors --out out.safetensors
//       x [T][K], w [N][K], b [N], dout [T][N]: xq = FakeQuantizeInt8PerToken(x),
//       out = xq w^T + b, and the backward of TrainModel's A8 linear
//       (weight gradient from xq, input gradient straight through): outputs
//       "xq", "out", "dx", "dw", "db".
//   smooth_check --a8model DIR --in in.safetensors --out out.safetensors
//       TrainModel of DIR with every weight whose "<prefix>.centroids"
//       [rows][groups][k] is given codebook-quantized (codes = nearest
//       centroid, metadata group_size) and SetActivationBits(8): CE on tokens
//       and targets I32 [B][L]; outputs loss F64 [1], logits [B][L][V] and
//       every parameter's gradient under its name.
#include <cmath>
#include <cstdio>
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
#include "lcd/kernels/act_quant.h"
#include "lcd/kernels/dtype.h"
#include "lcd/quantizer/calibration.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "lcd/quantizer/smoothing.h"
#include "lcd/quantizer/train/ops.h"
#include "lcd/quantizer/train/train_model.h"
#include "lcd/runtime/model.h"
#include "tensor_io.h"

namespace {

namespace q = lcd::quantizer;
namespace tr = lcd::quantizer::train;
using lcd::test_io::Need;
using lcd::test_io::Read;
using lcd::test_io::Tensor;
using lcd::test_io::Tensors;
using lcd::test_io::Write;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "smooth_check: %s\n", msg.c_str());
  return 1;
}

// k-means at `bits`, decoded to fp32 (the codebook formula of ARTIFACT.md).
q::DequantFn Kmeans(int bits, int64_t group_size) {
  return [bits, group_size](const float* w, int64_t rows, int64_t cols,
                            const float* importance) -> absl::StatusOr<std::vector<float>> {
    LCD_ASSIGN_OR_RETURN(q::QuantizedMatrix m, q::QuantizeKmeans(w, rows, cols, bits, group_size, importance, 20));
    const int64_t groups = (cols + group_size - 1) / group_size, k = int64_t{1} << bits;
    const int64_t row_bytes = m.layout.CodeRowBytes();
    std::vector<float> out(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        int code = 0;
        for (int b = 0; b < bits; ++b) {
          const int64_t bit = c * bits + b;
          code |= ((m.codes[r * row_bytes + bit / 8] >> (bit % 8)) & 1) << b;
        }
        out[r * cols + c] = lcd::kernels::Fp16ToFloat(m.params[(r * groups + c / group_size) * k + code]);
      }
    }
    return out;
  };
}

Tensor F64(std::vector<double> v) {
  Tensor t;
  t.shape = {static_cast<int64_t>(v.size())};
  t.d = std::move(v);
  return t;
}

absl::Status Fold(const std::string& dir, const Tensors& in, const std::map<std::string, std::string>& meta,
                  Tensors& out) {
  LCD_ASSIGN_OR_RETURN(const Tensor* tokens, Need(in, "tokens"));
  LCD_ASSIGN_OR_RETURN(const Tensor* alphas, Need(in, "alphas"));
  const int64_t window = std::stoll(meta.at("window"));
  const int64_t group = std::stoll(meta.at("group_size"));
  lcd::runtime::ModelOptions mo;
  mo.num_threads = 2;
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<lcd::runtime::Model> model, lcd::runtime::Model::Load(dir, mo));
  q::CalibrationOptions co;
  co.window = window;
  co.gram_for = [](std::string_view w) { return w != "lm_head.weight"; };
  LCD_ASSIGN_OR_RETURN(q::CalibrationStats stats, q::CollectCalibrationStats(*model, tokens->i, co));
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<tr::TrainModel> student, tr::TrainModel::FromCheckpoint(dir, 2));
  LCD_ASSIGN_OR_RETURN(q::SmoothingReport r, q::SmoothModel(*student, stats, alphas->d, Kmeans(2, group),
                                                            /*allow_off=*/false));
  for (const tr::ParamTensor& t : student->tensors()) {
    Tensor x;
    x.shape = t.shape;
    x.f.assign(student->params() + t.offset, student->params() + t.offset + t.size);
    out[t.name] = std::move(x);
  }
  out["alphas_chosen"] = F64(r.alphas);
  return absl::OkStatus();
}

absl::Status Alpha(const Tensors& in, const std::map<std::string, std::string>& meta, Tensors& out) {
  LCD_ASSIGN_OR_RETURN(const Tensor* x, Need(in, "x"));
  LCD_ASSIGN_OR_RETURN(const Tensor* alphas, Need(in, "alphas"));
  const int bits = std::stoi(meta.at("bits"));
  const int64_t group = std::stoll(meta.at("group_size"));
  const int64_t n = x->shape[0], cols = x->shape[1];
  std::vector<double> sq(static_cast<size_t>(cols), 0.0);
  std::vector<float> max_x(static_cast<size_t>(cols), 0.0f), mean_sq(static_cast<size_t>(cols));
  q::InputGram g;
  g.cols = cols;
  g.samples = n;
  g.xtx.assign(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    const float* row = x->f.data() + t * cols;
    for (int64_t i = 0; i < cols; ++i) {
      max_x[i] = std::max(max_x[i], std::abs(row[i]));
      sq[i] += static_cast<double>(row[i]) * row[i];
      for (int64_t j = 0; j < cols; ++j) g.xtx[i * cols + j] += static_cast<double>(row[i]) * row[j];
    }
  }
  for (double& v : g.xtx) v /= static_cast<double>(n);
  for (int64_t i = 0; i < cols; ++i) mean_sq[i] = static_cast<float>(sq[i] / static_cast<double>(n));
  std::vector<q::SmoothWeight> ws;
  for (int i = 0;; ++i) {
    auto it = in.find(absl::StrCat("w", i));
    if (it == in.end()) break;
    ws.push_back({it->second.f.data(), it->second.shape[0]});
  }
  std::vector<int64_t> tie;
  if (auto it = in.find("tie"); it != in.end()) tie.assign(it->second.i.begin(), it->second.i.end());
  const q::DequantFn quant = Kmeans(bits, group);
  LCD_ASSIGN_OR_RETURN(q::SmoothingChoice c, q::ChooseSmoothing(ws, cols, max_x, mean_sq, g, alphas->d, tie, quant));
  out["chosen"] = F64({c.alpha});
  out["error"] = F64({c.error});
  out["error_off"] = F64({c.error_off});
  out["errors"] = F64(c.errors);
  Tensor s;
  s.shape = {cols};
  s.f = c.s;
  out["s"] = s;
  if (auto it = in.find("s_candidates"); it != in.end()) {
    const int64_t cands = it->second.shape[0];
    std::vector<float> w_s, imp(static_cast<size_t>(cols));
    for (int64_t k = 0; k < cands; ++k) {
      const float* sc = it->second.f.data() + k * cols;
      for (int64_t j = 0; j < cols; ++j) imp[j] = static_cast<float>(static_cast<double>(mean_sq[j]) / (static_cast<double>(sc[j]) * sc[j]));
      for (size_t i = 0; i < ws.size(); ++i) {
        w_s.assign(ws[i].w, ws[i].w + ws[i].rows * cols);
        for (int64_t e = 0; e < ws[i].rows * cols; ++e) w_s[e] *= sc[e % cols];
        LCD_ASSIGN_OR_RETURN(std::vector<float> qw, quant(w_s.data(), ws[i].rows, cols, imp.data()));
        Tensor t;
        t.shape = {ws[i].rows, cols};
        t.f = std::move(qw);
        out[absl::StrCat("q", i, "_", k)] = std::move(t);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status A8(const Tensors& in, Tensors& out) {
  LCD_ASSIGN_OR_RETURN(const Tensor* x, Need(in, "x"));
  LCD_ASSIGN_OR_RETURN(const Tensor* w, Need(in, "w"));
  LCD_ASSIGN_OR_RETURN(const Tensor* b, Need(in, "b"));
  LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
  const int64_t T = x->shape[0], K = x->shape[1], N = w->shape[0];
  Tensor xq{x->shape, std::vector<float>(x->f.size())}, y{{T, N}, std::vector<float>(static_cast<size_t>(T * N))};
  lcd::kernels::FakeQuantizeInt8PerToken(x->f.data(), T, K, xq.f.data());
  tr::LinearForward(xq.f.data(), w->f.data(), b->f.data(), T, K, N, y.f.data());
  Tensor dx{x->shape, std::vector<float>(x->f.size(), 0.0f)}, dw{w->shape, std::vector<float>(w->f.size(), 0.0f)},
      db{b->shape, std::vector<float>(b->f.size(), 0.0f)};
  tr::LinearBackward(dout->f.data(), xq.f.data(), w->f.data(), T, K, N, dx.f.data(), dw.f.data(), db.f.data(), nullptr);
  out["xq"] = std::move(xq);
  out["out"] = std::move(y);
  out["dx"] = std::move(dx);
  out["dw"] = std::move(dw);
  out["db"] = std::move(db);
  return absl::OkStatus();
}

// --a8model DIR: TrainModel with every weight whose "<prefix>.centroids"
// is given codebook-quantized (codes = nearest centroid), A8 on, CE on
// tokens/targets I32 [B][L]: outputs loss F64 [1], logits, every gradient,
// and "a8.<weight>": the quantized linear's int8-grid input [T][K].
absl::Status A8Model(const std::string& dir, const Tensors& in, const std::map<std::string, std::string>& meta,
                     Tensors& out) {
  LCD_ASSIGN_OR_RETURN(const Tensor* tokens, Need(in, "tokens"));
  LCD_ASSIGN_OR_RETURN(const Tensor* targets, Need(in, "targets"));
  const int64_t group = std::stoll(meta.at("group_size"));
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<tr::TrainModel> model, tr::TrainModel::FromCheckpoint(dir, 2));
  std::vector<std::pair<std::string, tr::CodebookSpec>> specs;
  for (const tr::ParamTensor& t : model->tensors()) {
    if (!t.name.ends_with(".weight")) continue;
    auto it = in.find(t.name.substr(0, t.name.size() - 7) + ".centroids");
    if (it != in.end()) specs.push_back({t.name, tr::CodebookSpec{group, it->second.shape[2]}});
  }
  LCD_RETURN_IF_ERROR(model->EnableCodebook(specs));
  for (const auto& [name, spec] : specs) {
    const std::string cname = name.substr(0, name.size() - 7) + ".centroids";
    LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, model->Find(cname));
    const Tensor& c = in.at(cname);
    if (c.numel() != t->size) return absl::InvalidArgumentError(cname + " has the wrong size");
    std::copy(c.f.begin(), c.f.end(), model->params() + t->offset);
  }
  model->ReassignCodes();
  LCD_RETURN_IF_ERROR(model->SetActivationBits(8));
  // The int8-grid input of each quantized linear, as the forward saw it:
  // "a8.<weight name>" [T][K], so that the test can replay rounding ties.
  std::map<int64_t, std::string> names;
  for (const tr::ParamTensor& t : model->tensors()) names[t.offset] = t.name;
  model->SetActivationObserver([&](int64_t w, const float* x_q, int64_t T, int64_t K) {
    Tensor& t = out["a8." + names.at(w)];
    if (!t.f.empty()) return;  // The first forward's; a recompute sees the same.
    t.shape = {T, K};
    t.f.assign(x_q, x_q + T * K);
  });
  const int64_t B = tokens->shape[0], L = tokens->shape[1], V = model->config().vocab_size;
  model->ZeroGrad();
  LCD_RETURN_IF_ERROR(model->Forward(tokens->i.data(), B, L));
  model->SetActivationObserver(nullptr);
  const double loss = tr::CrossEntropyLoss(model->logits(), targets->i.data(), B * L, V, model->dlogits(), model->pool());
  Tensor logits;
  logits.shape = {B, L, V};
  logits.f.assign(model->logits(), model->logits() + B * L * V);
  model->Backward();
  out["loss"] = F64({loss});
  out["logits"] = std::move(logits);
  for (const tr::ParamTensor& t : model->tensors()) {
    Tensor g;
    g.shape = t.shape;
    g.f.assign(model->grads() + t.offset, model->grads() + t.offset + t.size);
    out[t.name] = std::move(g);
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("smooth_check", "Activation smoothing and A8 on safetensors inputs");
  options.add_options()("fold", "model dir: smooth and fold", cxxopts::value<std::string>())(
      "alpha", "alpha search on one input")("a8", "A8 fake quantizer + linear")(
      "a8model", "model dir: codebook + A8 TrainModel forward/backward", cxxopts::value<std::string>())(
      "in", "input safetensors", cxxopts::value<std::string>())("out", "output safetensors",
                                                                cxxopts::value<std::string>());
  try {
    auto r = options.parse(argc, argv);
    if (!r.count("in") || !r.count("out")) return Fail("--in and --out are required");
    std::map<std::string, std::string> meta;
    absl::StatusOr<Tensors> in = Read(r["in"].as<std::string>(), &meta);
    if (!in.ok()) return Fail(std::string(in.status().message()));
    Tensors out;
    absl::Status s = r.count("fold")  ? Fold(r["fold"].as<std::string>(), *in, meta, out)
                     : r.count("alpha") ? Alpha(*in, meta, out)
                     : r.count("a8")    ? A8(*in, out)
                     : r.count("a8model") ? A8Model(r["a8model"].as<std::string>(), *in, meta, out)
                                        : absl::InvalidArgumentError("one of --fold, --alpha, --a8");
    if (!s.ok()) return Fail(std::string(s.message()));
    s = Write(r["out"].as<std::string>(), out);
    if (!s.ok()) return Fail(std::string(s.message()));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
  return 0;
}
