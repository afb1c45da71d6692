// Adaptive activation smoothing (contract in smoothing.h).
#include "lcd/quantizer/smoothing.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <cblas.h>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"

namespace lcd::quantizer {
namespace {

constexpr float kMinScale = 1e-4f, kMaxScale = 1e4f;

void ColumnAbsMax(const float* w, int64_t rows, int64_t cols, std::vector<float>& out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[c] = std::max(out[c], std::abs(w[r * cols + c]));
  }
}

}  // namespace

std::vector<double> DefaultSmoothingAlphas() { return {0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}; }

std::vector<float> SmoothingScales(const std::vector<float>& max_x, const std::vector<float>& max_w, double alpha,
                                   const std::vector<int64_t>& tie) {
  const int64_t cols = static_cast<int64_t>(max_x.size());
  std::vector<float> cx(max_x.size(), 0.0f), cw(max_x.size(), 0.0f);
  auto cls = [&](int64_t j) { return tie.empty() ? j : tie[j]; };
  for (int64_t j = 0; j < cols; ++j) {
    cx[cls(j)] = std::max(cx[cls(j)], max_x[j]);
    cw[cls(j)] = std::max(cw[cls(j)], max_w[j]);
  }
  std::vector<double> raw(max_x.size(), 0.0);
  double log_sum = 0.0;
  int64_t valid = 0;
  for (int64_t j = 0; j < cols; ++j) {
    const int64_t c = cls(j);
    if (cx[c] > 0.0f && cw[c] > 0.0f) {
      raw[j] = std::pow(static_cast<double>(cx[c]), alpha) / std::pow(static_cast<double>(cw[c]), 1.0 - alpha);
      log_sum += std::log(raw[j]);
      ++valid;
    }
  }
  const double gm = valid > 0 ? std::exp(log_sum / static_cast<double>(valid)) : 1.0;
  std::vector<float> s(max_x.size(), 1.0f);
  for (int64_t j = 0; j < cols; ++j) {
    if (raw[j] > 0.0) s[j] = std::clamp(static_cast<float>(raw[j] / gm), kMinScale, kMaxScale);
  }
  return s;
}

double OutputError(const float* w, const float* w_hat, int64_t rows, int64_t cols, const InputGram& gram) {
  std::vector<double> e(static_cast<size_t>(rows * cols)), eg(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows * cols; ++i) e[i] = static_cast<double>(w[i]) - static_cast<double>(w_hat[i]);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols),
              static_cast<int>(cols), 1.0, e.data(), static_cast<int>(cols), gram.xtx.data(), static_cast<int>(cols),
              0.0, eg.data(), static_cast<int>(cols));
  double err = 0.0;
  for (int64_t i = 0; i < rows * cols; ++i) err += e[i] * eg[i];
  return err;
}

absl::StatusOr<SmoothingChoice> ChooseSmoothing(const std::vector<SmoothWeight>& weights, int64_t cols,
                                                const std::vector<float>& max_x, const std::vector<float>& mean_sq,
                                                const InputGram& gram, const std::vector<double>& alphas,
                                                const std::vector<int64_t>& tie, const DequantFn& quantize,
                                                bool allow_off) {
  const size_t n = static_cast<size_t>(cols);
  if (!allow_off && alphas.empty()) return absl::InvalidArgumentError("smoothing: no candidate (empty grid, s = 1 excluded)");
  if (cols < 1 || max_x.size() != n || mean_sq.size() != n || gram.cols != cols ||
      gram.xtx.size() != n * n || (!tie.empty() && tie.size() != n) || weights.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("smoothing: statistics do not match the input width ", cols));
  }
  for (int64_t t : tie) {
    if (t < 0 || t >= cols) return absl::InvalidArgumentError("smoothing: tie class out of range");
  }
  for (double a : alphas) {
    if (!(a >= 0.0 && a <= 1.0)) return absl::InvalidArgumentError(absl::StrCat("smoothing: alpha ", a, " is not in [0, 1]"));
  }
  std::vector<float> max_w(n, 0.0f);
  for (const SmoothWeight& w : weights) ColumnAbsMax(w.w, w.rows, cols, max_w);

  // err of one candidate s (all weights).
  std::vector<float> ws, imp(n);
  auto error_of = [&](const std::vector<float>& s) -> absl::StatusOr<double> {
    for (size_t j = 0; j < n; ++j) imp[j] = static_cast<float>(static_cast<double>(mean_sq[j]) / (static_cast<double>(s[j]) * s[j]));
    double err = 0.0;
    for (const SmoothWeight& w : weights) {
      const size_t size = static_cast<size_t>(w.rows) * n;
      ws.resize(size);
      for (size_t i = 0; i < size; ++i) ws[i] = w.w[i] * s[i % n];
      LCD_ASSIGN_OR_RETURN(std::vector<float> q, quantize(ws.data(), w.rows, cols, imp.data()));
      if (q.size() != size) return absl::InternalError("smoothing: the quantizer returned a matrix of another size");
      for (size_t i = 0; i < size; ++i) q[i] /= s[i % n];
      err += OutputError(w.w, q.data(), w.rows, cols, gram);
    }
    return err;
  };

  SmoothingChoice c;
  c.s.assign(n, 1.0f);
  LCD_ASSIGN_OR_RETURN(c.error_off, error_of(c.s));
  c.error = c.error_off;
  bool have = allow_off;
  for (double a : alphas) {
    std::vector<float> s = SmoothingScales(max_x, max_w, a, tie);
    LCD_ASSIGN_OR_RETURN(double err, error_of(s));
    c.errors.push_back(err);
    if (!have || err < c.error) {
      have = true;
      c.error = err;
      c.alpha = a;
      c.s = std::move(s);
    }
  }
  return c;
}

absl::StatusOr<SmoothingReport> SmoothModel(train::TrainModel& student, const CalibrationStats& stats,
                                            const std::vector<double>& alphas, const DequantFn& quantize,
                                            bool allow_off) {
  const runtime::ModelConfig& cfg = student.config();
  const int64_t hidden = cfg.hidden_size, inter = cfg.intermediate_size, hd = cfg.head_dim;
  const int64_t q_dim = cfg.num_heads * hd;
  const int64_t rep = cfg.num_kv_heads > 0 ? cfg.num_heads / cfg.num_kv_heads : 1;
  struct Tensor {
    float* p = nullptr;
    int64_t rows = 0, cols = 0;
  };
  auto get = [&](const std::string& name) -> absl::StatusOr<Tensor> {
    LCD_ASSIGN_OR_RETURN(const train::ParamTensor* t, student.Find(name));
    Tensor out;
    out.p = student.params() + t->offset;
    out.rows = t->shape[0];
    out.cols = t->shape.size() > 1 ? t->shape[1] : 1;
    return out;
  };
  auto stats_of = [&](const std::string& w, int64_t cols, const std::vector<float>*& mx, const std::vector<float>*& ms,
                      const InputGram*& g) -> absl::Status {
    mx = stats.FindMaxAbs(w);
    ms = stats.Find(w);
    g = stats.FindGram(w);
    if (mx == nullptr || ms == nullptr || g == nullptr || static_cast<int64_t>(mx->size()) != cols ||
        static_cast<int64_t>(ms->size()) != cols || g->cols != cols) {
      return absl::InvalidArgumentError(absl::StrCat("smoothing: no calibration max|x|, E[x^2] and E[xx^T] of width ",
                                                     cols, " for ", w));
    }
    return absl::OkStatus();
  };
  auto scale_cols = [](Tensor& t, const std::vector<float>& s) {
    for (int64_t r = 0; r < t.rows; ++r) {
      for (int64_t c = 0; c < t.cols; ++c) t.p[r * t.cols + c] *= s[c];
    }
  };
  SmoothingReport rep_out;
  auto record = [&](const std::string& input, const SmoothingChoice& c) {
    rep_out.inputs.push_back(input);
    rep_out.alphas.push_back(c.alpha);
    rep_out.error_off.push_back(c.error_off);
    rep_out.error.push_back(c.error);
  };
  std::vector<int64_t> o_tie(static_cast<size_t>(q_dim));
  for (int64_t h = 0; h < cfg.num_heads; ++h) {
    for (int64_t d = 0; d < hd; ++d) o_tie[h * hd + d] = (h / rep) * hd + d;
  }
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const std::string nq = p + "self_attn.q_proj.weight", nk = p + "self_attn.k_proj.weight",
                      nv = p + "self_attn.v_proj.weight", no = p + "self_attn.o_proj.weight",
                      ng = p + "mlp.gate_proj.weight", nu = p + "mlp.up_proj.weight", nd = p + "mlp.down_proj.weight";
    LCD_ASSIGN_OR_RETURN(Tensor q, get(nq));
    LCD_ASSIGN_OR_RETURN(Tensor k, get(nk));
    LCD_ASSIGN_OR_RETURN(Tensor v, get(nv));
    LCD_ASSIGN_OR_RETURN(Tensor o, get(no));
    LCD_ASSIGN_OR_RETURN(Tensor gate, get(ng));
    LCD_ASSIGN_OR_RETURN(Tensor up, get(nu));
    LCD_ASSIGN_OR_RETURN(Tensor down, get(nd));
    const std::vector<float>*mx, *ms;
    const InputGram* g;

    // o_proj: s tied over the q heads of one kv head, folded into v's rows.
    LCD_RETURN_IF_ERROR(stats_of(no, q_dim, mx, ms, g));
    LCD_ASSIGN_OR_RETURN(SmoothingChoice co,
                         ChooseSmoothing({{o.p, o.rows}}, q_dim, *mx, *ms, *g, alphas, o_tie, quantize, allow_off));
    if (co.alpha >= 0.0) {
      scale_cols(o, co.s);
      absl::StatusOr<Tensor> vb = get(p + "self_attn.v_proj.bias");
      for (int64_t kvh = 0; kvh < cfg.num_kv_heads; ++kvh) {
        for (int64_t d = 0; d < hd; ++d) {
          const int64_t row = kvh * hd + d;
          const float s = co.s[(kvh * rep) * hd + d];  // Any q head of this kv head: all equal.
          for (int64_t c = 0; c < v.cols; ++c) v.p[row * v.cols + c] /= s;
          if (vb.ok()) vb->p[row] /= s;
        }
      }
      rep_out.changed_dense.push_back(p + "self_attn.v_proj.bias");
      rep_out.input_scales[no] = co.s;
    }
    record(p + "o", co);

    // down_proj: folded into up's rows.
    LCD_RETURN_IF_ERROR(stats_of(nd, inter, mx, ms, g));
    LCD_ASSIGN_OR_RETURN(SmoothingChoice cd,
                         ChooseSmoothing({{down.p, down.rows}}, inter, *mx, *ms, *g, alphas, {}, quantize, allow_off));
    if (cd.alpha >= 0.0) {
      scale_cols(down, cd.s);
      for (int64_t r = 0; r < up.rows; ++r) {
        for (int64_t c = 0; c < up.cols; ++c) up.p[r * up.cols + c] /= cd.s[r];
      }
      rep_out.input_scales[nd] = cd.s;
    }
    record(p + "down", cd);

    // q/k/v and gate/up: folded into the preceding RMSNorm's weight.
    const struct {
      const char* input;
      const std::string* stats_name;
      std::vector<Tensor*> ws;
      std::vector<std::string> names;
      std::string norm;
    } norm_inputs[] = {{"qkv", &nq, {&q, &k, &v}, {nq, nk, nv}, p + "input_layernorm.weight"},
                       {"gate_up", &ng, {&gate, &up}, {ng, nu}, p + "post_attention_layernorm.weight"}};
    for (const auto& in : norm_inputs) {
      LCD_RETURN_IF_ERROR(stats_of(*in.stats_name, hidden, mx, ms, g));
      std::vector<SmoothWeight> sw;
      for (Tensor* t : in.ws) sw.push_back({t->p, t->rows});
      LCD_ASSIGN_OR_RETURN(SmoothingChoice c, ChooseSmoothing(sw, hidden, *mx, *ms, *g, alphas, {}, quantize, allow_off));
      if (c.alpha >= 0.0) {
        for (Tensor* t : in.ws) scale_cols(*t, c.s);
        LCD_ASSIGN_OR_RETURN(Tensor norm, get(in.norm));
        for (int64_t j = 0; j < hidden; ++j) norm.p[j] /= c.s[j];
        rep_out.changed_dense.push_back(in.norm);
        for (const std::string& n : in.names) rep_out.input_scales[n] = c.s;
      }
      record(p + in.input, c);
    }
  }
  // Only tensors that exist (a v bias is Qwen2's).
  std::vector<std::string> dense;
  for (std::string& n : rep_out.changed_dense) {
    if (student.Find(n).ok()) dense.push_back(std::move(n));
  }
  rep_out.changed_dense = std::move(dense);
  return rep_out;
}

}  // namespace lcd::quantizer
