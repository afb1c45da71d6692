// Artifact::Open: everything in an artifact directory is checked before a
// single weight is used, because a half-published or corrupted version must
// be refused with a reason while the old version keeps serving.
#include <dirent.h>
#include <sys/stat.h>

#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/runtime/artifact.h"
#include "src/artifact/manifest_util.h"
#include "src/json_util.h"

namespace lcd::runtime {
namespace {

absl::Status VerifyFiles(const std::string& dir, const ArtifactManifest& m,
                         const std::function<bool()>& cancelled) {
  std::set<std::string> listed;
  for (const ArtifactFile& f : m.files) {
    if (cancelled && cancelled()) return absl::CancelledError("artifact verification cancelled");
    listed.insert(f.path);
    const std::string path = dir + "/" + f.path;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat(path, ": listed in manifest.json but missing"));
    }
    if (!S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file (symlinks are refused)"));
    }
    if (static_cast<uint64_t>(st.st_size) != f.bytes) {
      return absl::DataLossError(absl::StrCat(path, ": ", st.st_size, " bytes, manifest.json says ", f.bytes,
                                              " (truncated or replaced)"));
    }
    LCD_ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
    if (sha != f.sha256) {
      return absl::DataLossError(
          absl::StrCat(path, ": sha256 ", sha, " does not match manifest.json (", f.sha256, "): file is corrupt"));
    }
  }
  // Only verified bytes may be read: every file of the directory is listed.
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return absl::NotFoundError(absl::StrCat(dir, ": cannot list the artifact directory"));
  absl::Status status;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == ".." || name == kArtifactManifestFile) continue;
    if (!listed.count(name)) {
      status = absl::InvalidArgumentError(
          absl::StrCat(dir, "/", name, ": not listed in manifest.json (an artifact holds only listed files)"));
      break;
    }
  }
  ::closedir(d);
  return status;
}

absl::StatusOr<TensorView> GetTensor(const Checkpoint& ckpt, const std::string& name, StDType dtype,
                                     const std::vector<int64_t>& shape) {
  absl::StatusOr<TensorView> t = ckpt.Get(name);
  if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("artifact weights have no tensor ", name));
  if (t->dtype != dtype || t->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is ", json_util::Sv(StDTypeName(t->dtype)), " ",
                                                   ShapeString(t->shape), "; manifest implies ", json_util::Sv(StDTypeName(dtype)),
                                                   " ", ShapeString(shape)));
  }
  return t;
}

// kLattice: the per-group code widths (which fix the codes' shape) and the
// generators and mu of `e` into view->layout.group_bits and view->lattice.
absl::Status CheckLatticeTensors(const Checkpoint& ckpt, const ArtifactTensor& e, kernels::QuantMatrixView* view) {
  kernels::QuantLayout& l = view->layout;
  LCD_ASSIGN_OR_RETURN(TensorView bits, GetTensor(ckpt, e.name + ".group_bits", StDType::kU8, {l.groups()}));
  const uint8_t* b = static_cast<const uint8_t*>(bits.data);
  l.group_bits.assign(b, b + l.groups());
  if (absl::Status s = kernels::ValidateQuantLayout(l); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, ".group_bits: ", s.message()));
  }
  LCD_ASSIGN_OR_RETURN(TensorView lattice, GetTensor(ckpt, e.name + ".lattice", StDType::kF16,
                                                     {l.groups(), l.LatticeParamsPerGroup()}));
  if (reinterpret_cast<uintptr_t>(lattice.data) % alignof(uint16_t) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, ".lattice is not 2-byte aligned in its file"));
  }
  view->lattice = static_cast<const uint16_t*>(lattice.data);
  if (absl::Status s = kernels::CheckLatticeParams(*view); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, ".lattice: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status CheckQuantTensor(const Checkpoint& ckpt, const ArtifactTensor& e, kernels::QuantMatrixView* view) {
  kernels::QuantLayout& l = view->layout;
  if (l.format == kernels::QuantFormat::kLattice) LCD_RETURN_IF_ERROR(CheckLatticeTensors(ckpt, e, view));
  LCD_ASSIGN_OR_RETURN(TensorView codes,
                       GetTensor(ckpt, e.name + ".codes", StDType::kU8, {l.rows, l.CodeRowBytes()}));
  LCD_ASSIGN_OR_RETURN(TensorView params, GetTensor(ckpt, e.name + ".params", StDType::kF16,
                                                    {l.rows, l.groups(), l.ParamsPerGroup()}));
  if (reinterpret_cast<uintptr_t>(params.data) % alignof(uint16_t) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, ".params is not 2-byte aligned in its file"));
  }
  view->codes = static_cast<const uint8_t*>(codes.data);
  view->params = static_cast<const uint16_t*>(params.data);
  if (absl::Status s = kernels::CheckCodePadding(*view); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, ".codes: ", s.message()));
  }
  const int64_t n = l.ParamCount();
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(kernels::Fp16ToFloat(view->params[i]))) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, ".params: element ", i, " is not finite"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsArtifactDir(const std::string& dir) {
  struct stat st;
  return ::stat((dir + "/" + kArtifactManifestFile).c_str(), &st) == 0;
}

absl::StatusOr<std::unique_ptr<Artifact>> Artifact::Open(const std::string& dir,
                                                         const std::function<bool()>& cancelled) {
  std::unique_ptr<Artifact> a(new Artifact());
  a->dir_ = dir;
  const std::string manifest_path = dir + "/" + kArtifactManifestFile;
  LCD_ASSIGN_OR_RETURN(std::string text, json_util::ReadTextFile(manifest_path, 64ull << 20));
  absl::StatusOr<ArtifactManifest> manifest = ParseArtifactManifest(text);
  if (!manifest.ok()) {
    return absl::Status(manifest.status().code(), absl::StrCat(dir, "/", manifest.status().message()));
  }
  a->manifest_ = *std::move(manifest);
  absl::StatusOr<ModelConfig> config = ParseModelConfig(a->manifest_.model_config_json);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(manifest_path, ": model_config: ", config.status().message()));
  }
  a->config_ = *std::move(config);
  LCD_RETURN_IF_ERROR(VerifyFiles(dir, a->manifest_, cancelled));
  LCD_ASSIGN_OR_RETURN(a->checkpoint_, Checkpoint::Open(dir));

  // Every stored tensor belongs to exactly one manifest entry.
  std::set<std::string> expected;
  for (size_t i = 0; i < a->manifest_.tensors.size(); ++i) {
    const ArtifactTensor& e = a->manifest_.tensors[i];
    a->by_name_[e.name] = i;
    if (e.quantized()) {
      kernels::QuantMatrixView view;
      view.layout = LayoutOf(e);
      absl::Status s = CheckQuantTensor(*a->checkpoint_, e, &view);
      if (!s.ok()) return absl::Status(s.code(), absl::StrCat(dir, ": ", s.message()));
      a->quant_views_[e.name] = view;
      expected.insert(e.name + ".codes");
      expected.insert(e.name + ".params");
      if (view.layout.format == kernels::QuantFormat::kLattice) {
        expected.insert(e.name + ".lattice");
        expected.insert(e.name + ".group_bits");
      }
    } else {
      absl::StatusOr<TensorView> t = a->checkpoint_->Get(e.name);
      if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": weights have no tensor ", e.name));
      if (!ToKernelDType(t->dtype).ok() || t->shape != e.shape) {
        return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor ", e.name, " is ", json_util::Sv(StDTypeName(t->dtype)), " ",
                                                       ShapeString(t->shape), "; manifest says dense ",
                                                       ShapeString(e.shape), " (F32, F16 or BF16)"));
      }
      expected.insert(e.name);
    }
  }
  for (const std::string& name : a->checkpoint_->TensorNames()) {
    if (!expected.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor ", name, " is not described by manifest.json"));
    }
  }
  return a;
}

const ArtifactTensor* Artifact::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &manifest_.tensors[it->second];
}

absl::StatusOr<kernels::QuantMatrixView> Artifact::QuantTensor(std::string_view name) const {
  const ArtifactTensor* e = Find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("artifact has no tensor ", json_util::Sv(name)));
  if (!e->quantized()) return absl::FailedPreconditionError(absl::StrCat("tensor ", json_util::Sv(name), " is dense"));
  return quant_views_.find(name)->second;
}

}  // namespace lcd::runtime
