// ArtifactWriter: lays out artifact v1 and writes manifest.json last, after
// every other file is durable, so that manifest.json's presence means "done".
#include "lcd/quantizer/artifact_writer.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/file_util.h"
#include "lcd/base/logging.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/model_config.h"

namespace lcd::quantizer {
namespace fs = std::filesystem;

namespace {

constexpr char kWeightsFile[] = "model.safetensors";
// What LoadTokenizer and LoadGenerationConfig read from a model directory.
constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                           "special_tokens_map.json"};
constexpr const char* kOtherFiles[] = {"generation_config.json"};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  std::string bytes(size, '\0');
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  const size_t got = std::fread(bytes.data(), 1, size, f);
  std::fclose(f);
  if (got != size) return absl::InternalError(absl::StrCat(path, ": short read"));
  return bytes;
}

absl::Status CheckCanonical(const std::string& name, const QuantizedMatrix& q) {
  const kernels::QuantLayout& l = q.layout;
  LCD_RETURN_IF_ERROR(kernels::ValidateQuantLayout(l));
  if (static_cast<int64_t>(q.codes.size()) != l.CodeBytes() ||
      static_cast<int64_t>(q.params.size()) != l.ParamCount()) {
    return absl::InvalidArgumentError(absl::StrCat("AddQuantized(", name, "): ", q.codes.size(), " code bytes and ",
                                                   q.params.size(), " params; the layout needs ", l.CodeBytes(),
                                                   " and ", l.ParamCount()));
  }
  if (absl::Status s = kernels::CheckCodePadding(q.view()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("AddQuantized(", name, "): ", s.message()));
  }
  if (static_cast<int64_t>(q.lattice.size()) != l.LatticeParamCount()) {
    return absl::InvalidArgumentError(absl::StrCat("AddQuantized(", name, "): ", q.lattice.size(),
                                                   " lattice params; the layout needs ", l.LatticeParamCount()));
  }
  if (l.format == kernels::QuantFormat::kLattice) {
    if (absl::Status s = kernels::CheckLatticeParams(q.view()); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("AddQuantized(", name, "): ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

struct ArtifactWriter::Pending {
  std::string name;
  // Dense:
  runtime::StDType dtype = runtime::StDType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;
  // Quantized:
  bool quantized = false;
  QuantizedMatrix matrix;
};

ArtifactWriter::~ArtifactWriter() = default;

absl::StatusOr<std::unique_ptr<ArtifactWriter>> ArtifactWriter::Create(const std::string& out_dir,
                                                                       const std::string& source_dir) {
  std::error_code ec;
  if (fs::exists(out_dir, ec)) {
    if (!fs::is_directory(out_dir, ec) || !fs::is_empty(out_dir, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat(out_dir, " exists and is not an empty directory; refusing to overwrite it"));
    }
  } else if (!fs::create_directories(out_dir, ec) || ec) {
    return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  }
  std::unique_ptr<ArtifactWriter> w(new ArtifactWriter());
  w->out_dir_ = out_dir;
  w->source_dir_ = source_dir;
  return w;
}

absl::Status ArtifactWriter::AddDense(const std::string& name, runtime::StDType dtype,
                                      const std::vector<int64_t>& shape, std::string_view bytes) {
  auto p = std::make_unique<Pending>();
  p->name = name;
  p->dtype = dtype;
  p->shape = shape;
  p->bytes.assign(bytes.data(), bytes.size());
  pending_.push_back(std::move(p));
  return absl::OkStatus();
}

absl::Status ArtifactWriter::AddQuantized(const std::string& name, QuantizedMatrix matrix) {
  LCD_RETURN_IF_ERROR(CheckCanonical(name, matrix));
  auto p = std::make_unique<Pending>();
  p->name = name;
  p->quantized = true;
  p->matrix = std::move(matrix);
  pending_.push_back(std::move(p));
  return absl::OkStatus();
}

double ArtifactWriter::QuantizedBitsPerWeight() const {
  double bits = 0, weights = 0;
  for (const auto& p : pending_) {
    if (!p->quantized) continue;
    const kernels::QuantLayout& l = p->matrix.layout;
    bits += 8.0 * static_cast<double>(l.CodeBytes()) + 16.0 * static_cast<double>(l.ParamCount()) +
            16.0 * static_cast<double>(l.LatticeParamCount()) +
            (l.format == kernels::QuantFormat::kLattice ? 8.0 * static_cast<double>(l.groups()) : 0.0);
    weights += static_cast<double>(l.rows) * static_cast<double>(l.cols);
  }
  return weights > 0 ? bits / weights : 0.0;
}

absl::StatusOr<runtime::ArtifactManifest> ArtifactWriter::Finish(runtime::ArtifactManifest m) {
  // The source's config must be one we can serve.
  LCD_ASSIGN_OR_RETURN(std::string config_text, ReadFile(source_dir_ + "/config.json"));
  LCD_RETURN_IF_ERROR(runtime::ParseModelConfig(config_text).status());
  m.format_version = runtime::kArtifactFormatVersion;
  m.model_config_json = config_text;
  m.tensors.clear();
  m.tokenizer_files.clear();
  m.files.clear();

  std::sort(pending_.begin(), pending_.end(), [](const auto& a, const auto& b) { return a->name < b->name; });
  std::vector<runtime::TensorToWrite> tensors;
  for (const auto& p : pending_) {
    runtime::ArtifactTensor t;
    t.name = p->name;
    if (p->quantized) {
      const kernels::QuantLayout& l = p->matrix.layout;
      t.format = std::string(kernels::QuantFormatName(l.format));
      t.shape = {l.rows, l.cols};
      t.bits = l.bits;
      t.group_size = l.group_size;
      t.lattice_dim = l.lattice_dim;
      tensors.push_back({p->name + ".codes", runtime::StDType::kU8, {l.rows, l.CodeRowBytes()},
                         std::string_view(reinterpret_cast<const char*>(p->matrix.codes.data()),
                                          p->matrix.codes.size())});
      tensors.push_back({p->name + ".params", runtime::StDType::kF16, {l.rows, l.groups(), l.ParamsPerGroup()},
                         std::string_view(reinterpret_cast<const char*>(p->matrix.params.data()),
                                          p->matrix.params.size() * sizeof(uint16_t))});
      if (l.format == kernels::QuantFormat::kLattice) {
        // Widths stored even when uniform, so a reader needs no default.
        std::vector<uint8_t>& gb = p->matrix.layout.group_bits;
        if (gb.empty()) gb.assign(static_cast<size_t>(l.groups()), static_cast<uint8_t>(l.bits));
        tensors.push_back({p->name + ".group_bits", runtime::StDType::kU8, {l.groups()},
                           std::string_view(reinterpret_cast<const char*>(gb.data()), gb.size())});
        tensors.push_back({p->name + ".lattice", runtime::StDType::kF16, {l.groups(), l.LatticeParamsPerGroup()},
                           std::string_view(reinterpret_cast<const char*>(p->matrix.lattice.data()),
                                            p->matrix.lattice.size() * sizeof(uint16_t))});
      }
    } else {
      t.shape = p->shape;
      tensors.push_back({p->name, p->dtype, p->shape, p->bytes});
    }
    m.tensors.push_back(std::move(t));
  }
  LCD_RETURN_IF_ERROR(runtime::WriteSafetensors(out_dir_ + "/" + kWeightsFile, tensors));

  std::vector<std::string> written = {kWeightsFile};
  for (const char* name : kTokenizerFiles) {
    absl::StatusOr<std::string> bytes = ReadFile(source_dir_ + "/" + name);
    if (absl::IsNotFound(bytes.status())) continue;
    LCD_RETURN_IF_ERROR(bytes.status());
    LCD_RETURN_IF_ERROR(WriteFileAtomic(out_dir_ + "/" + name, {*bytes}));
    m.tokenizer_files.push_back(name);
    written.push_back(name);
  }
  if (m.tokenizer_files.empty()) {
    // Benchmark checkpoints (tools/make_random_llama.py) have none; such an
    // artifact runs on token ids, and loading it for serving fails with
    // LoadTokenizer's clear error.
    LCD_LOG(WARNING) << source_dir_ << " has no tokenizer files; the artifact will have none";
  }
  for (const char* name : kOtherFiles) {
    absl::StatusOr<std::string> bytes = ReadFile(source_dir_ + "/" + name);
    if (absl::IsNotFound(bytes.status())) continue;
    LCD_RETURN_IF_ERROR(bytes.status());
    LCD_RETURN_IF_ERROR(WriteFileAtomic(out_dir_ + "/" + name, {*bytes}));
    written.push_back(name);
  }
  for (const std::string& name : written) {
    const std::string path = out_dir_ + "/" + name;
    runtime::ArtifactFile f;
    f.path = name;
    std::error_code ec;
    f.bytes = fs::file_size(path, ec);
    if (ec) return absl::InternalError(absl::StrCat(path, ": ", ec.message()));
    LCD_ASSIGN_OR_RETURN(f.sha256, runtime::Sha256File(path));
    m.files.push_back(std::move(f));
  }
  std::sort(m.files.begin(), m.files.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  LCD_RETURN_IF_ERROR(RewriteArtifactManifest(out_dir_, m));
  return m;
}

absl::Status RewriteArtifactManifest(const std::string& dir, const runtime::ArtifactManifest& manifest) {
  const std::string text = runtime::SerializeArtifactManifest(manifest);
  // What we write must be what a reader accepts.
  LCD_RETURN_IF_ERROR(runtime::ParseArtifactManifest(text).status());
  return WriteFileAtomic(dir + "/" + runtime::kArtifactManifestFile, {text});
}

}  // namespace lcd::quantizer
