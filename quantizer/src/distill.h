// The distillation driver shared by the quantization-aware methods (LCD,
// R2Q, BitDistiller): calibration sequences, the method's init, optional
// progressive block-wise tuning, end-to-end knowledge distillation with
// CAKLD against the frozen full-precision model, held-out figures, export.
// A method brings its format as a DistillPlan: a LoopQuantizer per weight
// (lcd/quantizer/train/loop_quantizer.h), how to initialise it from the
// full-precision weight and calibration statistics, and how to pack the
// trained state into an artifact matrix.
//
// The procedure (options are QuantizeModelOptions' kd_* fields; the
// contract is in lcd/quantizer/quantize_model.h, "Distillation"):
//  1. Calibration sequences of kd_seq_len tokens: the text file
//     o.calib_path cut into windows ([BOS] + text), or kd_samples sequences
//     the full-precision model generates from BOS. The last tenth (at least
//     one) is held out; with kd_speculative the tenth before it judges
//     re-assignments.
//  2. CollectCalibrationStats over the training sequences (E[x_j^2] of every
//     linear input; E[x x^T] for the weights plan.gram_for accepts).
//  3. Student = TrainModel with plan.make's quantizer on every weight
//     (FreezeDense), each initialised by plan.init.
//  4. gamma = mean teacher top-1 probability on the training sequences.
//  5. kd_block_steps > 0: blocks front to back fit the teacher's block
//     output (MSE), each run alone on its kept input (the output of the
//     student's tuned blocks before it), its codes re-assigned when tuned.
//  6. kd_steps AdamW steps (cosine to 0.1 x kd_lr after 5% warmup, or constant
//     kd_lr: o.kd_lr_schedule, else plan.lr_schedule; clip 1)
//     on CAKLD; codes re-assigned every kd_reassign_every steps (kept only
//     when the judging CAKLD does not rise, with kd_speculative).
//  7. plan.finalize (e.g. rounding to fp16), then held-out figures, then
//     plan.pack per weight.
// Progress: phase "calibrate" up to 0.1, then "blockwise" (one line per
// block) and "distill" up to kModelMethodProgressEnd, shared by their work; log lines start with "[<tag>]".
//
// Resuming (o.resume_dir non-empty; distill_checkpoint.h): a checkpoint is
// written after the init's figures, after every block of the block-wise
// stage and every kd_checkpoint_every end-to-end steps; a run that finds one
// with its own settings continues from it and produces the same artifact
// as an uninterrupted run (the driver is deterministic); "<tag>_seconds"
// then counts this run only. The directory is left in place (its owner, the
// caller or lcd-jobs, removes it).
#ifndef LCD_QUANTIZER_SRC_DISTILL_H_
#define LCD_QUANTIZER_SRC_DISTILL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/artifact_writer.h"
#include "lcd/quantizer/calibration.h"
#include "lcd/quantizer/quantize_model.h"
#include "lcd/quantizer/train/loop_quantizer.h"
#include "lcd/quantizer/train/train_model.h"
#include "src/model_method.h"

namespace lcd::quantizer::internal {

struct DistillPlan {
  std::string tag;        // Log prefix, error prefix, "<tag>_seconds" figure: "lcd", "r2q", ...
  std::string init_name;  // First entry of method.params["stages"], e.g. "kmeans-init".
  std::string trained;    // method.params["trained"], e.g. "centroids, latent weights".
  // The method's own options that change the result ("refit=2"), part of
  // the checkpoint fingerprint; the shared options are added by the driver.
  std::string settings;
  // The lr schedule when o.kd_lr_schedule is empty: "cosine" or "constant".
  std::string lr_schedule = "cosine";
  // The weights whose input second-moment matrix the init needs (empty: none).
  std::function<bool(std::string_view weight)> gram_for;
  // Optional, before the inits: may change the student's full-precision
  // tensors (activation smoothing folds scales into norms and rows) and
  // returns the names of the dense tensors it changed: the result then
  // carries the student's values of those (ModelMethodResult::dense).
  // Called again on resume (it must be deterministic).
  std::function<absl::StatusOr<std::vector<std::string>>(train::TrainModel& student, const CalibrationStats& stats,
                                                         ModelMethodResult& res)>
      prepare;
  // Per-token int8 fake quantization of the student's quantized linears'
  // inputs (TrainModel::SetActivationBits): 0 = none, 8.
  int act_bits = 0;
  // A quantizer of the weight's shape.
  std::function<absl::StatusOr<std::unique_ptr<train::LoopQuantizer>>(const std::string& weight, int64_t rows,
                                                                      int64_t cols)>
      make;
  // Sets params (nullptr when the quantizer has none) and q.codes() from the
  // full-precision weight w [rows][cols]; it may also change the latent w
  // (e.g. clip it). stats: of the training sequences.
  std::function<absl::Status(const std::string& weight, float* w, float* params, train::LoopQuantizer& q,
                             const CalibrationStats& stats, kernels::ThreadPool* pool)>
      init;
  // Optional: makes the student exactly what pack will store.
  std::function<void(const std::string& weight, float* w, float* params, train::LoopQuantizer& q)> finalize;
  // The trained state as an artifact matrix; it must decode to what the
  // student's quantizer decodes.
  std::function<absl::StatusOr<QuantizedMatrix>(const std::string& weight, const float* w, const float* params,
                                                const train::LoopQuantizer& q)>
      pack;
};

absl::StatusOr<ModelMethodResult> RunDistillation(const QuantizeModelOptions& o, const std::vector<std::string>& weights,
                                                  const DistillPlan& plan);

}  // namespace lcd::quantizer::internal

#endif  // LCD_QUANTIZER_SRC_DISTILL_H_
