// Artifact format v1: a quantized model as a directory (docs/ARTIFACT.md is
// the normative description; this header is its schema in C++).
//
//   <dir>/manifest.json        ArtifactManifest below, as JSON
//   <dir>/model.safetensors    every tensor: dense ones under their Hugging
//                              Face names, quantized ones as two tensors
//                              "<name>.codes" (U8) and "<name>.params" (F16)
//                              (or model.safetensors.index.json + shards)
//   <dir>/tokenizer.json ...   the source model's tokenizer files, verbatim
//
// The manifest lists every other file of the directory with its size and
// sha256; Artifact::Open refuses a directory where any listed file is
// missing, has another size or hash, or where a tensor disagrees with the
// manifest (shape, dtype, code padding bits, non-finite parameters).
//
// The schema and the reader live in runtime/ (the server loads models through
// the runtime); quantizer/ owns the writer (lcd/quantizer/artifact_writer.h).
#ifndef LCD_RUNTIME_ARTIFACT_H_
#define LCD_RUNTIME_ARTIFACT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/quant_linear.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/model_config.h"

namespace lcd::runtime {

inline constexpr int kArtifactFormatVersion = 1;
inline constexpr char kArtifactManifestFile[] = "manifest.json";

struct ArtifactFile {
  std::string path;    // Plain file name inside the artifact directory.
  uint64_t bytes = 0;
  std::string sha256;  // 64 lowercase hex digits.
};

// One logical tensor of the model (a Hugging Face tensor name).
struct ArtifactTensor {
  std::string name;
  // "dense" (stored under `name` in F32/F16/BF16) or a kernels::QuantFormat
  // name ("codebook", "affine", "binary_coded"): stored as name + ".codes"
  // and name + ".params" in the canonical layout of lcd/kernels/quant_linear.h;
  // "lattice" also as name + ".lattice" (F16 [groups][d*d + 1]) and
  // name + ".group_bits" (U8 [groups]).
  std::string format = "dense";
  std::vector<int64_t> shape;  // Logical shape: [rows, cols] for quantized tensors.
  int bits = 0;                // Quantized only.
  int64_t group_size = 0;      // Quantized only.
  int lattice_dim = 0;         // "lattice" only: the sub-vector dimension d.
  bool quantized() const { return format != "dense"; }
};

struct ArtifactMethod {
  std::string name;  // "rtn", "kmeans", "lcd", ...
  int bits = 0;
  int64_t group_size = 0;
  // Method-specific settings, as given (e.g. {"calibration_tokens": "8192"}).
  std::map<std::string, std::string> params;
};

struct ArtifactProvenance {
  std::string source_model;      // Path or name of the source checkpoint as given.
  std::string source_sha256;     // sha256 over the source's weight files (see ARTIFACT.md).
  std::string tool;              // "lcd <version>".
  std::string created_utc;       // ISO 8601.
  std::string calibration;       // "none", "file:<name> sha256:<hex> tokens:<n>", ...
  double wall_seconds = 0.0;     // Quantization wall time.
};

struct ArtifactManifest {
  int format_version = kArtifactFormatVersion;
  std::string model_config_json;             // The source config.json object (JSON text).
  ArtifactMethod method;
  std::vector<ArtifactTensor> tensors;       // Sorted by name.
  std::vector<std::string> tokenizer_files;  // Subset of `files`.
  std::vector<ArtifactFile> files;           // Every file but manifest.json.
  ArtifactProvenance provenance;
  // Quality figures measured when it was made, e.g. "bits_per_weight",
  // "ppl_<textname>", "ppl_<textname>_source", "kl_to_source".
  std::map<std::string, double> quality;
  // "activations" (docs/ARTIFACT.md): 8 = every quantized linear's input is
  // quantized per token, symmetric int8 (scale max|x|/127, round to
  // nearest even), before the matmul; 0 (the key absent) = fp activations.
  int activation_bits = 0;
};

// Parses and checks the manifest's own consistency (required fields, types,
// version, plain file names, formats and bit widths, no duplicates). Pure
// function of the text: the fuzz target's entry point. InvalidArgument naming
// the field otherwise; Unimplemented for a newer format_version.
absl::StatusOr<ArtifactManifest> ParseArtifactManifest(std::string_view json_text);
// The inverse (deterministic: keys sorted, 2-space indent).
std::string SerializeArtifactManifest(const ArtifactManifest& manifest);

// True when `dir` holds a manifest.json (then it is loaded as an artifact,
// not as a Hugging Face folder).
bool IsArtifactDir(const std::string& dir);

// sha256 of a file, as lowercase hex. NotFound / Internal on I/O errors.
absl::StatusOr<std::string> Sha256File(const std::string& path);
std::string Sha256Hex(std::string_view bytes);

// An opened, verified artifact. Immutable; views stay valid while it lives.
class Artifact {
 public:
  // Reads the manifest, checks every listed file's size and sha256, opens the
  // weights and checks every tensor entry against them. Errors name the file
  // and the fault: NotFound (missing file), DataLoss (size or hash mismatch,
  // truncated tensor data), InvalidArgument (inconsistent manifest/tensors),
  // Cancelled when `cancelled` (polled before each file's hash) turns true.
  static absl::StatusOr<std::unique_ptr<Artifact>> Open(const std::string& dir,
                                                        const std::function<bool()>& cancelled = {});

  const std::string& dir() const { return dir_; }
  const ArtifactManifest& manifest() const { return manifest_; }
  const ModelConfig& config() const { return config_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  // The manifest entry of a logical tensor, or nullptr.
  const ArtifactTensor* Find(std::string_view name) const;
  // The canonical view of a quantized tensor (FailedPrecondition when `name`
  // is dense, NotFound when absent).
  absl::StatusOr<kernels::QuantMatrixView> QuantTensor(std::string_view name) const;

 private:
  Artifact() = default;
  std::string dir_;
  ArtifactManifest manifest_;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::map<std::string, size_t, std::less<>> by_name_;
  std::map<std::string, kernels::QuantMatrixView, std::less<>> quant_views_;  // Checked at Open.
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_ARTIFACT_H_
