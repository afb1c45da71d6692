// `lcd quantize`: a Hugging Face checkpoint to a quantized artifact v1
// directory (RTN, importance-weighted k-means, LCD: k-means init plus
// knowledge distillation, or GPTQ), optionally calibrated on a
// text file and stamped with perplexity figures. The work is done by
// lcd::quantizer::QuantizeModel (lcd/quantizer/quantize_model.h); this file
// only parses flags and prints.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "cxxopts.hpp"
#include "lcd/quantizer/methods.h"
#include "lcd/quantizer/quantize_model.h"
#include "nlohmann/json.hpp"
#include "lcd/subcommand.h"

namespace lcd::tools {
namespace {

int RunQuantize(int argc, char** argv) {
  cxxopts::Options options("lcd quantize", "Quantize a Hugging Face checkpoint into an lcd artifact directory.");
  options.add_options()
      ("model", "Hugging Face model directory", cxxopts::value<std::string>())
      ("out", "Artifact directory to create (must not exist or be empty)", cxxopts::value<std::string>())
      ("method", quantizer::MethodNames(), cxxopts::value<std::string>())
      ("bits", "Bits per weight of the decoder linears: 2, 3 or 4", cxxopts::value<int>())
      ("group-size", "Columns per (row, group)", cxxopts::value<int64_t>()->default_value("128"))
      ("calib", "Calibration text file (kmeans: importance = E[x^2] of each input column; lcd: distillation "
       "sequences, default teacher-generated; gptq and glvq: required, E[x x^T] of each input)",
       cxxopts::value<std::string>())
      ("calib-tokens", "Calibration tokens taken from the start of --calib (0 = all)",
       cxxopts::value<int64_t>()->default_value("16384"))
      ("calib-window", "Tokens per calibration window (0 = min(512, context))",
       cxxopts::value<int64_t>()->default_value("0"))
      ("kmeans-iters", "Lloyd iterations per group", cxxopts::value<int>()->default_value("20"))
      ("quantize-lm-head", "Also quantize lm_head at this many bits (rtn and gptq 2-8, kmeans 2-4); default dense",
       cxxopts::value<int>()->default_value("0"))
      ("eval-text", "After writing, measure perplexity of the artifact and the source on this text",
       cxxopts::value<std::string>())
      ("eval-window", "Tokens per perplexity window (0 = min(2048, context))",
       cxxopts::value<int64_t>()->default_value("0"))
      ("eval-max-windows", "Evaluate at most this many windows (0 = all)",
       cxxopts::value<int64_t>()->default_value("0"))
      ("steps", "lcd: distillation steps (0 = k-means init only)", cxxopts::value<int64_t>()->default_value("200"))
      ("lr", "lcd: peak AdamW learning rate", cxxopts::value<double>()->default_value("3e-4"))
      ("seq-len", "lcd: tokens per calibration sequence", cxxopts::value<int64_t>()->default_value("128"))
      ("batch", "lcd: sequences per step", cxxopts::value<int64_t>()->default_value("8"))
      ("reassign-every", "lcd: steps between code re-assignments (0 = never)",
       cxxopts::value<int64_t>()->default_value("10"))
      ("samples", "lcd: teacher-generated sequences (without --calib)", cxxopts::value<int64_t>()->default_value("64"))
      ("temperature", "lcd: teacher sampling temperature", cxxopts::value<double>()->default_value("0.8"))
      ("seed", "lcd: seed of generation and batch order", cxxopts::value<uint64_t>()->default_value("0"))
      ("block-steps", "lcd: progressive block-wise steps per block before the end-to-end KD (0 = none)",
       cxxopts::value<int64_t>()->default_value("0"))
      ("block-lr", "lcd: peak learning rate of the block-wise stage (0 = --lr)",
       cxxopts::value<double>()->default_value("0"))
      ("glvq-dim", "glvq: lattice dimension d (8; 16 and 32 selectable; must divide --group-size)",
       cxxopts::value<int>()->default_value("8"))
      ("glvq-steps", "glvq: Adam steps on generator and mu per column group", cxxopts::value<int>()->default_value("50"))
      ("glvq-reround-every", "glvq: steps between Babai re-roundings", cxxopts::value<int>()->default_value("10"))
      ("glvq-lr", "glvq: Adam step size (relative to the generator's scale)", cxxopts::value<double>()->default_value("0.01"))
      ("glvq-lambda", "glvq: weight of ||G - G0||^2 / ||G0||^2", cxxopts::value<double>()->default_value("0.01"))
      ("glvq-no-alloc", "glvq: same width for every column group (no salience N-1/N/N+1 allocation)")
      ("speculative", "lcd: keep a code re-assignment only if the KD loss on judging sequences does not rise")
      ("speculative-scope", "lcd --speculative: what one proposal is: model (every code at once) or block (each decoder "
       "block's codes, judged front to back)", cxxopts::value<std::string>()->default_value("model"))
      ("merge-split-tau", "lcd --speculative: also propose, at each re-assignment, merging each group's two centroids "
       "nearer than TAU x the group's weight range and splitting its most loaded one, kept only if the KD loss does not "
       "rise (0 = never)", cxxopts::value<double>()->default_value("0"))
      ("smooth", "lcd: adaptive activation smoothing folded into norms/rows: --smooth (= --smooth=on) or --smooth=off",
       cxxopts::value<std::string>()->default_value("off")->implicit_value("on"))
      ("smooth-alphas", "lcd: the smoothing alpha grid, comma-separated values in [0, 1] (s = 1 is always a candidate)",
       cxxopts::value<std::string>()->default_value("0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8"))
      ("lr-scale", "distillation: none = one lr for all tensors; rms = each quantized weight's lr times RMS(W) / RMS of all",
       cxxopts::value<std::string>()->default_value("none"))
      ("act-bits", "lcd: 8 = per-token int8 activations (W·A8) in training and in the artifact; 0 = fp",
       cxxopts::value<int>()->default_value("0"))
      ("gptq-damp", "gptq: dampening, fraction of mean diag(H) added to the diagonal",
       cxxopts::value<double>()->default_value("0.01"))
      ("gptq-act-order", "gptq: quantize columns by descending H_jj (group grids fixed up front: static groups)")
      ("gptq-block-size", "gptq: columns per lazy batch update", cxxopts::value<int64_t>()->default_value("128"))
      ("gptq-sequential", "gptq: collect each layer's Hessian through the already quantized layers (L+1 passes)")
      ("resume", "Checkpoint directory of the distillation (glvq: of finished weights): continue from its checkpoint when it holds one of "
       "the same settings, else start and checkpoint there (methods without a training loop start over)",
       cxxopts::value<std::string>())
      ("checkpoint-every", "With --resume: distillation steps between checkpoints",
       cxxopts::value<int64_t>()->default_value("50"))
      ("time-budget", "Wall-time budget in seconds (0 = none): a distillation that measures it cannot finish in time "
       "stops after its first steps with exit code 3, saying how many steps fit",
       cxxopts::value<double>()->default_value("0"))
      ("eval-every", "Distillation: end-to-end steps between held-out KL evaluations (the quality curve, in the log and "
       "the manifest as heldout_kl_step_<n>); 0 = only before and after", cxxopts::value<int64_t>()->default_value("0"))
      ("teacher-cache-mb", "Distillation: memory (MiB) for the teacher's logits of every calibration sequence; when they "
       "fit, the teacher runs once per sequence instead of every step (same result, ~25% faster steps); 0 = never",
       cxxopts::value<int64_t>()->default_value("4096"))
      ("r2q-refit", "r2q: rounds of least-squares refit of (alpha1, alpha2) and re-assignment after the closed form",
       cxxopts::value<int>()->default_value("0"))
      ("lr-schedule", "Distillation lr schedule: cosine (5% warmup, to 0.1x) | constant (no warmup); "
       "default the method's (lcd cosine, bitdistiller constant)", cxxopts::value<std::string>())
      ("bitdistiller-no-clip", "bitdistiller: skip the asymmetric clipping search (a = b = 0)")
      ("bitdistiller-no-range-grad", "bitdistiller: straight-through only, no gradient through each group's min/max")
      ("threads", "Worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
      ("json", "Print the written manifest's quality figures as one JSON object on stdout")
      ("progress-fd", "Also write progress as JSON lines {phase, progress, message} to this file descriptor",
       cxxopts::value<int>())
      ("h,help", "Show this help");
  quantizer::QuantizeModelOptions o;
  bool json = false;
  int progress_fd = -1;
  cxxopts::ParseResult flags;
  if (std::optional<int> exit = ParseFlags("quantize", options, argc, argv, {"model", "out", "method", "bits"}, &flags)) {
    return *exit;
  }
  o.model_dir = flags["model"].as<std::string>();
  o.out_dir = flags["out"].as<std::string>();
  o.method = flags["method"].as<std::string>();
  o.bits = flags["bits"].as<int>();
  o.group_size = flags["group-size"].as<int64_t>();
  if (flags.count("calib")) o.calib_path = flags["calib"].as<std::string>();
  o.calib_tokens = flags["calib-tokens"].as<int64_t>();
  o.calib_window = flags["calib-window"].as<int64_t>();
  o.kmeans_iters = flags["kmeans-iters"].as<int>();
  o.lm_head_bits = flags["quantize-lm-head"].as<int>();
  if (flags.count("eval-text")) o.eval_text = flags["eval-text"].as<std::string>();
  o.eval_window = flags["eval-window"].as<int64_t>();
  o.eval_max_windows = flags["eval-max-windows"].as<int64_t>();
  o.threads = flags["threads"].as<int>();
  o.kd_steps = flags["steps"].as<int64_t>();
  o.kd_lr = flags["lr"].as<double>();
  o.kd_seq_len = flags["seq-len"].as<int64_t>();
  o.kd_batch = flags["batch"].as<int64_t>();
  o.kd_reassign_every = flags["reassign-every"].as<int64_t>();
  o.kd_samples = flags["samples"].as<int64_t>();
  o.kd_temperature = flags["temperature"].as<double>();
  o.kd_seed = flags["seed"].as<uint64_t>();
  o.kd_speculative = flags.count("speculative") > 0;
  o.kd_speculative_scope = flags["speculative-scope"].as<std::string>();
  o.kd_merge_split_tau = flags["merge-split-tau"].as<double>();
  o.kd_block_steps = flags["block-steps"].as<int64_t>();
  o.kd_block_lr = flags["block-lr"].as<double>();
  {
    const std::string smooth = flags["smooth"].as<std::string>();
    if (smooth != "on" && smooth != "off") {
      std::fprintf(stderr, "lcd quantize: --smooth takes on or off, got '%s'\n", smooth.c_str());
      return 2;
    }
    o.lcd_smooth = smooth == "on";
    const std::vector<std::string> alphas = absl::StrSplit(flags["smooth-alphas"].as<std::string>(), ',');
    for (const std::string& a : alphas) {
      double v = 0.0;
      if (!absl::SimpleAtod(a, &v)) {
        std::fprintf(stderr, "lcd quantize: --smooth-alphas: '%s' is not a number\n", a.c_str());
        return 2;
      }
      o.lcd_smooth_alphas.push_back(v);
    }
    o.act_bits = flags["act-bits"].as<int>();
    o.kd_lr_scale = flags["lr-scale"].as<std::string>();
  }
  o.gptq_percdamp = flags["gptq-damp"].as<double>();
  o.gptq_act_order = flags.count("gptq-act-order") > 0;
  o.gptq_block_size = flags["gptq-block-size"].as<int64_t>();
  o.gptq_sequential = flags.count("gptq-sequential") > 0;
  if (flags.count("resume")) o.resume_dir = flags["resume"].as<std::string>();
  o.kd_checkpoint_every = flags["checkpoint-every"].as<int64_t>();
  o.kd_teacher_cache_mb = flags["teacher-cache-mb"].as<int64_t>();
  o.kd_eval_every = flags["eval-every"].as<int64_t>();
  o.time_budget_s = flags["time-budget"].as<double>();
  o.r2q_refit = flags["r2q-refit"].as<int>();
  if (flags.count("lr-schedule")) o.kd_lr_schedule = flags["lr-schedule"].as<std::string>();
  o.bitdistiller_clip = flags.count("bitdistiller-no-clip") == 0;
  o.bitdistiller_range_grad = flags.count("bitdistiller-no-range-grad") == 0;
  o.glvq_dim = flags["glvq-dim"].as<int>();
  o.glvq_steps = flags["glvq-steps"].as<int>();
  o.glvq_reround_every = flags["glvq-reround-every"].as<int>();
  o.glvq_lr = flags["glvq-lr"].as<double>();
  o.glvq_lambda = flags["glvq-lambda"].as<double>();
  o.glvq_allocate_bits = flags.count("glvq-no-alloc") == 0;
  json = flags.count("json") > 0;
  if (flags.count("progress-fd")) progress_fd = flags["progress-fd"].as<int>();
  o.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  std::FILE* progress_out = nullptr;
  if (progress_fd >= 0) {
    progress_out = ::fdopen(progress_fd, "w");
    if (progress_out == nullptr) {
      std::fprintf(stderr, "lcd quantize: --progress-fd %d is not an open file descriptor\n", progress_fd);
      return 2;
    }
    o.progress = [progress_out](const std::string& phase, double fraction, const std::string& message) {
      const nlohmann::json line = {{"phase", phase}, {"progress", fraction}, {"message", message}};
      std::fprintf(progress_out, "%s\n", line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      std::fflush(progress_out);
    };
  }
  absl::StatusOr<runtime::ArtifactManifest> m = quantizer::QuantizeModel(o);
  if (!m.ok()) {
    // Exit codes for supervisors (lcd-jobs): 1 = may pass on retry (an I/O or
    // internal error), 2 = bad flags, 3 = the same command will fail again
    // (bad input or settings, a budget that cannot be met).
    ReportError("quantize", m.status());
    switch (m.status().code()) {
      case absl::StatusCode::kUnknown:
      case absl::StatusCode::kInternal:
      case absl::StatusCode::kUnavailable:
      case absl::StatusCode::kAborted:
      case absl::StatusCode::kDeadlineExceeded:
      case absl::StatusCode::kCancelled:
        return 1;
      default:
        return 3;
    }
  }
  if (json) {
    std::string out = "{";
    for (const auto& [k, v] : m->quality) {
      char num[32];
      std::snprintf(num, sizeof(num), "%.10g", v);
      out += (out.size() > 1 ? ", \"" : "\"") + k + "\": " + num;
    }
    std::printf("%s}\n", out.c_str());
  } else {
    std::printf("wrote %s (%s, %d bits, group %lld)\n", o.out_dir.c_str(), o.method.c_str(), o.bits,
                static_cast<long long>(o.group_size));
    for (const auto& [k, v] : m->quality) std::printf("  %s: %.6g\n", k.c_str(), v);
  }
  return 0;
}

}  // namespace

LCD_REGISTER_SUBCOMMAND(quantize, "quantize", "quantize a Hugging Face checkpoint into an lcd artifact", RunQuantize);

}  // namespace lcd::tools
