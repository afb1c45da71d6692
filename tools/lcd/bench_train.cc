// `lcd bench-train`: training-core throughput of a real model on this
// machine (issue 7, "Throughput"). Runs N steps of the TrainModel step that
// the distillation loop uses (forward, cross-entropy on random next tokens,
// backward, gradient clipping, AdamW), dense or with codebook quantizers on
// every decoder linear and the dense weights frozen (as LCD trains), and
// prints tokens/s of each phase, FLOPs per token, achieved GFLOP/s and, in
// the same run, OpenBLAS sgemm GFLOP/s on the model's biggest GEMM shapes
// (the machine's measured GEMM peak). --breakdown adds per-operation times
// (TrainModel::EnableProfile).
//
// FLOPs per token, counted as "6 N + attention": N = parameters of every
// linear the step multiplies by (q/k/v/o, gate/up/down, lm_head; the
// embedding lookup costs none), 2 N forward and 4 N backward (dX and dW);
// attention adds 4 L D H per layer forward (Q K^T and P V over the full L x L
// square, which is what AttentionForward computes; the causal minimum is
// half) and twice that backward. With --quantized the frozen lm_head needs no
// dW, but the nominal 6 N is still reported (as PyTorch's is, for the ratio).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cxxopts.hpp"
#include "lcd/quantizer/train/ops.h"
#include "lcd/quantizer/train/optimizer.h"
#include "lcd/quantizer/train/train_model.h"
#include "lcd/subcommand.h"

namespace lcd::tools {
namespace {

namespace tr = lcd::quantizer::train;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct BenchFlags {
  std::string model_dir, quantized;
  int64_t seq_len = 512, batch = 1, steps = 3, warmup = 1, group_size = 128;
  int threads = 2;
  bool breakdown = false, skip_gemm = false;
};

// sgemm GFLOP/s of C[m][n] = A[m][k] B[n][k]^T (the linears' forward
// orientation), repeated for at least 0.5 s.
double SgemmGflops(int64_t m, int64_t n, int64_t k) {
  std::vector<float> a(static_cast<size_t>(m * k), 0.01f), b(static_cast<size_t>(n * k), 0.02f),
      c(static_cast<size_t>(m * n));
  auto once = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                1.0f, a.data(), static_cast<int>(k), b.data(), static_cast<int>(k), 0.0f, c.data(),
                static_cast<int>(n));
  };
  once();  // Warm-up (OpenBLAS buffers, page faults).
  int reps = 0;
  const double t0 = Now();
  double t = 0;
  do {
    once();
    ++reps;
    t = Now() - t0;
  } while (t < 0.5);
  return 2.0 * m * n * k * reps / t / 1e9;
}

// Codebook quantizers (k = 2^bits per row-group, centroids evenly spaced over
// the group's range, codes = nearest) on every decoder linear, dense frozen.
absl::Status Quantize(tr::TrainModel& model, int bits, int64_t group_size) {
  std::vector<std::pair<std::string, tr::CodebookSpec>> specs;
  for (const tr::ParamTensor& t : model.tensors()) {
    if (t.name.starts_with("model.layers.") && t.name.ends_with("_proj.weight")) {
      specs.emplace_back(t.name, tr::CodebookSpec{group_size, int64_t{1} << bits});
    }
  }
  if (absl::Status s = model.EnableCodebook(specs); !s.ok()) return s;
  for (const auto& [name, spec] : specs) {
    absl::StatusOr<const tr::ParamTensor*> w = model.Find(name);
    absl::StatusOr<const tr::ParamTensor*> c =
        model.Find(name.substr(0, name.size() - std::string(".weight").size()) + ".centroids");
    if (!w.ok()) return w.status();
    if (!c.ok()) return c.status();
    const int64_t rows = (*w)->shape[0], cols = (*w)->shape[1], groups = (cols + group_size - 1) / group_size;
    const float* wv = model.params() + (*w)->offset;
    float* cv = model.params() + (*c)->offset;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const float* p = wv + r * cols + g * group_size;
        const int64_t n = std::min(group_size, cols - g * group_size);
        const auto [lo, hi] = std::minmax_element(p, p + n);
        for (int64_t q = 0; q < spec.k; ++q) {
          cv[(r * groups + g) * spec.k + q] = *lo + (*hi - *lo) * (static_cast<float>(q) + 0.5f) / spec.k;
        }
      }
    }
  }
  model.ReassignCodes();
  model.FreezeDense(true);
  return absl::OkStatus();
}

absl::Status Run(const BenchFlags& f) {
  int bits = 0;
  if (f.quantized == "lcd-2bit") {
    bits = 2;
  } else if (f.quantized == "lcd-3bit") {
    bits = 3;
  } else if (!f.quantized.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--quantized must be lcd-2bit or lcd-3bit, got \"", f.quantized, "\""));
  }
  if (f.seq_len < 1 || f.batch < 1 || f.steps < 1 || f.warmup < 0 || f.group_size < 1 || f.threads < 0) {
    return absl::InvalidArgumentError(
        "--seq-len, --batch, --steps and --group-size must be >= 1, --warmup and --threads >= 0");
  }
  std::fprintf(stderr, "bench-train: loading %s\n", f.model_dir.c_str());
  absl::StatusOr<std::unique_ptr<tr::TrainModel>> loaded = tr::TrainModel::FromCheckpoint(f.model_dir, f.threads);
  if (!loaded.ok()) return loaded.status();
  tr::TrainModel& model = **loaded;
  const runtime::ModelConfig& c = model.config();
  if (f.seq_len > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("--seq-len ", f.seq_len,
                                                   " exceeds the model's max_position_embeddings ",
                                                   c.max_position_embeddings));
  }
  if (bits > 0) {
    if (absl::Status s = Quantize(model, bits, f.group_size); !s.ok()) return s;
  }
  const int64_t B = f.batch, L = f.seq_len, T = B * L, V = c.vocab_size;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> seq(static_cast<size_t>(B * (L + 1)));
  for (int32_t& t : seq) t = id(rng);
  std::vector<int32_t> tokens(static_cast<size_t>(T)), targets(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < L; ++j) {
      tokens[b * L + j] = seq[b * (L + 1) + j];
      targets[b * L + j] = seq[b * (L + 1) + j + 1];
    }
  }
  const std::vector<tr::ParamTensor> trainable = model.TrainableTensors();
  tr::AdamW adamw(model.num_params(), tr::AdamWOptions{});
  double t_fwd = 0, t_loss = 0, t_bwd = 0, t_opt = 0, loss = 0;
  for (int64_t step = 0; step < f.warmup + f.steps; ++step) {
    const bool measured = step >= f.warmup;
    if (step == f.warmup) {
      model.ResetProfile();
      model.EnableProfile(f.breakdown);
    }
    const double t0 = Now();
    if (absl::Status s = model.Forward(tokens.data(), B, L); !s.ok()) return s;
    const double t1 = Now();
    loss = tr::CrossEntropyLoss(model.logits(), targets.data(), T, V, model.dlogits(), model.pool());
    const double t2 = Now();
    model.ZeroGrad();
    model.Backward();
    const double t3 = Now();
    tr::ClipGradNorm(model.grads(), model.num_params(), 1.0, model.pool());
    adamw.Step(model.params(), model.grads(), trainable, 1e-5, model.pool());
    const double t4 = Now();
    std::fprintf(stderr, "bench-train: step %lld%s: loss %.4f, fwd %.2f s, loss %.2f s, bwd %.2f s, opt %.2f s\n",
                 static_cast<long long>(step), measured ? "" : " (warm-up)", loss, t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    if (!measured) continue;
    t_fwd += t1 - t0;
    t_loss += t2 - t1;
    t_bwd += t3 - t2;
    t_opt += t4 - t3;
  }
  // FLOPs per token (see the file comment).
  const int64_t C = c.hidden_size, qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim;
  const int64_t I = c.intermediate_size;
  const double n_linear = static_cast<double>(c.num_layers) * (C * qd + 2 * C * kvd + qd * C + 3 * C * I) +
                          static_cast<double>(V) * C;
  const double attn_fwd = 4.0 * c.num_layers * static_cast<double>(L) * qd;
  const double flops_tok = 6.0 * n_linear + 3.0 * attn_fwd;
  const double tokens_run = static_cast<double>(T * f.steps);
  const double total = t_fwd + t_loss + t_bwd + t_opt;
  std::printf("model %s: %d layers, hidden %lld, vocab %lld, %lld params (%.1fM in linears incl. lm_head)%s\n",
              f.model_dir.c_str(), static_cast<int>(c.num_layers), static_cast<long long>(C),
              static_cast<long long>(V), static_cast<long long>(model.num_params()), n_linear / 1e6,
              bits > 0 ? absl::StrCat(", codebook ", bits, "-bit g", f.group_size, " on decoder linears, dense frozen")
                             .c_str()
                       : ", dense");
  std::printf("batch %lld x seq %lld, %lld measured steps (+%lld warm-up), %d threads\n", static_cast<long long>(B),
              static_cast<long long>(L), static_cast<long long>(f.steps), static_cast<long long>(f.warmup), f.threads);
  std::printf("final loss %.4f\n", loss);
  std::printf("tok/s: fwd %.1f | loss %.1f | bwd %.1f | optimizer %.1f | total %.1f\n", tokens_run / t_fwd,
              tokens_run / t_loss, tokens_run / t_bwd, tokens_run / t_opt, tokens_run / total);
  std::printf("seconds/step: fwd %.3f, loss %.3f, bwd %.3f, optimizer %.3f, total %.3f\n", t_fwd / f.steps,
              t_loss / f.steps, t_bwd / f.steps, t_opt / f.steps, total / f.steps);
  std::printf("FLOPs/token %.3g (6 x %.1fM linear params + attention %.3g); "
              "achieved %.1f GFLOP/s (fwd %.1f, bwd %.1f)\n",
              flops_tok, n_linear / 1e6, 3.0 * attn_fwd, flops_tok * tokens_run / total / 1e9,
              (flops_tok / 3.0) * tokens_run / t_fwd / 1e9, (flops_tok * 2.0 / 3.0) * tokens_run / t_bwd / 1e9);
  if (f.breakdown) {
    std::printf("breakdown (seconds per step, %% of the step):\n");
    double profiled = 0;
    for (const auto& [name, s] : model.profile()) {
      std::printf("  %-16s %8.3f  %5.1f%%\n", name.c_str(), s / f.steps, 100.0 * s / total);
      profiled += s;
    }
    std::printf("  %-16s %8.3f  %5.1f%%\n", "loss", t_loss / f.steps, 100.0 * t_loss / total);
    std::printf("  %-16s %8.3f  %5.1f%%\n", "optimizer", t_opt / f.steps, 100.0 * t_opt / total);
    const double rest = t_fwd + t_bwd - profiled;
    std::printf("  %-16s %8.3f  %5.1f%%  (zero-grad, dlogits zeroing, untimed glue)\n", "other", rest / f.steps,
                100.0 * rest / total);
  }
  if (!f.skip_gemm) {
    tr::SetBlasThreads(model.pool()->num_threads());
    const double peak_head = SgemmGflops(T, V, C), peak_mlp = SgemmGflops(T, I, C), peak_down = SgemmGflops(T, C, I);
    const double peak = std::max({peak_head, peak_mlp, peak_down});
    std::printf("OpenBLAS sgemm GFLOP/s (%d threads): lm_head %lldx%lldx%lld %.1f | gate/up %lldx%lldx%lld %.1f | "
                "down %lldx%lldx%lld %.1f\n",
                model.pool()->num_threads(), static_cast<long long>(T), static_cast<long long>(V),
                static_cast<long long>(C), peak_head, static_cast<long long>(T), static_cast<long long>(I),
                static_cast<long long>(C), peak_mlp, static_cast<long long>(T), static_cast<long long>(C),
                static_cast<long long>(I), peak_down);
    std::printf("training step at %.1f%% of the measured sgemm peak (%.1f GFLOP/s)\n",
                100.0 * flops_tok * tokens_run / total / 1e9 / peak, peak);
  }
  return absl::OkStatus();
}

int RunBenchTrain(int argc, char** argv) {
  cxxopts::Options options("lcd bench-train",
                           "Measure training-core throughput (fwd, CE loss, bwd, AdamW) of a model on random tokens.");
  options.add_options()
      ("model", "Hugging Face model directory", cxxopts::value<std::string>())
      ("seq-len", "Sequence length", cxxopts::value<int64_t>()->default_value("512"))
      ("batch", "Sequences per step", cxxopts::value<int64_t>()->default_value("1"))
      ("steps", "Measured steps", cxxopts::value<int64_t>()->default_value("3"))
      ("warmup", "Unmeasured steps first", cxxopts::value<int64_t>()->default_value("1"))
      ("threads", "Threads, ours and OpenBLAS's (0 = all cores)", cxxopts::value<int>()->default_value("2"))
      ("quantized", "lcd-2bit or lcd-3bit: codebook quantizers on every decoder linear, dense frozen (as LCD)",
       cxxopts::value<std::string>()->default_value(""))
      ("group-size", "Codebook group size with --quantized", cxxopts::value<int64_t>()->default_value("128"))
      ("breakdown", "Print per-operation times", cxxopts::value<bool>()->default_value("false"))
      ("skip-gemm", "Do not measure the sgemm peak", cxxopts::value<bool>()->default_value("false"))
      ("h,help", "Show this help");
  BenchFlags f;
  cxxopts::ParseResult flags;
  if (std::optional<int> exit = ParseFlags("bench-train", options, argc, argv, {"model"}, &flags)) return *exit;
  f.model_dir = flags["model"].as<std::string>();
  f.seq_len = flags["seq-len"].as<int64_t>();
  f.batch = flags["batch"].as<int64_t>();
  f.steps = flags["steps"].as<int64_t>();
  f.warmup = flags["warmup"].as<int64_t>();
  f.threads = flags["threads"].as<int>();
  f.quantized = flags["quantized"].as<std::string>();
  f.group_size = flags["group-size"].as<int64_t>();
  f.breakdown = flags["breakdown"].as<bool>();
  f.skip_gemm = flags["skip-gemm"].as<bool>();
  absl::Status s = Run(f);
  if (!s.ok()) return ReportError("bench-train", s);
  return 0;
}

}  // namespace

LCD_REGISTER_SUBCOMMAND(bench_train, "bench-train",
                        "Measure training-core tokens/s (fwd/bwd/AdamW) and GFLOP/s against the sgemm peak",
                        RunBenchTrain);

}  // namespace lcd::tools
