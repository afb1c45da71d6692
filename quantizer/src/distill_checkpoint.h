// Checkpoints of the distillation driver (distill.h), so that a run that is
// killed (a worker of lcd-jobs that dies, a machine that restarts) goes on
// where it stopped: `lcd quantize --resume DIR`.
//
// What is saved: the calibration sequences (teacher generation is not
// repeated), where the run stands (block-wise stage: blocks done; end-to-end
// stage: steps done), the figures so far (gamma, held-out figures of the
// init, first/last loss, re-assignment counts), the batch order (the
// shuffle RNG's state, the permutation and the position in it), every
// trainable tensor of the student (latent weights, quantizer parameters),
// the AdamW moments of those tensors and its step count, and the codes of
// every quantized weight. What is not: anything the method's init derives
// deterministically from the source model and the sequences (a resumed run
// repeats the calibration statistics and the init, then overwrites the
// trainable tensors and codes), and the teacher (the source model).
//
// Files in DIR: checkpoint.json (the header: format, version, the settings
// fingerprint, the state above, the payload's file name, size and sha256)
// and checkpoint-<n>.bin (the payload, little-endian: sequences int32, then
// per tensor its values fp32, then the AdamW m and v of the same tensors,
// then the codes uint8 per quantized weight). Each save writes a new payload
// file, then replaces checkpoint.json atomically (tmp, fsync, rename, fsync
// DIR), then removes older payloads: a crash at any point leaves the last
// complete checkpoint readable.
//
// A checkpoint is used only by a run with the same fingerprint (source
// weights' sha256, method, bits, group size, every option that changes the
// result); another run refuses it with FailedPrecondition naming DIR, rather
// than overwrite or mix it. A corrupt or truncated checkpoint is
// DataLoss naming the file; nothing is deleted.
#ifndef LCD_QUANTIZER_SRC_DISTILL_CHECKPOINT_H_
#define LCD_QUANTIZER_SRC_DISTILL_CHECKPOINT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace lcd::quantizer::internal {

struct DistillState {
  std::string stage;       // "blockwise" (next_block blocks tuned) or "kd" (step steps done).
  int64_t next_block = 0;
  int64_t step = 0;
  double gamma = 0.0;
  double init_cakld = 0.0, init_kl = 0.0;
  std::optional<double> blockwise_kl;
  double first_loss = 0.0, last_loss = 0.0;
  int64_t changed_total = 0, proposals = 0, accepted = 0;
  int64_t ms_proposals = 0, ms_accepted = 0, ms_groups = 0;  // Centroid merge/split proposals.
  std::vector<std::pair<int64_t, double>> kl_curve;  // (steps done, held-out KL) of --eval-every.
  std::string rng;              // std::mt19937_64's textual state.
  std::vector<int64_t> order;   // The batch permutation ...
  int64_t next = 0;             // ... and the position in it.
  int64_t adam_steps = 0;       // AdamW's t (kd stage).
  std::string calibration;      // provenance.calibration of the run.
};

// Views of the student's memory, written without copying.
struct DistillPayloadView {
  const std::vector<int32_t>* tokens = nullptr;  // The sequences [count][length].
  int64_t seq_count = 0, seq_length = 0;
  std::vector<std::pair<std::string, std::pair<const float*, int64_t>>> tensors;  // name -> (values, size)
  const float* adam_m = nullptr;  // Indexed like the flat parameters (nullptr: no moments saved).
  const float* adam_v = nullptr;
  std::vector<int64_t> tensor_offsets;  // Flat offsets of `tensors`, to read adam_m/v.
  std::vector<std::pair<std::string, const std::vector<uint8_t>*>> codes;
};

struct DistillCheckpoint {
  DistillState state;
  std::vector<int32_t> tokens;
  int64_t seq_count = 0, seq_length = 0;
  std::vector<std::pair<std::string, std::vector<float>>> tensors;
  std::vector<std::vector<float>> adam_m, adam_v;  // Per tensor; empty when none were saved.
  std::vector<std::pair<std::string, std::vector<uint8_t>>> codes;
};

// fingerprint: a canonical string of the settings (see above).
absl::Status SaveDistillCheckpoint(const std::string& dir, const std::string& fingerprint, const DistillState& state,
                                   const DistillPayloadView& payload);
// nullopt when DIR holds no checkpoint (DIR is created when missing).
absl::StatusOr<std::optional<DistillCheckpoint>> LoadDistillCheckpoint(const std::string& dir,
                                                                        const std::string& fingerprint);

}  // namespace lcd::quantizer::internal

#endif  // LCD_QUANTIZER_SRC_DISTILL_CHECKPOINT_H_
