// Driver for tests/python/test_train_parity.py: runs the training core
// (lcd/quantizer/train) on inputs given as a safetensors file and writes what
// it computed as another, for comparison with PyTorch autograd.
//
//   train_check --op NAME --in in.safetensors --out out.safetensors
//       One operation's forward and backward. Inputs by name (F32 unless
//       said): embedding: table [V][C], tokens I32 [T], dout;
//       rmsnorm: x [T][C], w [C], dout, metadata eps; rope: x [B][L][H][D],
//       inv_freq [D/2], dout; linear: x [T][K], w [N][K], optional b [N],
//       dout; attention: q [B][L][H][D], k, v [B][L][KVH][D], dout;
//       codebook_linear: x [T][K], latent w [N][K], centroids [N][G][k],
//       optional b, dout, metadata group_size (also outputs the codes I32);
//       swiglu: gate, up, dout; residual: a, b, dout; ce: logits [N][V],
//       targets I32 [N]; fkl, rkl, cakld: logits, teacher [N][V], metadata
//       gamma (cakld). Outputs: "out" (or "loss") and "d<input>" for each
//       float input but dout; the gradients start from `grad_init` tensors
//       named "init_d<input>" when given (to test that backward accumulates).
//   train_check --model DIR --in in.safetensors --out out.safetensors
//               --loss ce|fkl|rkl|cakld [--gamma G]
//       Whole-model forward + backward on tokens I32 [B][L] with targets I32
//       [B][L] (ce) or teacher F32 [B][L][V] (KL losses). Outputs: loss F64
//       [1], logits [B][L][V] and every parameter's gradient under its name.
//       With --group-size G, every weight W whose "<prefix>.centroids"
//       [rows][groups][k] is among the inputs becomes a codebook-quantized
//       linear with those centroids (codes = nearest centroid of W); the
//       gradients then include the centroids', and "<prefix>.codes" I32
//       [rows][cols] are output. With --blocks N --first F: only the first N
//       blocks run, loss = mean squared error of block N-1's output against
//       block_target F32 [B][L][C], back-propagated through blocks [F, N)
//       (TrainModel::BackwardBlocks); outputs loss, hidden [B][L][C], grads.
//       With block_input F32 [B][L][C] among the inputs, only blocks
//       [F, N) run, from it as the residual entering block F
//       (TrainModel::ForwardBlocks).
//   train_check --train DIR --in in.safetensors --out out.safetensors --steps N ...
//       N AdamW steps with CE on batches tokens/targets I32 [S][B][L] (step s
//       uses batch s % S). Outputs: loss F64 [N], grad_norm F64 [N], lr F64
//       [N] and the final parameters under their names. With --group-size
//       and centroids as for --model, trains the codebook model: with
//       --freeze-dense only latent weights and centroids; codes are
//       re-assigned before step s when s > 0 and s % --reassign-every == 0
//       (output "reassigned" F64 [N]: codes changed before each step) and
//       once more after the last step (final "<prefix>.codes").
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
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/train/codebook_linear.h"
#include "lcd/quantizer/train/ops.h"
#include "lcd/quantizer/train/optimizer.h"
#include "lcd/quantizer/train/train_model.h"
#include "lcd/runtime/safetensors.h"
#include "tensor_io.h"

namespace {

namespace tr = lcd::quantizer::train;
using lcd::runtime::SafetensorsFile;
using lcd::runtime::StDType;
using lcd::runtime::TensorToWrite;

using lcd::test_io::Need;
using lcd::test_io::Read;
using lcd::test_io::Tensor;
using lcd::test_io::Tensors;
using lcd::test_io::Write;

// A zero gradient shaped like `in[name]`, or in["init_d" + name] when given.
Tensor GradFor(const Tensors& in, const std::string& name) {
  auto init = in.find("init_d" + name);
  if (init != in.end()) return init->second;
  Tensor g;
  g.shape = in.at(name).shape;
  g.f.assign(static_cast<size_t>(g.numel()), 0.0f);
  return g;
}

Tensor Like(const Tensor& t) {
  Tensor o;
  o.shape = t.shape;
  o.f.assign(static_cast<size_t>(t.numel()), 0.0f);
  return o;
}

Tensor Scalar(double v) {
  Tensor o;
  o.shape = {1};
  o.d = {v};
  return o;
}

absl::Status RunOp(const std::string& op, const Tensors& in, const std::map<std::string, std::string>& meta,
                   Tensors& out, lcd::kernels::ThreadPool* pool) {
  auto meta_d = [&](const std::string& k) -> absl::StatusOr<double> {
    auto it = meta.find(k);
    if (it == meta.end()) return absl::InvalidArgumentError(absl::StrCat("metadata ", k, " missing"));
    return std::stod(it->second);
  };
  if (op == "embedding") {
    LCD_ASSIGN_OR_RETURN(const Tensor* table, Need(in, "table"));
    LCD_ASSIGN_OR_RETURN(const Tensor* tokens, Need(in, "tokens"));
    LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
    const int64_t T = tokens->numel(), C = table->shape[1];
    Tensor y;
    y.shape = {T, C};
    y.f.resize(static_cast<size_t>(T * C));
    tr::EmbeddingForward(table->f.data(), tokens->i.data(), T, C, y.f.data());
    Tensor dt = GradFor(in, "table");
    tr::EmbeddingBackward(dout->f.data(), tokens->i.data(), T, C, dt.f.data());
    out["out"] = std::move(y);
    out["dtable"] = std::move(dt);
  } else if (op == "rmsnorm") {
    LCD_ASSIGN_OR_RETURN(const Tensor* x, Need(in, "x"));
    LCD_ASSIGN_OR_RETURN(const Tensor* w, Need(in, "w"));
    LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
    LCD_ASSIGN_OR_RETURN(double eps, meta_d("eps"));
    const int64_t T = x->shape[0], C = x->shape[1];
    Tensor y = Like(*x);
    std::vector<float> rstd(static_cast<size_t>(T));
    tr::RmsNormForward(x->f.data(), w->f.data(), T, C, static_cast<float>(eps), y.f.data(), rstd.data(), pool);
    Tensor dx = GradFor(in, "x"), dw = GradFor(in, "w");
    tr::RmsNormBackward(dout->f.data(), x->f.data(), w->f.data(), rstd.data(), T, C, dx.f.data(), dw.f.data(), pool);
    out["out"] = std::move(y);
    out["dx"] = std::move(dx);
    out["dw"] = std::move(dw);
  } else if (op == "rope") {
    LCD_ASSIGN_OR_RETURN(const Tensor* x, Need(in, "x"));
    LCD_ASSIGN_OR_RETURN(const Tensor* inv_freq, Need(in, "inv_freq"));
    LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
    const int64_t B = x->shape[0], L = x->shape[1], H = x->shape[2], D = x->shape[3];
    std::vector<float> cos(static_cast<size_t>(L * D / 2)), sin(cos.size());
    tr::RopeTables(inv_freq->f.data(), L, D, cos.data(), sin.data());
    Tensor y = *x;
    tr::RopeForward(y.f.data(), B, L, H, D, cos.data(), sin.data());
    Tensor dx = *dout;
    tr::RopeBackward(dx.f.data(), B, L, H, D, cos.data(), sin.data());
    out["out"] = std::move(y);
    out["dx"] = std::move(dx);
  } else if (op == "linear") {
    LCD_ASSIGN_OR_RETURN(const Tensor* x, Need(in, "x"));
    LCD_ASSIGN_OR_RETURN(const Tensor* w, Need(in, "w"));
    LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
    const Tensor* b = in.count("b") ? &in.at("b") : nullptr;
    const int64_t T = x->shape[0], K = x->shape[1], N = w->shape[0];
    Tensor y;
    y.shape = {T, N};
    y.f.resize(static_cast<size_t>(T * N));
    tr::LinearForward(x->f.data(), w->f.data(), b ? b->f.data() : nullptr, T, K, N, y.f.data());
    Tensor dx = GradFor(in, "x"), dw = GradFor(in, "w");
    Tensor db;
    if (b != nullptr) db = GradFor(in, "b");
    tr::LinearBackward(dout->f.data(), x->f.data(), w->f.data(), T, K, N, dx.f.data(), dw.f.data(),
                       b ? db.f.data() : nullptr, pool);
    out["out"] = std::move(y);
    out["dx"] = std::move(dx);
    out["dw"] = std::move(dw);
    if (b != nullptr) out["db"] = std::move(db);
  } else if (op == "codebook_linear") {
    LCD_ASSIGN_OR_RETURN(const Tensor* x, Need(in, "x"));
    LCD_ASSIGN_OR_RETURN(const Tensor* w, Need(in, "w"));
    LCD_ASSIGN_OR_RETURN(const Tensor* cent, Need(in, "centroids"));
    LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
    LCD_ASSIGN_OR_RETURN(double group_size, meta_d("group_size"));
    const Tensor* b = in.count("b") ? &in.at("b") : nullptr;
    tr::CodebookShape s;
    s.rows = w->shape[0];
    s.cols = w->shape[1];
    s.group_size = static_cast<int64_t>(group_size);
    s.k = cent->shape[2];
    if (cent->shape[0] != s.rows || cent->shape[1] != s.groups()) {
      return absl::InvalidArgumentError("centroids must be [rows][groups][k]");
    }
    const int64_t T = x->shape[0];
    std::vector<uint8_t> codes(static_cast<size_t>(s.rows * s.cols));
    tr::CodebookAssign(w->f.data(), cent->f.data(), s, codes.data(), pool);
    std::vector<float> w_hat(codes.size()), dw_hat(codes.size());
    Tensor y;
    y.shape = {T, s.rows};
    y.f.resize(static_cast<size_t>(T * s.rows));
    tr::CodebookLinearForward(x->f.data(), cent->f.data(), codes.data(), b ? b->f.data() : nullptr, s, T,
                              w_hat.data(), y.f.data(), pool);
    Tensor dx = GradFor(in, "x"), dw = GradFor(in, "w"), dc = GradFor(in, "centroids");
    Tensor db;
    if (b != nullptr) db = GradFor(in, "b");
    tr::CodebookLinearBackward(dout->f.data(), x->f.data(), w_hat.data(), codes.data(), s, T, dw_hat.data(),
                               dx.f.data(), dw.f.data(), dc.f.data(), b ? db.f.data() : nullptr, pool);
    Tensor c;
    c.shape = w->shape;
    c.i.assign(codes.begin(), codes.end());
    out["codes"] = std::move(c);
    out["out"] = std::move(y);
    out["dx"] = std::move(dx);
    out["dw"] = std::move(dw);
    out["dcentroids"] = std::move(dc);
    if (b != nullptr) out["db"] = std::move(db);
  } else if (op == "attention") {
    LCD_ASSIGN_OR_RETURN(const Tensor* q, Need(in, "q"));
    LCD_ASSIGN_OR_RETURN(const Tensor* k, Need(in, "k"));
    LCD_ASSIGN_OR_RETURN(const Tensor* v, Need(in, "v"));
    LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
    const int64_t B = q->shape[0], L = q->shape[1], H = q->shape[2], D = q->shape[3], KVH = k->shape[2];
    std::vector<float> att(static_cast<size_t>(B * H * L * L));
    Tensor y = Like(*q);
    tr::AttentionForward(q->f.data(), k->f.data(), v->f.data(), B, L, H, KVH, D, att.data(), y.f.data(), pool);
    Tensor dq = GradFor(in, "q"), dk = GradFor(in, "k"), dv = GradFor(in, "v");
    tr::AttentionBackward(dout->f.data(), q->f.data(), k->f.data(), v->f.data(), att.data(), B, L, H, KVH, D,
                          dq.f.data(), dk.f.data(), dv.f.data(), pool);
    out["out"] = std::move(y);
    out["dq"] = std::move(dq);
    out["dk"] = std::move(dk);
    out["dv"] = std::move(dv);
  } else if (op == "swiglu") {
    LCD_ASSIGN_OR_RETURN(const Tensor* gate, Need(in, "gate"));
    LCD_ASSIGN_OR_RETURN(const Tensor* up, Need(in, "up"));
    LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
    Tensor y = Like(*gate);
    tr::SwiGluForward(gate->f.data(), up->f.data(), gate->numel(), y.f.data(), pool);
    Tensor dg = GradFor(in, "gate"), du = GradFor(in, "up");
    tr::SwiGluBackward(dout->f.data(), gate->f.data(), up->f.data(), gate->numel(), dg.f.data(), du.f.data(), pool);
    out["out"] = std::move(y);
    out["dgate"] = std::move(dg);
    out["dup"] = std::move(du);
  } else if (op == "residual") {
    LCD_ASSIGN_OR_RETURN(const Tensor* a, Need(in, "a"));
    LCD_ASSIGN_OR_RETURN(const Tensor* b, Need(in, "b"));
    LCD_ASSIGN_OR_RETURN(const Tensor* dout, Need(in, "dout"));
    Tensor y = Like(*a);
    tr::ResidualForward(a->f.data(), b->f.data(), a->numel(), y.f.data());
    Tensor da = GradFor(in, "a"), db = GradFor(in, "b");
    tr::ResidualBackward(dout->f.data(), a->numel(), da.f.data(), db.f.data());
    out["out"] = std::move(y);
    out["da"] = std::move(da);
    out["db"] = std::move(db);
  } else if (op == "ce" || op == "fkl" || op == "rkl" || op == "cakld") {
    LCD_ASSIGN_OR_RETURN(const Tensor* z, Need(in, "logits"));
    const int64_t N = z->shape[0], V = z->shape[1];
    Tensor dz = GradFor(in, "logits");
    double loss = 0.0;
    if (op == "ce") {
      LCD_ASSIGN_OR_RETURN(const Tensor* y, Need(in, "targets"));
      loss = tr::CrossEntropyLoss(z->f.data(), y->i.data(), N, V, dz.f.data(), pool);
    } else {
      LCD_ASSIGN_OR_RETURN(const Tensor* t, Need(in, "teacher"));
      if (op == "fkl") {
        loss = tr::ForwardKlLoss(z->f.data(), t->f.data(), N, V, dz.f.data(), pool);
      } else if (op == "rkl") {
        loss = tr::ReverseKlLoss(z->f.data(), t->f.data(), N, V, dz.f.data(), pool);
      } else {
        LCD_ASSIGN_OR_RETURN(double gamma, meta_d("gamma"));
        loss = tr::CakldLoss(z->f.data(), t->f.data(), N, V, gamma, dz.f.data(), pool);
      }
      out["gamma_top1"] = Scalar(tr::MeanTopProbability(t->f.data(), N, V));
    }
    out["loss"] = Scalar(loss);
    out["dlogits"] = std::move(dz);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown op ", op));
  }
  return absl::OkStatus();
}

// Accumulates the named loss's gradient into model.dlogits().
absl::StatusOr<double> Loss(tr::TrainModel& model, const std::string& loss, double gamma, const Tensors& in,
                            int64_t rows) {
  const int64_t V = model.config().vocab_size;
  if (loss == "ce") {
    LCD_ASSIGN_OR_RETURN(const Tensor* y, Need(in, "targets"));
    return tr::CrossEntropyLoss(model.logits(), y->i.data(), rows, V, model.dlogits(), model.pool());
  }
  LCD_ASSIGN_OR_RETURN(const Tensor* t, Need(in, "teacher"));
  if (loss == "fkl") return tr::ForwardKlLoss(model.logits(), t->f.data(), rows, V, model.dlogits(), model.pool());
  if (loss == "rkl") return tr::ReverseKlLoss(model.logits(), t->f.data(), rows, V, model.dlogits(), model.pool());
  if (loss == "cakld") {
    return tr::CakldLoss(model.logits(), t->f.data(), rows, V, gamma, model.dlogits(), model.pool());
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown loss ", loss));
}

// Quantizes the weights whose centroids are inputs (see the header); no-op
// when group_size is 0.
absl::Status SetupCodebook(tr::TrainModel& model, const Tensors& in, int64_t group_size) {
  if (group_size == 0) return absl::OkStatus();
  std::vector<std::pair<std::string, tr::CodebookSpec>> specs;
  for (const tr::ParamTensor& t : model.tensors()) {
    if (!t.name.ends_with(".weight")) continue;
    const std::string prefix = t.name.substr(0, t.name.size() - 7);
    auto it = in.find(prefix + ".centroids");
    if (it != in.end()) specs.push_back({t.name, tr::CodebookSpec{group_size, it->second.shape[2]}});
  }
  if (specs.empty()) return absl::InvalidArgumentError("--group-size given but no <prefix>.centroids input");
  LCD_RETURN_IF_ERROR(model.EnableCodebook(specs));
  for (const auto& [name, spec] : specs) {
    const std::string cname = name.substr(0, name.size() - 7) + ".centroids";
    LCD_ASSIGN_OR_RETURN(const tr::ParamTensor* t, model.Find(cname));
    const Tensor& c = in.at(cname);
    if (c.numel() != t->size) return absl::InvalidArgumentError(absl::StrCat(cname, " has the wrong size"));
    std::copy(c.f.begin(), c.f.end(), model.params() + t->offset);
  }
  model.ReassignCodes();
  return absl::OkStatus();
}

void PutCodes(tr::TrainModel& model, Tensors& out) {
  for (const std::string& name : model.QuantizedWeights()) {
    const tr::ParamTensor* t = *model.Find(name);
    const uint8_t* codes = *model.codes(name);
    Tensor c;
    c.shape = t->shape;
    c.i.assign(codes, codes + t->size);
    out[name.substr(0, name.size() - 7) + ".codes"] = std::move(c);
  }
}

void PutParams(tr::TrainModel& model, float* base, Tensors& out) {
  for (const tr::ParamTensor& t : model.tensors()) {
    Tensor g;
    g.shape = t.shape;
    g.f.assign(base + t.offset, base + t.offset + t.size);
    out[t.name] = std::move(g);
  }
}

// --blocks N --first F: MSE of the output of block N-1 against block_target
// [B][L][C], back through blocks [F, N) only; from block_input when given.
absl::Status RunBlocks(tr::TrainModel& model, const Tensors& in, int64_t blocks, int64_t first, Tensors& out) {
  LCD_ASSIGN_OR_RETURN(const Tensor* tokens, Need(in, "tokens"));
  LCD_ASSIGN_OR_RETURN(const Tensor* target, Need(in, "block_target"));
  const int64_t B = tokens->shape[0], L = tokens->shape[1], C = model.config().hidden_size;
  model.ZeroGrad();
  if (in.count("block_input") != 0) {
    const Tensor& x = in.at("block_input");
    if (x.numel() != B * L * C || x.f.empty()) return absl::InvalidArgumentError("block_input must be F32 [B][L][C]");
    LCD_RETURN_IF_ERROR(model.ForwardBlocks(x.f.data(), B, L, first, blocks));
  } else {
    LCD_RETURN_IF_ERROR(model.Forward(tokens->i.data(), B, L, blocks));
  }
  const float* h = model.residual(blocks);
  const int64_t n = B * L * C;
  std::vector<float> dout(static_cast<size_t>(n));
  double loss = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(h[i]) - target->f[i];
    loss += d * d;
    dout[i] = static_cast<float>(2.0 * d / static_cast<double>(n));
  }
  model.BackwardBlocks(dout.data(), first);
  out["loss"] = Scalar(loss / static_cast<double>(n));
  Tensor hidden;
  hidden.shape = {B, L, C};
  hidden.f.assign(h, h + n);
  out["hidden"] = std::move(hidden);
  PutParams(model, model.grads(), out);
  return absl::OkStatus();
}

absl::Status RunModel(const std::string& dir, const Tensors& in, const std::string& loss, double gamma, int threads,
                      int64_t group_size, int64_t blocks, int64_t first, Tensors& out) {
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<tr::TrainModel> model, tr::TrainModel::FromCheckpoint(dir, threads));
  LCD_RETURN_IF_ERROR(SetupCodebook(*model, in, group_size));
  if (blocks >= 0) {
    LCD_RETURN_IF_ERROR(RunBlocks(*model, in, blocks, first, out));
    PutCodes(*model, out);
    return absl::OkStatus();
  }
  LCD_ASSIGN_OR_RETURN(const Tensor* tokens, Need(in, "tokens"));
  const int64_t B = tokens->shape[0], L = tokens->shape[1], V = model->config().vocab_size;
  model->ZeroGrad();
  LCD_RETURN_IF_ERROR(model->Forward(tokens->i.data(), B, L));
  LCD_ASSIGN_OR_RETURN(double l, Loss(*model, loss, gamma, in, B * L));
  model->Backward();
  out["loss"] = Scalar(l);
  Tensor logits;
  logits.shape = {B, L, V};
  logits.f.assign(model->logits(), model->logits() + B * L * V);
  out["logits"] = std::move(logits);
  PutParams(*model, model->grads(), out);
  PutCodes(*model, out);
  return absl::OkStatus();
}

struct TrainArgs {
  int64_t steps = 50;
  tr::AdamWOptions adamw;
  tr::LrSchedule schedule;
  double clip = 1.0;
  int64_t group_size = 0;  // 0: dense.
  int64_t reassign_every = 0;
  bool freeze_dense = false;
};

absl::Status RunTrain(const std::string& dir, const Tensors& in, const TrainArgs& args, int threads, Tensors& out) {
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<tr::TrainModel> model, tr::TrainModel::FromCheckpoint(dir, threads));
  LCD_RETURN_IF_ERROR(SetupCodebook(*model, in, args.group_size));
  model->FreezeDense(args.freeze_dense);
  const std::vector<tr::ParamTensor> trainable = model->TrainableTensors();
  LCD_ASSIGN_OR_RETURN(const Tensor* tokens, Need(in, "tokens"));
  LCD_ASSIGN_OR_RETURN(const Tensor* targets, Need(in, "targets"));
  const int64_t S = tokens->shape[0], B = tokens->shape[1], L = tokens->shape[2], V = model->config().vocab_size;
  tr::AdamW opt(model->num_params(), args.adamw);
  Tensor losses = Scalar(0), norms = Scalar(0), lrs = Scalar(0), reassigned = Scalar(0);
  for (Tensor* t : {&losses, &norms, &lrs, &reassigned}) {
    t->shape = {args.steps};
    t->d.assign(static_cast<size_t>(args.steps), 0.0);
  }
  for (int64_t s = 0; s < args.steps; ++s) {
    const int64_t off = (s % S) * B * L;
    if (args.reassign_every > 0 && s > 0 && s % args.reassign_every == 0) {
      reassigned.d[s] = static_cast<double>(model->ReassignCodes());
    }
    model->ZeroGrad();
    LCD_RETURN_IF_ERROR(model->Forward(tokens->i.data() + off, B, L));
    losses.d[s] = tr::CrossEntropyLoss(model->logits(), targets->i.data() + off, B * L, V, model->dlogits(),
                                       model->pool());
    model->Backward();
    norms.d[s] = tr::ClipGradNorm(model->grads(), model->num_params(), args.clip);
    lrs.d[s] = args.schedule.At(s);
    opt.Step(model->params(), model->grads(), trainable, lrs.d[s], model->pool());
  }
  if (args.group_size > 0) {
    model->ReassignCodes();
    PutCodes(*model, out);
    out["reassigned"] = std::move(reassigned);
  }
  out["loss"] = std::move(losses);
  out["grad_norm"] = std::move(norms);
  out["lr"] = std::move(lrs);
  PutParams(*model, model->params(), out);
  return absl::OkStatus();
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "train_check: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("train_check", "Run the training core on safetensors inputs");
  options.add_options()("op", "one operation", cxxopts::value<std::string>())(
      "model", "model dir: forward + backward", cxxopts::value<std::string>())(
      "train", "model dir: AdamW training run", cxxopts::value<std::string>())(
      "in", "input safetensors", cxxopts::value<std::string>())("out", "output safetensors",
                                                                cxxopts::value<std::string>())(
      "loss", "ce, fkl, rkl or cakld", cxxopts::value<std::string>()->default_value("ce"))(
      "gamma", "CAKLD gamma", cxxopts::value<double>()->default_value("0.5"))(
      "threads", "threads", cxxopts::value<int>()->default_value("2"))(
      "steps", "training steps", cxxopts::value<int64_t>()->default_value("50"))(
      "lr", "peak learning rate", cxxopts::value<double>()->default_value("1e-3"))(
      "min-lr", "final learning rate", cxxopts::value<double>()->default_value("0"))(
      "warmup", "warmup steps", cxxopts::value<int64_t>()->default_value("5"))(
      "schedule", "constant, linear or cosine", cxxopts::value<std::string>()->default_value("cosine"))(
      "weight-decay", "AdamW weight decay", cxxopts::value<double>()->default_value("0.1"))(
      "beta1", "AdamW beta1", cxxopts::value<double>()->default_value("0.9"))(
      "beta2", "AdamW beta2", cxxopts::value<double>()->default_value("0.999"))(
      "eps", "AdamW eps", cxxopts::value<double>()->default_value("1e-8"))(
      "clip", "max global gradient norm", cxxopts::value<double>()->default_value("1.0"))(
      "group-size", "codebook group size (0: dense)", cxxopts::value<int64_t>()->default_value("0"))(
      "reassign-every", "re-assign codes every N steps (0: never)", cxxopts::value<int64_t>()->default_value("0"))(
      "freeze-dense", "train only latent weights and centroids")(
      "blocks", "--model: run this many blocks, MSE on their output (-1: whole model)",
      cxxopts::value<int64_t>()->default_value("-1"))(
      "first", "--blocks: lowest block to back-propagate into", cxxopts::value<int64_t>()->default_value("0"));
  try {
    auto r = options.parse(argc, argv);
    if (!r.count("in") || !r.count("out")) return Fail("--in and --out are required");
    std::map<std::string, std::string> meta;
    absl::StatusOr<Tensors> in = Read(r["in"].as<std::string>(), &meta);
    if (!in.ok()) return Fail(in.status().ToString());
    const int threads = r["threads"].as<int>();
    Tensors out;
    absl::Status st;
    if (r.count("op")) {
      lcd::kernels::ThreadPool pool(threads);
      st = RunOp(r["op"].as<std::string>(), *in, meta, out, &pool);
    } else if (r.count("model")) {
      st = RunModel(r["model"].as<std::string>(), *in, r["loss"].as<std::string>(), r["gamma"].as<double>(), threads,
                    r["group-size"].as<int64_t>(), r["blocks"].as<int64_t>(), r["first"].as<int64_t>(), out);
    } else if (r.count("train")) {
      TrainArgs a;
      a.steps = r["steps"].as<int64_t>();
      a.adamw.beta1 = r["beta1"].as<double>();
      a.adamw.beta2 = r["beta2"].as<double>();
      a.adamw.eps = r["eps"].as<double>();
      a.adamw.weight_decay = r["weight-decay"].as<double>();
      absl::StatusOr<tr::LrSchedule::Kind> kind = tr::ParseLrScheduleKind(r["schedule"].as<std::string>());
      if (!kind.ok()) return Fail(kind.status().ToString());
      a.schedule.kind = *kind;
      a.schedule.max_lr = r["lr"].as<double>();
      a.schedule.min_lr = r["min-lr"].as<double>();
      a.schedule.warmup_steps = r["warmup"].as<int64_t>();
      a.schedule.total_steps = a.steps;
      a.clip = r["clip"].as<double>();
      a.group_size = r["group-size"].as<int64_t>();
      a.reassign_every = r["reassign-every"].as<int64_t>();
      a.freeze_dense = r.count("freeze-dense") > 0;
      st = RunTrain(r["train"].as<std::string>(), *in, a, threads, out);
    } else {
      return Fail("one of --op, --model, --train is required");
    }
    if (!st.ok()) return Fail(st.ToString());
    st = Write(r["out"].as<std::string>(), out);
    if (!st.ok()) return Fail(st.ToString());
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
  return 0;
}
