// Methods that quantize the whole model at once (they run the model: LCD
// and the distillation and calibration-driven peers), as opposed to rtn and
// kmeans, which quantize one matrix at a time inside QuantizeModel. Each is
// one function with this signature, in its own file, registered in
// FindModelMethod (quantize_model.cc). Their options' contract is in
// lcd/quantizer/quantize_model.h.
#ifndef LCD_QUANTIZER_SRC_MODEL_METHOD_H_
#define LCD_QUANTIZER_SRC_MODEL_METHOD_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/quantizer/artifact_writer.h"
#include "lcd/quantizer/quantize_model.h"

namespace lcd::quantizer::internal {

struct ModelMethodResult {
  std::map<std::string, QuantizedMatrix> matrices;  // Weight name -> its quantized matrix (every one asked for).
  std::map<std::string, std::string> params;        // Manifest method.params.
  std::map<std::string, double> quality;            // Manifest quality figures.
  std::string calibration;                          // Manifest provenance.calibration.
  // Dense tensors the method changed (e.g. norm weights carrying activation
  // smoothing): name -> fp32 values, written instead of the source's.
  std::map<std::string, std::vector<float>> dense;
  // Manifest activation_bits (0: full-precision activations).
  int activation_bits = 0;
};

// Quantizes `weights` (decoder linear weight names, lm_head.weight when
// o.lm_head_bits > 0) of o.model_dir. Progress through o.progress, phases
// "calibrate"/"quantize", fractions in [0, kModelMethodProgressEnd].
using ModelMethod = absl::StatusOr<ModelMethodResult> (*)(const QuantizeModelOptions& o,
                                                          const std::vector<std::string>& weights);
inline constexpr double kModelMethodProgressEnd = 0.8;

// The whole-model method of that name, or nullptr (rtn, kmeans, unknown).
ModelMethod FindModelMethod(std::string_view name);

// The methods (one per file).
absl::StatusOr<ModelMethodResult> RunLcd(const QuantizeModelOptions& o, const std::vector<std::string>& weights);
absl::StatusOr<ModelMethodResult> RunR2q(const QuantizeModelOptions& o, const std::vector<std::string>& weights);
absl::StatusOr<ModelMethodResult> RunBitDistiller(const QuantizeModelOptions& o,
                                                  const std::vector<std::string>& weights);
absl::StatusOr<ModelMethodResult> RunGptq(const QuantizeModelOptions& o, const std::vector<std::string>& weights);
absl::StatusOr<ModelMethodResult> RunGlvq(const QuantizeModelOptions& o, const std::vector<std::string>& weights);

}  // namespace lcd::quantizer::internal

#endif  // LCD_QUANTIZER_SRC_MODEL_METHOD_H_
