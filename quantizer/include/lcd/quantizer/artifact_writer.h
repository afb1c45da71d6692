// Writes artifact format v1 (lcd/runtime/artifact.h, docs/ARTIFACT.md).
//
// Usage: Create(out_dir, source_dir), AddDense / AddQuantized for every
// tensor of the model, then Finish(manifest fields). Finish writes
// model.safetensors, copies the source's tokenizer files, computes every
// sha256, fsyncs the files and writes manifest.json last, so a directory
// without manifest.json is never mistaken for an artifact. `out_dir` must not
// exist or be empty (the job service points it at "<version>.partial").
//
// Thread safety: none; one writer per artifact.
#ifndef LCD_QUANTIZER_ARTIFACT_WRITER_H_
#define LCD_QUANTIZER_ARTIFACT_WRITER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lcd/kernels/quant_linear.h"
#include "lcd/runtime/artifact.h"
#include "lcd/runtime/safetensors.h"

namespace lcd::quantizer {

// A quantized matrix that owns its canonical arrays.
struct QuantizedMatrix {
  kernels::QuantLayout layout;
  std::vector<uint8_t> codes;    // [rows][layout.CodeRowBytes()]
  std::vector<uint16_t> params;  // fp16 [rows][groups][P]
  std::vector<uint16_t> lattice; // kLattice: fp16 [groups][d*d + 1]; empty otherwise
  kernels::QuantMatrixView view() const { return {layout, codes.data(), params.data(), lattice.data()}; }
};

class ArtifactWriter {
 public:
  // InvalidArgument when out_dir exists and is not an empty directory;
  // Internal when it cannot be created. `source_dir` is the Hugging Face
  // folder the tokenizer files and config.json are taken from.
  static absl::StatusOr<std::unique_ptr<ArtifactWriter>> Create(const std::string& out_dir,
                                                                const std::string& source_dir);
  // Out of line: Pending is incomplete here, so callers could not destroy
  // the writer otherwise.
  ~ArtifactWriter();

  // Stores a tensor unchanged (its bytes are copied).
  absl::Status AddDense(const std::string& name, runtime::StDType dtype, const std::vector<int64_t>& shape,
                        std::string_view bytes);
  absl::Status AddQuantized(const std::string& name, QuantizedMatrix matrix);

  // Writes everything and returns the manifest as written. The caller fills
  // method, provenance and quality; format_version, model_config_json,
  // tensors, tokenizer_files and files are filled here.
  absl::StatusOr<runtime::ArtifactManifest> Finish(runtime::ArtifactManifest manifest);

  // Bits per weight of the quantized tensors, counting codes and parameters.
  double QuantizedBitsPerWeight() const;

 private:
  ArtifactWriter() = default;
  struct Pending;
  std::string out_dir_;
  std::string source_dir_;
  std::vector<std::unique_ptr<Pending>> pending_;
};

// Rewrites manifest.json of an existing artifact atomically (tmp, fsync,
// rename, fsync dir): used to stamp quality figures measured on the written
// artifact. The manifest must describe the same files.
absl::Status RewriteArtifactManifest(const std::string& dir, const runtime::ArtifactManifest& manifest);

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_ARTIFACT_WRITER_H_
