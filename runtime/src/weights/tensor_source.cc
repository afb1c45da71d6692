#include "src/weights/tensor_source.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "src/json_util.h"

namespace lcd::runtime {
namespace {

absl::StatusOr<TensorView> DenseFrom(const Checkpoint& ckpt, const std::string& name) {
  absl::StatusOr<TensorView> t = ckpt.Get(name);
  if (!t.ok()) return absl::NotFoundError(absl::StrCat("checkpoint has no tensor ", name));
  if (!ToKernelDType(t->dtype).ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ", json_util::Sv(StDTypeName(t->dtype)),
                                                   "; expected F32, F16 or BF16"));
  }
  return t;
}

absl::StatusOr<LinearSource> DenseLinear(const Checkpoint& ckpt, const std::string& name) {
  LCD_ASSIGN_OR_RETURN(TensorView t, DenseFrom(ckpt, name));
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has rank ", t.shape.size(), "; expected 2"));
  }
  LinearSource s;
  s.dense.data = t.data;
  s.dense.dtype = *ToKernelDType(t.dtype);
  s.dense.rows = t.shape[0];
  s.dense.cols = t.shape[1];
  return s;
}

class CheckpointSource : public TensorSource {
 public:
  explicit CheckpointSource(std::unique_ptr<Checkpoint> c) : ckpt_(std::move(c)) {}
  bool Has(std::string_view name) const override { return ckpt_->Has(name); }
  absl::StatusOr<TensorView> Dense(const std::string& name) const override { return DenseFrom(*ckpt_, name); }
  absl::StatusOr<LinearSource> Linear(const std::string& name) const override { return DenseLinear(*ckpt_, name); }
  std::string Describe() const override { return "checkpoint"; }

 private:
  std::unique_ptr<Checkpoint> ckpt_;
};

class ArtifactSource : public TensorSource {
 public:
  explicit ArtifactSource(std::unique_ptr<Artifact> a) : artifact_(std::move(a)) {}
  bool Has(std::string_view name) const override { return artifact_->Find(name) != nullptr; }
  absl::StatusOr<TensorView> Dense(const std::string& name) const override {
    const ArtifactTensor* e = artifact_->Find(name);
    if (e == nullptr) return absl::NotFoundError(absl::StrCat("artifact has no tensor ", json_util::Sv(name)));
    if (e->quantized()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", name, " is quantized (", e->format, "); this model needs it dense"));
    }
    return DenseFrom(artifact_->checkpoint(), name);
  }
  absl::StatusOr<LinearSource> Linear(const std::string& name) const override {
    const ArtifactTensor* e = artifact_->Find(name);
    if (e == nullptr) return absl::NotFoundError(absl::StrCat("artifact has no tensor ", json_util::Sv(name)));
    if (!e->quantized()) return DenseLinear(artifact_->checkpoint(), name);
    LinearSource s;
    s.quantized = true;
    LCD_ASSIGN_OR_RETURN(s.quant, artifact_->QuantTensor(name));
    return s;
  }
  std::string Describe() const override {
    const ArtifactMethod& m = artifact_->manifest().method;
    return absl::StrCat("artifact ", m.name, " b", m.bits, " g", m.group_size);
  }

 private:
  std::unique_ptr<Artifact> artifact_;
};

}  // namespace

std::unique_ptr<TensorSource> MakeCheckpointSource(std::unique_ptr<Checkpoint> checkpoint) {
  return std::make_unique<CheckpointSource>(std::move(checkpoint));
}

std::unique_ptr<TensorSource> MakeArtifactSource(std::unique_ptr<Artifact> artifact) {
  return std::make_unique<ArtifactSource>(std::move(artifact));
}

}  // namespace lcd::runtime
