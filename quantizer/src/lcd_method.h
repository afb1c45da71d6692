// LCD (LCD.md "LCD (ours)", steps 1, 3, 5 and 7): calibration sequences (a
// text file or teacher-generated), density-based centroid initialisation
// (QuantizeKmeans with E[x_j^2] importance), then knowledge distillation end
// to end with CAKLD, training centroids and latent weights of every
// codebook-quantized linear (TrainModel::EnableCodebook, FreezeDense), codes
// re-assigned to the nearest centroid every reassign_every steps. The
// contract of the options is in lcd/quantizer/quantize_model.h.
#ifndef LCD_QUANTIZER_SRC_LCD_METHOD_H_
#define LCD_QUANTIZER_SRC_LCD_METHOD_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/quantizer/artifact_writer.h"
#include "lcd/quantizer/quantize_model.h"

namespace lcd::quantizer::internal {

struct LcdResult {
  std::map<std::string, QuantizedMatrix> matrices;  // Weight name -> its codebook matrix.
  std::map<std::string, std::string> params;        // Manifest method.params.
  std::map<std::string, double> quality;            // Manifest quality figures.
  std::string calibration;                          // Manifest provenance.calibration.
};

// Quantizes `weights` (decoder linear weight names) of o.model_dir with LCD.
absl::StatusOr<LcdResult> RunLcd(const QuantizeModelOptions& o, const std::vector<std::string>& weights);

}  // namespace lcd::quantizer::internal

#endif  // LCD_QUANTIZER_SRC_LCD_METHOD_H_
