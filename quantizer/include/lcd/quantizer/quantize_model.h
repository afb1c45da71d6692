// The offline quantization driver behind `lcd quantize` (and, later, the job
// service's workers): a Hugging Face checkpoint in, an artifact v1 directory
// out (lcd/runtime/artifact.h, written by ArtifactWriter).
//
// What is quantized: every decoder linear weight,
// model.layers.<i>.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj}.weight,
// with one method, bit width and group size. lm_head.weight stays dense
// unless lm_head_bits > 0; then it is quantized with the same method at that
// width, and with tied embeddings (no lm_head.weight stored) a separate
// quantized "lm_head.weight" is written from the embedding matrix while
// model.embed_tokens.weight stays dense. Every other tensor (embeddings,
// norms, biases) is stored unchanged in its dtype.
//
// Calibration (k-means only): the text file is tokenized without BOS, cut
// to calib_tokens tokens, and run through the full-precision model
// (lcd/quantizer/calibration.h); E[x_j^2] of each layer's input is the
// importance of column j. Without it, k-means uses uniform importance.
//
// Distillation (method "lcd"; the kd_* options serve every quantization-
// aware method, through the driver of quantizer/src/distill.h; each method's
// init and format are its own): calibration sequences of kd_seq_len tokens, either
// the text file cut into windows ([BOS] + text, as eval-ppl does; at most
// calib_tokens tokens) or, without calib_path, kd_samples sequences the
// full-precision model generates from BOS (token 0 when the tokenizer has
// none) with runtime::Generate at kd_temperature, seed kd_seed*1000003+i,
// EOS ignored. The last tenth (at least one, at most 32 sequences) is held out. Centroids start
// from QuantizeKmeans with E[x_j^2] importance measured on the training
// sequences; then, with kd_block_steps > 0 (LCD.md step 4), every block
// in turn, front to back, fits its output to the teacher's block output
// (MSE, its input from the already tuned student blocks) for kd_block_steps
// steps on its own latent weights and centroids (same optimiser settings,
// peak lr kd_block_lr or else kd_lr, its own AdamW state; codes re-assigned
// within the block, and once more when it is tuned; figure
// heldout_kl_teacher_blockwise; each block runs alone on the kept inputs,
// 2 x train sequences x kd_seq_len x hidden fp32 of memory); then
// kd_steps AdamW steps (no weight decay, cosine schedule
// to 0.1 x kd_lr after 5% warmup, global-norm clip 1) on the centroids and
// latent weights (straight-through) minimise CAKLD against the frozen
// full-precision TrainModel on batches of kd_batch training sequences;
// gamma = mean teacher top-1 probability over the (first 128) training sequences,
// measured first. Codes are re-assigned to the nearest centroid of the
// latent weight every kd_reassign_every steps (kd_speculative, LCD.md
// step 6: tentatively, kept only when the mean CAKLD on a judging tenth of
// the sequences, apart from training and held-out ones, does not rise;
// figures speculative_proposals and speculative_acceptance; with
// kd_merge_split_tau > 0 a second proposal at each re-assignment merges each
// group's two centroids nearer than tau x the group's range and splits the
// most loaded one (train::CodebookMergeSplit), judged the same way, its AdamW
// moments reset when kept; figures speculative_merge_split_proposals,
// _acceptance and _groups); the artifact stores the
// final centroids in fp16 with the codes trained last. Quality figures
// added: kd_gamma, kd_loss_first_step, kd_loss_last_step, heldout_cakld(_init),
// heldout_kl_teacher(_init) (mean per-token KL(P_T||P_S) on the held-out
// sequences after the k-means init and after training), codes_reassigned,
// lcd_seconds. lm_head stays dense (lm_head_bits must be 0).
//
// R2Q (method "r2q", LCD.md "R2Q"; bits must be 2, lm_head stays dense):
// the same distillation as lcd (every kd_* option above, teacher-generated
// or --calib sequences, held-out figures, "r2q_seconds"), with the
// kBinaryCoded format instead of the codebook: per (row, group) the closed
// form alpha1 = mean|W|, B1 = sign W, alpha2 = mean|R|, B2 = sign R of
// lcd/quantizer/r2q.h, refined by r2q_refit rounds of E[x_j^2]-weighted
// least-squares refit of (alpha1, alpha2) and nearest-level re-assignment;
// then kd_steps of CAKLD on the alphas and the latent weights
// (straight-through signs; codes re-assigned to the nearest of the four
// levels every kd_reassign_every steps; R2qLoopQuantizer). kd_steps = 0 is
// post-training R2Q. Stored: fp16 (alpha1, alpha2, 0) per group, 2-bit codes
// (bit 0 = B1, bit 1 = B2). InvalidArgument for bits != 2, lm_head_bits,
// r2q_refit < 0 and the kd ranges lcd checks.
// GPTQ (method "gptq"; lcd/quantizer/gptq.h has the per-matrix algorithm):
// calibration text is required (calib_path; InvalidArgument without it). It
// is tokenized, cut to calib_tokens and run through the FULL-PRECISION model
// in windows of calib_window tokens as for k-means; E[x x^T] of every
// quantized weight's input is its Hessian: by default from one pass over the
// full-precision model (a decision); with gptq_sequential as the reference
// code does, one decoder layer at a time (then lm_head) from the model whose
// earlier layers are already quantized (a temporary fp32 copy of the model
// with those layers decoded, under the system temp directory, removed
// afterwards; L+1 calibration passes). Every quantized weight, lm_head included
// when lm_head_bits > 0 (affine, 2..8 bits; a tied head uses the embedding
// matrix and lm_head's observed input), is quantized by QuantizeGptq with
// gptq_percdamp, gptq_act_order (static groups) and gptq_block_size, into
// the affine format with group_size. Quality figures added:
// output_error_rel_gptq and output_error_rel_rtn (mean over the quantized
// weights of tr(E H E^T) / tr(W H W^T), E the quantization error of GPTQ and
// of RTN on the same groups), gptq_calibration_seconds, gptq_quantize_seconds,
// gptq_seconds.
// GLVQ (method "glvq", lcd/quantizer/glvq.h): calib_path is required; the
// text (calib_tokens, calib_window as for k-means) is run through the
// full-precision model once for H = E[x x^T] of every decoder linear's input,
// then each weight is quantized by QuantizeGlvq with glvq_dim, glvq_steps,
// glvq_reround_every, glvq_lr, glvq_lambda, glvq_allocate_bits into the
// lattice format (docs/ARTIFACT.md). lm_head stays dense (lm_head_bits must
// be 0). Quality figures added: glvq_output_error_init / _final (mean over
// weights of the mean per column group of GroupLoss's output-error term),
// glvq_groups, glvq_groups_up / _down (widths N+1 / N-1), glvq_seconds.
// With resume_dir, finished weights are kept there and reused (see resume_dir).
//
// Provenance stamped in the manifest: source path as given; source_sha256 as
// docs/ARTIFACT.md defines it (sha256 of the concatenated hex sha256 of the
// source's *.safetensors files in file-name order); tool "lcd <version>";
// created time (UTC, ISO 8601); calibration "none" or
// "file:<name> sha256:<hex> tokens:<n>"; wall seconds of calibration plus
// quantization plus writing. Quality: always "bits_per_weight" (codes plus
// fp16 params of the quantized tensors, ArtifactWriter's figure) and
// "file_bits_per_param" (8 x weight-file bytes / all parameters); with
// eval_text, after writing, the artifact is loaded back with
// runtime::Model::Load and "ppl_<stem>" (artifact), "ppl_<stem>_source"
// (source model), "kl_<stem>" (mean KL(P_source || P_artifact) per token)
// and "top1_agreement_<stem>" are measured with lcd eval-ppl's protocol
// (lcd/quantizer/perplexity.h), <stem> being the text file's name without
// its extension, non-alphanumerics replaced by '_'; the manifest is then
// rewritten atomically.
//
// Errors (absl::Status; nothing is thrown): InvalidArgument for an unknown
// method, glvq without calib_path, with lm_head_bits or with glvq_* options
// out of range, a distilling method (lcd, r2q, bitdistiller) with lm_head_bits or
// with kd_* options out of range, r2q at bits other than 2 or with
// r2q_refit < 0, bitdistiller with kd_speculative (its codes follow the
// weights: nothing to judge), kd_merge_split_tau outside (0, 1) or set
// without method lcd and kd_speculative, kd_speculative_scope other than
// "model" or "block", or "block" without kd_speculative, kd_teacher_cache_mb < 0, a
// kd_lr_schedule other than "", cosine or constant, kd_checkpoint_every < 1, kd_eval_every < 0,
// time_budget_s < 0, bits outside 2..4, lm_head_bits outside
// the method's range (rtn and gptq 2..8, kmeans 2..4), group_size < 1,
// --calib with rtn, gptq without calibration or with gptq_percdamp outside
// [0, 1] or gptq_block_size < 1, an out_dir that
// exists and is not empty (left untouched), a checkpoint lacking a decoder
// linear weight or holding one that is not a 2-D float tensor; the
// loaders' errors (NotFound, Unimplemented for an unsupported architecture)
// unchanged. On any error after out_dir was created by this call, out_dir is
// removed again, so no partial artifact remains.
//
// Thread safety: one call at a time per out_dir; `threads` workers are used
// for the forward passes and the per-row quantization.
#ifndef LCD_QUANTIZER_QUANTIZE_MODEL_H_
#define LCD_QUANTIZER_QUANTIZE_MODEL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/runtime/artifact.h"

namespace lcd::quantizer {

struct QuantizeModelOptions {
  std::string model_dir;  // Hugging Face folder (config.json, safetensors, tokenizer).
  std::string out_dir;    // Must not exist or be empty.
  std::string method;     // One of lcd/quantizer/methods.h: rtn, kmeans, lcd, r2q, bitdistiller, gptq, glvq
  int bits = 4;
  int64_t group_size = 128;
  int lm_head_bits = 0;   // 0 = lm_head stays dense.
  int kmeans_iters = 20;

  std::string calib_path;        // Empty = no calibration.
  int64_t calib_tokens = 16384;  // At most this many text tokens (0 = whole file).
  int64_t calib_window = 0;      // 0 = min(512, max_position_embeddings).

  std::string eval_text;         // Empty = no perplexity figures.
  int64_t eval_window = 0;       // 0 = min(2048, max_position_embeddings).
  int64_t eval_max_windows = 0;  // 0 = all.

  // Distillation (method "lcd"; LCD.md steps 1, 3-7), see "Distillation" above.
  int64_t kd_steps = 200;           // Distillation steps (0: the k-means init only).
  double kd_lr = 3e-4;              // Peak AdamW learning rate.
  int64_t kd_seq_len = 128;         // Tokens per calibration sequence (BOS included).
  int64_t kd_batch = 8;             // Sequences per step.
  int64_t kd_reassign_every = 10;   // Steps between code re-assignments (0: never).
  int64_t kd_samples = 64;          // Teacher-generated sequences (without calib_path).
  double kd_temperature = 0.8;      // Of the teacher's sampling.
  uint64_t kd_seed = 0;
  bool kd_speculative = false;      // Keep a re-assignment only when it does not raise the KD loss.
  // lcd with kd_speculative: what one proposal is. "model": every code that
  // would change, judged at once; "block": each decoder block's codes, judged
  // front to back (num_layers judgements per re-assignment).
  std::string kd_speculative_scope = "model";
  double kd_merge_split_tau = 0.0;  // lcd with kd_speculative: centroid merge/split proposals (0: none).
  // Checkpoint directory of the distillation (empty: none): resumed from
  // when it holds a checkpoint of the same settings (quantizer/src/distill.h).
  // glvq: one file per finished weight (glvq-<i>.bin), reused when the
  // source weights, calibration file and tokens/window and every glvq_*
  // setting match; calibration is skipped when every weight is reused.
  std::string resume_dir;
  int64_t kd_checkpoint_every = 50;  // End-to-end steps between checkpoints (with resume_dir; >= 1).
  // End-to-end steps between held-out evaluations during training (the KL
  // curve: quality figures heldout_kl_step_<n>, logged and sent as progress);
  // 0 = only before and after.
  int64_t kd_eval_every = 0;
  // Wall-time budget of this run in seconds (0: none). Distillation measures
  // its first steps and, when the projected total exceeds the budget, stops
  // with ResourceExhausted saying how many steps would fit, instead of
  // running into the limit.
  double time_budget_s = 0.0;
  int64_t kd_block_steps = 0;       // Progressive block-wise steps per block before the KD (0: none).
  // Peak learning rate of the block-wise stage (same schedule shape, per
  // block); 0: kd_lr. Lets the end-to-end KD run at a lower lr than the
  // blocks, which at 3 bits it needs not to undo their gain (QUALITY.md).
  double kd_block_lr = 0.0;
  // Memory for the teacher's logits of every calibration sequence (MiB): when
  // they fit, each sequence's are computed once instead of every step
  // (the same figures, about a quarter less time per step); 0 = never.
  int64_t kd_teacher_cache_mb = 4096;
  // Learning-rate schedule of the distillation: "cosine" (5% warmup, cosine
  // to 0.1 x kd_lr), "constant" (kd_lr throughout, no warmup), or "" = the
  // method's own (lcd: cosine; bitdistiller: constant, as its reference).
  std::string kd_lr_schedule;
  // Per-tensor learning rate of the distillation: "none" (kd_lr for every
  // tensor) or "rms" (each quantized weight and its quantizer parameters at
  // kd_lr * RMS(W) / RMS over all quantized weights, W as initialised;
  // issue 7). Manifest param lr_scale.
  std::string kd_lr_scale = "none";

  // LCD activation smoothing and W·A8 (method "lcd"; LCD.md step 2,
  // lcd/quantizer/smoothing.h). lcd_smooth: per decoder input, s = 1 or
  // SmoothQuant's s(alpha) for alpha in lcd_smooth_alphas (empty: 0, 0.1,
  // ..., 0.8), whichever gives the smallest output error of the k-means
  // init measured in the original space (E[x x^T] of the training
  // sequences); folded into the norms (q/k/v, gate/up), v_proj's rows and
  // bias (o_proj, s tied over the q heads of a kv head) and up_proj's rows
  // (down_proj). The student starts from the smoothed weights, the teacher
  // is the original; the artifact stores the smoothed norms (fp32) and v
  // biases. Manifest: params smooth ("on"/"off"), smooth_alphas (the grid),
  // smooth_chosen ("<layer>.<input>=<alpha|off>" per input); quality
  // smooth_init_error_off / smooth_init_error (summed output errors).
  // act_bits 8 (lcd only): the student's quantized linears see per-token
  // int8 activations (straight-through) and the manifest's "activations"
  // field makes the runtime apply the same. Errors: act_bits not 0 or 8,
  // smoothing or act_bits with a method other than lcd, a grid value outside
  // [0, 1].
  bool lcd_smooth = false;
  std::vector<double> lcd_smooth_alphas;
  int act_bits = 0;

  // BitDistiller (method "bitdistiller"; LCD.md "BitDistiller"): INT2
  // asymmetric (kAffine) at 2 bits, NF3 (kCodebook) at 3, INT4 asymmetric at
  // 4 (our choice); per-(row, group) asymmetric clipping search on E[x x^T]
  // of the training sequences (q_proj/k_proj skipped), then the distillation
  // driver with the STE quantizer of lcd/quantizer/train/bitdistiller_loop.h
  // (range recomputed from the latent weights every forward); lm_head stays
  // dense. Figures: clip_err_reduction (1 - searched / unclipped output
  // error, summed over the searched groups), clip_mean_a, clip_mean_b,
  // and the driver's. kd_steps = 0: the clipping search alone (PTQ).
  bool bitdistiller_clip = true;        // false: no clipping search (a = b = 0 everywhere).
  bool bitdistiller_range_grad = true;  // Gradient through each group's min/max (the reference's autograd).

  // R2Q (method "r2q"), see "R2Q" above; the kd_* options drive its QAT.
  int r2q_refit = 0;                // Least-squares refit + re-assignment rounds after the closed form.

  // GPTQ (method "gptq"), see "GPTQ" above and lcd/quantizer/gptq.h.
  double gptq_percdamp = 0.01;      // Dampening: this fraction of mean diag(H) is added to the diagonal.
  bool gptq_act_order = false;      // Columns by descending H_jj, group grids fixed up front (static groups).
  int64_t gptq_block_size = 128;    // Columns per lazy batch update.
  bool gptq_sequential = false;     // Hessians through the already quantized layers, layer by layer.

  // GLVQ (method "glvq"), see "GLVQ" above and lcd/quantizer/glvq.h.
  int glvq_dim = 8;                 // Lattice dimension d (8; 16 and 32 selectable).
  int glvq_steps = 50;              // Adam steps on (G, mu) per column group.
  int glvq_reround_every = 10;      // Steps between Babai re-roundings.
  double glvq_lr = 1e-2;
  double glvq_lambda = 1e-2;        // Weight of ||G - G0||^2 / ||G0||^2.
  bool glvq_allocate_bits = true;   // Salience-based N-1/N/N+1 widths over column groups.

  int threads = 0;  // 0 = all hardware threads.
  // Receives one human-readable progress line at a time (no newline); may be
  // empty. Called on the calling thread.
  std::function<void(const std::string&)> log;
  // Structured progress for supervisors (lcd-jobs reads it from
  // `lcd quantize --progress-fd`): phase "calibrate", "quantize" (the
  // distilled methods: "blockwise", "distill"), "write" or "evaluate", the
  // fraction of the whole job done (0..1), and the log line.
  std::function<void(const std::string& phase, double fraction, const std::string& message)> progress;
};

// Quantizes options.model_dir into options.out_dir and returns the manifest
// as finally written (with quality figures).
absl::StatusOr<runtime::ArtifactManifest> QuantizeModel(const QuantizeModelOptions& options);

// The "lcd <version>" string stamped as provenance.tool.
std::string ToolVersionString();

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_QUANTIZE_MODEL_H_
