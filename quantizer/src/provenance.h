// Private: the provenance and naming helpers of the quantization driver
// (their meaning is specified in lcd/quantizer/quantize_model.h).
#ifndef LCD_QUANTIZER_SRC_PROVENANCE_H_
#define LCD_QUANTIZER_SRC_PROVENANCE_H_

#include <string>

#include "absl/status/statusor.h"

namespace lcd::quantizer::internal {

// docs/ARTIFACT.md's source_sha256: the sha256 of the concatenation, in
// file-name order, of the lowercase hex sha256 of every *.safetensors file.
// NotFound when the directory holds none.
absl::StatusOr<std::string> SourceWeightsSha256(const std::string& model_dir);

// provenance.calibration for a text file: "file:<file name> sha256:<hex>"
// followed by " <detail>" (what was taken from it) when detail is non-empty.
std::string CalibrationFileProvenance(const std::string& path, const std::string& sha256, const std::string& detail);

// "2026-11-29T12:57:40Z".
std::string UtcNowIso8601();

// "wiki.test.raw" -> "wiki_test"; "val.txt" -> "val". Never empty ("text").
std::string TextStem(const std::string& path);

}  // namespace lcd::quantizer::internal

#endif  // LCD_QUANTIZER_SRC_PROVENANCE_H_
