// The whole decoder's forward and backward, as transformers' modeling_llama /
// modeling_qwen2 compute it, written out op by op (see ops.h).
#include "lcd/quantizer/train/train_model.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/act_quant.h"
#include "lcd/kernels/dtype.h"
#include "lcd/quantizer/train/ops.h"
#include "lcd/runtime/checkpoint.h"

namespace lcd::quantizer::train {

// Offsets of one block's tensors in the flat buffers (-1: absent bias).
struct TrainModel::Layer {
  int64_t input_norm, wq, wk, wv, bq = -1, bk = -1, bv = -1, wo, bo = -1, post_norm, wgate, wup, wdown;
};

struct TrainModel::LayerActs {
  std::vector<float> x, rstd1, h1, q, k, v, att, attn, x_mid, rstd2, h2, gate, up, act;
};

namespace {
double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void TrainModel::AddProfile(const char* name, double seconds) {
  for (auto& [n, s] : profile_) {
    if (n == name) {
      s += seconds;
      return;
    }
  }
  profile_.emplace_back(name, seconds);
}

template <typename Fn>
void TrainModel::Timed(const char* name, Fn&& fn) {
  if (!profile_on_) {
    fn();
    return;
  }
  const double nested0 = nested_seconds_, t0 = Now();
  fn();
  AddProfile(name, Now() - t0 - (nested_seconds_ - nested0));
}

TrainModel::TrainModel(runtime::ModelConfig config, int threads)
    : config_(std::move(config)),
      pool_(std::make_unique<kernels::ThreadPool>(threads)),
      inv_freq_(config_.RopeInvFreq()) {
  SetBlasThreads(pool_->num_threads());
}

TrainModel::~TrainModel() = default;

absl::StatusOr<std::unique_ptr<TrainModel>> TrainModel::Create(const runtime::ModelConfig& config, int threads) {
  if (config.hidden_size <= 0 || config.num_heads <= 0 || config.num_kv_heads <= 0 || config.head_dim <= 0 ||
      config.num_heads % config.num_kv_heads != 0 || config.vocab_size <= 0 || config.num_layers <= 0 ||
      config.intermediate_size <= 0 || config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError("TrainModel: invalid model config (sizes must be positive, num_heads a "
                                      "multiple of num_kv_heads, head_dim even)");
  }
  std::unique_ptr<TrainModel> m(new TrainModel(config, threads));
  m->Layout();
  return m;
}

void TrainModel::Layout() {
  const runtime::ModelConfig& c = config_;
  tensors_.clear();
  layers_.clear();
  quant_.clear();
  const int64_t C = c.hidden_size, qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim;
  const int64_t I = c.intermediate_size;
  const bool qkv_bias = c.attention_bias || c.arch == runtime::Architecture::kQwen2;
  const bool o_bias = c.attention_bias && c.arch == runtime::Architecture::kLlama;
  int64_t off = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    ParamTensor t;
    t.name = std::move(name);
    t.size = 1;
    for (int64_t d : shape) t.size *= d;
    t.decay = shape.size() >= 2;
    t.shape = std::move(shape);
    t.offset = off;
    off += t.size;
    tensors_.push_back(std::move(t));
    return tensors_.back().offset;
  };
  // A linear weight [rows][cols], followed by its quantizer's parameters when quantized.
  auto addw = [&](const std::string& name, int64_t rows, int64_t cols) {
    const int64_t w = add(name, {rows, cols});
    for (const auto& [qname, quantizer] : quantizers_) {
      if (qname != name) continue;
      Quantized q;
      q.name = name;
      q.q = quantizer.get();
      q.weight = w;
      if (!quantizer->param_shape().empty()) {
        const std::string prefix = name.substr(0, name.size() - std::string_view(".weight").size());
        q.params = add(prefix + "." + quantizer->param_name(), quantizer->param_shape());
        tensors_.back().decay = false;
      }
      quant_.push_back(q);
    }
    return w;
  };
  embed_ = add("model.embed_tokens.weight", {c.vocab_size, C});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    Layer L;
    L.input_norm = add(p + "input_layernorm.weight", {C});
    L.wq = addw(p + "self_attn.q_proj.weight", qd, C);
    if (qkv_bias) L.bq = add(p + "self_attn.q_proj.bias", {qd});
    L.wk = addw(p + "self_attn.k_proj.weight", kvd, C);
    if (qkv_bias) L.bk = add(p + "self_attn.k_proj.bias", {kvd});
    L.wv = addw(p + "self_attn.v_proj.weight", kvd, C);
    if (qkv_bias) L.bv = add(p + "self_attn.v_proj.bias", {kvd});
    L.wo = addw(p + "self_attn.o_proj.weight", C, qd);
    if (o_bias) L.bo = add(p + "self_attn.o_proj.bias", {C});
    L.post_norm = add(p + "post_attention_layernorm.weight", {C});
    L.wgate = addw(p + "mlp.gate_proj.weight", I, C);
    L.wup = addw(p + "mlp.up_proj.weight", I, C);
    L.wdown = addw(p + "mlp.down_proj.weight", C, I);
    layers_.push_back(L);
  }
  final_norm_ = add("model.norm.weight", {C});
  lm_head_ = c.tie_word_embeddings ? embed_ : addw("lm_head.weight", c.vocab_size, C);
  params_.assign(static_cast<size_t>(off), 0.0f);
  grads_.assign(static_cast<size_t>(off), 0.0f);
  int64_t most = 0, all = 0;
  for (Quantized& q : quant_) {
    most = std::max(most, q.q->rows() * q.q->cols());
    q.hat = all;
    all += q.q->rows() * q.q->cols();
  }
  w_hat_.assign(static_cast<size_t>(all), 0.0f);
  dw_hat_.assign(static_cast<size_t>(most), 0.0f);
}

absl::Status TrainModel::EnableQuantized(
    std::vector<std::pair<std::string, std::unique_ptr<LoopQuantizer>>> quantizers) {
  for (const auto& [name, quantizer] : quantizers) {
    absl::StatusOr<const ParamTensor*> t = Find(name);
    if (!t.ok()) return t.status();
    const bool linear = (name.starts_with("model.layers.") && name.ends_with("_proj.weight")) ||
                        name == "lm_head.weight";
    if (!linear || (*t)->shape.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is not a linear weight that can be quantized"));
    }
    if (quantizer == nullptr || quantizer->rows() != (*t)->shape[0] || quantizer->cols() != (*t)->shape[1]) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": the quantizer is missing or not of the weight's shape [",
                                                     (*t)->shape[0], ", ", (*t)->shape[1], "]"));
    }
    for (const auto& [done, unused] : quantizers_) {
      if (done == name) return absl::InvalidArgumentError(absl::StrCat(name, " is already quantized"));
    }
    for (const auto& [other, unused] : quantizers) {
      if (&other != &name && other == name) return absl::InvalidArgumentError(absl::StrCat(name, " given twice"));
    }
  }
  // Keep every value by name across the re-layout.
  std::vector<ParamTensor> old_tensors = tensors_;
  std::vector<float> old = std::move(params_);
  for (auto& entry : quantizers) quantizers_.push_back(std::move(entry));
  Layout();
  for (const ParamTensor& o : old_tensors) {
    const ParamTensor* t = *Find(o.name);
    std::copy(old.begin() + o.offset, old.begin() + o.offset + o.size, params_.begin() + t->offset);
  }
  B_ = L_ = 0;  // Saved activations no longer match; Backward is a no-op until the next Forward.
  acts_.clear();
  return absl::OkStatus();
}

absl::Status TrainModel::EnableCodebook(const std::vector<std::pair<std::string, CodebookSpec>>& specs) {
  std::vector<std::pair<std::string, std::unique_ptr<LoopQuantizer>>> quantizers;
  for (const auto& [name, spec] : specs) {
    absl::StatusOr<const ParamTensor*> t = Find(name);
    if (!t.ok()) return t.status();
    if (spec.group_size < 1 || spec.k < 1 || spec.k > 256) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": codebook group size must be >= 1 and k in [1, 256], got ",
                                                     spec.group_size, " and ", spec.k));
    }
    if ((*t)->shape.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is not a linear weight that can be quantized"));
    }
    quantizers.emplace_back(name, std::make_unique<CodebookLoopQuantizer>(
                                      CodebookShape{(*t)->shape[0], (*t)->shape[1], spec.group_size, spec.k}));
  }
  return EnableQuantized(std::move(quantizers));
}

std::vector<std::string> TrainModel::QuantizedWeights() const {
  std::vector<std::string> out;
  for (const Quantized& q : quant_) out.push_back(q.name);
  return out;
}

absl::StatusOr<LoopQuantizer*> TrainModel::quantizer(std::string_view weight_name) {
  for (Quantized& q : quant_) {
    if (q.name == weight_name) return q.q;
  }
  return absl::NotFoundError(absl::StrCat(std::string(weight_name), " is not quantized"));
}

absl::StatusOr<uint8_t*> TrainModel::codes(std::string_view weight_name) {
  LCD_ASSIGN_OR_RETURN(LoopQuantizer * q, quantizer(weight_name));
  return q->codes().data();
}

int64_t TrainModel::ReassignCodes(std::string_view prefix) {
  int64_t changed = 0;
  std::vector<uint8_t> fresh;
  for (Quantized& q : quant_) {
    if (!q.name.starts_with(prefix)) continue;
    std::vector<uint8_t>& codes = q.q->codes();
    fresh.resize(codes.size());
    q.q->Assign(P(q.weight), q.params < 0 ? nullptr : P(q.params), fresh.data(), pool_.get());
    for (size_t i = 0; i < fresh.size(); ++i) changed += fresh[i] != codes[i];
    codes.swap(fresh);
  }
  return changed;
}

std::vector<ParamTensor> TrainModel::TrainableTensors() const {
  if (!freeze_dense_) return tensors_;
  std::vector<ParamTensor> out;
  for (const ParamTensor& t : tensors_) {
    for (const Quantized& q : quant_) {
      if (t.offset == q.weight || t.offset == q.params) out.push_back(t);
    }
  }
  return out;
}

const TrainModel::Quantized* TrainModel::QuantAt(int64_t w) const {
  for (const Quantized& q : quant_) {
    if (q.weight == w) return &q;
  }
  return nullptr;
}

absl::Status TrainModel::SetActivationBits(int bits) {
  if (bits != 0 && bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("activation bits must be 0 or 8, got ", bits));
  }
  act_bits_ = bits;
  return absl::OkStatus();
}

const float* TrainModel::QuantizedInput(const float* x, int64_t T, int64_t K) {
  if (act_bits_ == 0) return x;
  x_q_.resize(static_cast<size_t>(T * K));
  kernels::FakeQuantizeInt8PerToken(x, T, K, x_q_.data());
  return x_q_.data();
}

void TrainModel::Linear(const float* x, int64_t w, const float* b, int64_t T, int64_t K, int64_t N, float* y) {
  const Quantized* q = QuantAt(w);
  if (q == nullptr) {
    LinearForward(x, P(w), b, T, K, N, y);
  } else {
    x = QuantizedInput(x, T, K);
    if (act_observer_ && act_bits_ != 0) act_observer_(w, x, T, K);
    const double t0 = profile_on_ ? Now() : 0.0;
    float* w_hat = w_hat_.data() + q->hat;
    q->q->Decode(P(w), q->params < 0 ? nullptr : P(q->params), w_hat, pool_.get());
    if (profile_on_) {
      const double dt = Now() - t0;
      AddProfile("fwd.decode", dt);
      nested_seconds_ += dt;
    }
    LinearForward(x, w_hat, b, T, K, N, y);
  }
}

void TrainModel::LinearBack(const float* dy, const float* x, int64_t w, int64_t b, int64_t T, int64_t K, int64_t N,
                            float* dx) {
  float* db = b < 0 || freeze_dense_ ? nullptr : G(b);
  const Quantized* q = QuantAt(w);
  if (q == nullptr) {
    LinearBackward(dy, x, P(w), T, K, N, dx, freeze_dense_ ? nullptr : G(w), db, pool_.get());
  } else {
    // Ŵ as the last Forward decoded it (kept per weight, not decoded again).
    // A8: the weight gradient sees the quantized input; dx passes straight through.
    x = QuantizedInput(x, T, K);
    const float* params = q->params < 0 ? nullptr : P(q->params);
    double t0 = profile_on_ ? Now() : 0.0;
    std::fill(dw_hat_.begin(), dw_hat_.begin() + K * N, 0.0f);
    double dt_zero = profile_on_ ? Now() - t0 : 0.0;
    LinearBackward(dy, x, w_hat_.data() + q->hat, T, K, N, dx, dw_hat_.data(), db, pool_.get());
    t0 = profile_on_ ? Now() - dt_zero : 0.0;  // quant_grad includes zeroing the dŴ scratch.
    q->q->Backward(P(w), params, dw_hat_.data(), G(w), q->params < 0 ? nullptr : G(q->params), pool_.get());
    if (profile_on_) {
      const double dt = Now() - t0;
      AddProfile("bwd.quant_grad", dt);
      nested_seconds_ += dt;
    }
  }
}

void TrainModel::InitRandom(uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  for (const ParamTensor& t : tensors_) {
    float* p = P(t.offset);
    const bool norm = t.name.ends_with("norm.weight");
    const bool bias = t.name.ends_with(".bias");
    for (int64_t i = 0; i < t.size; ++i) p[i] = norm ? 1.0f : bias ? 0.0f : normal(rng);
  }
}

absl::StatusOr<const ParamTensor*> TrainModel::Find(std::string_view name) const {
  for (const ParamTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return absl::NotFoundError(absl::StrCat("model has no parameter tensor ", std::string(name)));
}

absl::StatusOr<std::unique_ptr<TrainModel>> TrainModel::FromCheckpoint(const std::string& model_dir, int threads) {
  LCD_ASSIGN_OR_RETURN(runtime::ModelConfig config, runtime::LoadModelConfig(model_dir));
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<TrainModel> m, Create(config, threads));
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Checkpoint> ckpt, runtime::Checkpoint::Open(model_dir));
  for (const ParamTensor& t : m->tensors_) {
    std::string_view name = t.name;
    // A tied checkpoint may store the shared matrix under lm_head.weight only.
    if (t.offset == m->embed_ && config.tie_word_embeddings && !ckpt->Has(name) && ckpt->Has("lm_head.weight")) {
      name = "lm_head.weight";
    }
    LCD_ASSIGN_OR_RETURN(runtime::TensorView v, ckpt->Get(name));
    if (v.shape != t.shape) {
      return absl::InvalidArgumentError(absl::StrCat(model_dir, ": tensor ", std::string(name), " has shape ",
                                                     runtime::ShapeString(v.shape), "; expected ",
                                                     runtime::ShapeString(t.shape)));
    }
    absl::StatusOr<kernels::DType> dt = runtime::ToKernelDType(v.dtype);
    if (!dt.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(model_dir, ": tensor ", std::string(name), " has dtype ",
                                                     std::string(runtime::StDTypeName(v.dtype)),
                                                     "; a float type is required"));
    }
    kernels::ConvertToF32(v.data, *dt, static_cast<size_t>(t.size), m->P(t.offset));
  }
  return m;
}

void TrainModel::Resize(int64_t B, int64_t L) {
  if (B == B_ && L == L_) return;
  B_ = B;
  L_ = L;
  const runtime::ModelConfig& c = config_;
  const int64_t T = B * L, C = c.hidden_size, qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim;
  const int64_t I = c.intermediate_size, V = c.vocab_size;
  auto sz = [](std::vector<float>& v, int64_t n) { v.assign(static_cast<size_t>(n), 0.0f); };
  acts_.resize(static_cast<size_t>(c.num_layers));
  for (LayerActs& a : acts_) {
    sz(a.x, T * C);
    sz(a.rstd1, T);
    sz(a.h1, T * C);
    sz(a.q, T * qd);
    sz(a.k, T * kvd);
    sz(a.v, T * kvd);
    sz(a.att, B * c.num_heads * L * L);
    sz(a.attn, T * qd);
    sz(a.x_mid, T * C);
    sz(a.rstd2, T);
    sz(a.h2, T * C);
    sz(a.gate, T * I);
    sz(a.up, T * I);
    sz(a.act, T * I);
  }
  sz(x_final_, T * C);
  sz(rstd_final_, T);
  sz(h_final_, T * C);
  sz(logits_, T * V);
  sz(dlogits_, T * V);
  sz(dx_, T * C);
  sz(dh_, T * C);
  sz(dq_, T * qd);
  sz(dk_, T * kvd);
  sz(dv_, T * kvd);
  sz(dattn_, T * qd);
  sz(dgate_, T * I);
  sz(dup_, T * I);
  sz(dact_, T * I);
  const int64_t half = c.head_dim / 2;
  sz(rope_cos_, L * half);
  sz(rope_sin_, L * half);
  RopeTables(inv_freq_.data(), L, c.head_dim, rope_cos_.data(), rope_sin_.data());
}

absl::Status TrainModel::CheckShape(int64_t B, int64_t L) const {
  const runtime::ModelConfig& c = config_;
  if (B <= 0 || L <= 0) return absl::InvalidArgumentError(absl::StrCat("empty batch (", B, " x ", L, ")"));
  if (L > c.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence length ", L, " exceeds max_position_embeddings ", c.max_position_embeddings));
  }
  if (c.sliding_window.has_value() && L > *c.sliding_window) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence length ", L, " exceeds the sliding window ", *c.sliding_window, ", not supported"));
  }
  return absl::OkStatus();
}

absl::Status TrainModel::Forward(const int32_t* tokens, int64_t B, int64_t L, int64_t blocks) {
  const runtime::ModelConfig& c = config_;
  if (blocks < 0) blocks = c.num_layers;
  if (blocks > c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("cannot run ", blocks, " blocks of ", c.num_layers));
  }
  LCD_RETURN_IF_ERROR(CheckShape(B, L));
  for (int64_t i = 0; i < B * L; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", tokens[i], " at ", i, " outside [0, ", c.vocab_size, ")"));
    }
  }
  Resize(B, L);
  tokens_.assign(tokens, tokens + B * L);
  const int64_t T = B * L, C = c.hidden_size, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  kernels::ThreadPool* pool = pool_.get();
  first_run_ = 0;
  blocks_run_ = blocks;
  Timed("fwd.embedding", [&] { EmbeddingForward(P(embed_), tokens, T, C, acts_[0].x.data()); });
  RunBlocks(0, blocks);
  if (blocks < c.num_layers) return absl::OkStatus();  // A partial forward: no head, no logits.
  Timed("fwd.norm", [&] {
    RmsNormForward(x_final_.data(), P(final_norm_), T, C, eps, h_final_.data(), rstd_final_.data(), pool);
  });
  Timed("fwd.lm_head", [&] { Linear(h_final_.data(), lm_head_, nullptr, T, C, V, logits_.data()); });
  std::fill(dlogits_.begin(), dlogits_.end(), 0.0f);
  return absl::OkStatus();
}

absl::Status TrainModel::ForwardBlocks(const float* x, int64_t B, int64_t L, int64_t first, int64_t end) {
  const runtime::ModelConfig& c = config_;
  if (first < 0 || first >= end || end > c.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot run blocks [", first, ", ", end, ") of ", c.num_layers));
  }
  LCD_RETURN_IF_ERROR(CheckShape(B, L));
  Resize(B, L);
  tokens_.clear();  // No embedding to back-propagate into.
  first_run_ = first;
  blocks_run_ = end;
  std::copy(x, x + B * L * c.hidden_size, acts_[first].x.begin());
  RunBlocks(first, end);
  return absl::OkStatus();
}

void TrainModel::RunBlocks(int64_t first, int64_t end) {
  const runtime::ModelConfig& c = config_;
  const int64_t B = B_, L = L_;
  const int64_t T = B * L, C = c.hidden_size, H = c.num_heads, KVH = c.num_kv_heads, D = c.head_dim;
  const int64_t qd = H * D, kvd = KVH * D, I = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  kernels::ThreadPool* pool = pool_.get();
  auto bias = [&](int64_t off) { return off < 0 ? nullptr : P(off); };
  for (int64_t l = first; l < end; ++l) {
    const Layer& w = layers_[l];
    LayerActs& a = acts_[l];
    Timed("fwd.norm", [&] {
      RmsNormForward(a.x.data(), P(w.input_norm), T, C, eps, a.h1.data(), a.rstd1.data(), pool);
    });
    Timed("fwd.qkv", [&] {
      Linear(a.h1.data(), w.wq, bias(w.bq), T, C, qd, a.q.data());
      Linear(a.h1.data(), w.wk, bias(w.bk), T, C, kvd, a.k.data());
      Linear(a.h1.data(), w.wv, bias(w.bv), T, C, kvd, a.v.data());
    });
    Timed("fwd.rope", [&] {
      RopeForward(a.q.data(), B, L, H, D, rope_cos_.data(), rope_sin_.data());
      RopeForward(a.k.data(), B, L, KVH, D, rope_cos_.data(), rope_sin_.data());
    });
    Timed("fwd.attention", [&] {
      AttentionForward(a.q.data(), a.k.data(), a.v.data(), B, L, H, KVH, D, a.att.data(), a.attn.data(), pool);
    });
    Timed("fwd.o", [&] { Linear(a.attn.data(), w.wo, bias(w.bo), T, qd, C, a.x_mid.data()); });
    Timed("fwd.residual", [&] { ResidualForward(a.x.data(), a.x_mid.data(), T * C, a.x_mid.data()); });
    Timed("fwd.norm", [&] {
      RmsNormForward(a.x_mid.data(), P(w.post_norm), T, C, eps, a.h2.data(), a.rstd2.data(), pool);
    });
    Timed("fwd.gate_up", [&] {
      Linear(a.h2.data(), w.wgate, nullptr, T, C, I, a.gate.data());
      Linear(a.h2.data(), w.wup, nullptr, T, C, I, a.up.data());
    });
    Timed("fwd.swiglu", [&] { SwiGluForward(a.gate.data(), a.up.data(), T * I, a.act.data(), pool); });
    float* out = l + 1 < c.num_layers ? acts_[l + 1].x.data() : x_final_.data();
    Timed("fwd.down", [&] { Linear(a.act.data(), w.wdown, nullptr, T, I, C, out); });
    Timed("fwd.residual", [&] { ResidualForward(a.x_mid.data(), out, T * C, out); });
  }
}

void TrainModel::ZeroGrad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

const float* TrainModel::residual(int64_t l) const {
  return l < config_.num_layers ? acts_[l].x.data() : x_final_.data();
}

void TrainModel::Backward() {
  // No full Forward yet: nothing to propagate.
  if (B_ == 0 || first_run_ != 0 || blocks_run_ != config_.num_layers) return;
  const runtime::ModelConfig& c = config_;
  const int64_t T = B_ * L_, C = c.hidden_size, V = c.vocab_size;
  auto zero = [](std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); };
  // dx_ holds d loss / d (residual stream) as it flows back through the blocks.
  Timed("bwd.lm_head", [&] {
    zero(dh_);
    LinearBack(dlogits_.data(), h_final_.data(), lm_head_, -1, T, C, V, dh_.data());
  });
  Timed("bwd.norm", [&] {
    zero(dx_);
    RmsNormBackward(dh_.data(), x_final_.data(), P(final_norm_), rstd_final_.data(), T, C, dx_.data(),
                    freeze_dense_ ? nullptr : G(final_norm_), pool_.get());
  });
  BackwardLayers(c.num_layers, 0);
  if (!freeze_dense_) {
    Timed("bwd.embedding", [&] { EmbeddingBackward(dx_.data(), tokens_.data(), T, C, G(embed_)); });
  }
}

void TrainModel::BackwardBlocks(const float* dout, int64_t first) {
  first = std::max(first, first_run_);
  if (B_ == 0 || first >= blocks_run_) return;
  std::copy(dout, dout + B_ * L_ * config_.hidden_size, dx_.begin());
  BackwardLayers(blocks_run_, first);
  if (first == 0 && first_run_ == 0 && !freeze_dense_) {
    EmbeddingBackward(dx_.data(), tokens_.data(), B_ * L_, config_.hidden_size, G(embed_));
  }
}

void TrainModel::BackwardLayers(int64_t end, int64_t first) {
  const runtime::ModelConfig& c = config_;
  const int64_t B = B_, L = L_;
  const int64_t T = B * L, C = c.hidden_size, H = c.num_heads, KVH = c.num_kv_heads, D = c.head_dim;
  const int64_t qd = H * D, kvd = KVH * D, I = c.intermediate_size;
  kernels::ThreadPool* pool = pool_.get();
  // Gradient of a dense tensor: nullptr when frozen.
  auto dense = [&](int64_t off) { return freeze_dense_ ? nullptr : G(off); };
  auto zero = [](std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); };
  for (int64_t l = end - 1; l >= first; --l) {
    const Layer& w = layers_[l];
    LayerActs& a = acts_[l];
    // out = x_mid + down(act): dx_ (d out) flows to x_mid unchanged (the
    // residual's identity branch, accumulated in place) and into the MLP.
    Timed("bwd.down", [&] {
      zero(dact_);
      LinearBack(dx_.data(), a.act.data(), w.wdown, -1, T, I, C, dact_.data());
    });
    Timed("bwd.swiglu", [&] {
      zero(dgate_);
      zero(dup_);
      SwiGluBackward(dact_.data(), a.gate.data(), a.up.data(), T * I, dgate_.data(), dup_.data(), pool);
    });
    Timed("bwd.gate_up", [&] {
      zero(dh_);
      LinearBack(dgate_.data(), a.h2.data(), w.wgate, -1, T, C, I, dh_.data());
      LinearBack(dup_.data(), a.h2.data(), w.wup, -1, T, C, I, dh_.data());
    });
    Timed("bwd.norm", [&] {
      RmsNormBackward(dh_.data(), a.x_mid.data(), P(w.post_norm), a.rstd2.data(), T, C, dx_.data(),
                      dense(w.post_norm), pool);
    });
    // x_mid = x + o(attn): dx_ now is d x_mid.
    Timed("bwd.o", [&] {
      zero(dattn_);
      LinearBack(dx_.data(), a.attn.data(), w.wo, w.bo, T, qd, C, dattn_.data());
    });
    Timed("bwd.attention", [&] {
      zero(dq_);
      zero(dk_);
      zero(dv_);
      AttentionBackward(dattn_.data(), a.q.data(), a.k.data(), a.v.data(), a.att.data(), B, L, H, KVH, D, dq_.data(),
                        dk_.data(), dv_.data(), pool);
    });
    Timed("bwd.rope", [&] {
      RopeBackward(dq_.data(), B, L, H, D, rope_cos_.data(), rope_sin_.data());
      RopeBackward(dk_.data(), B, L, KVH, D, rope_cos_.data(), rope_sin_.data());
    });
    Timed("bwd.qkv", [&] {
      zero(dh_);
      LinearBack(dq_.data(), a.h1.data(), w.wq, w.bq, T, C, qd, dh_.data());
      LinearBack(dk_.data(), a.h1.data(), w.wk, w.bk, T, C, kvd, dh_.data());
      LinearBack(dv_.data(), a.h1.data(), w.wv, w.bv, T, C, kvd, dh_.data());
    });
    Timed("bwd.norm", [&] {
      RmsNormBackward(dh_.data(), a.x.data(), P(w.input_norm), a.rstd1.data(), T, C, dx_.data(),
                      dense(w.input_norm), pool);
    });
  }
}

}  // namespace lcd::quantizer::train
