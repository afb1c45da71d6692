// Implementations of the weight seam: dense (kernels::Linear over the mapped
// matrix), quantized (kernels::QuantLinear over a packed matrix) and stacked
// (several weights sharing one input and one output row).
#include "lcd/runtime/linear_weight.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"

namespace lcd::runtime {
namespace {

class DenseWeight : public LinearWeight {
 public:
  explicit DenseWeight(const kernels::MatrixView& w) : LinearWeight(w.rows, w.cols), w_(w) {}
  void Forward(const LinearInput& in, const float* bias, float* y, kernels::ThreadPool* pool) const override {
    kernels::Linear(in.x(), in.m(), w_, bias, y, pool);
  }
  uint64_t BytesRead() const override {
    return static_cast<uint64_t>(w_.rows) * static_cast<uint64_t>(w_.cols) * kernels::DTypeSize(w_.dtype);
  }
  std::string Describe() const override { return std::string(kernels::DTypeName(w_.dtype)); }

 private:
  kernels::MatrixView w_;
};

class QuantWeight : public LinearWeight {
 public:
  explicit QuantWeight(std::unique_ptr<kernels::PackedQuantMatrix> packed)
      : LinearWeight(packed->layout().rows, packed->layout().cols), packed_(std::move(packed)) {}
  void Forward(const LinearInput& in, const float* bias, float* y, kernels::ThreadPool* pool) const override {
    kernels::QuantLinear(in.Quantized(pool), *packed_, bias, y, pool);
  }
  uint64_t BytesRead() const override { return packed_->BytesRead(); }
  std::string Describe() const override {
    const kernels::QuantLayout& l = packed_->layout();
    return absl::StrCat(std::string(kernels::QuantFormatName(l.format)), " b", l.bits, " g", l.group_size, " [",
                        packed_->Describe(), "]");
  }

 private:
  std::unique_ptr<kernels::PackedQuantMatrix> packed_;
};

// Parts computed one by one. With m = 1 each part writes straight into its
// slice of y; with m > 1 a part's [m][rows_i] output is scattered into the
// stacked [m][sum rows] rows.
class StackedWeight : public LinearWeight {
 public:
  StackedWeight(std::vector<std::unique_ptr<LinearWeight>> parts, int64_t rows)
      : LinearWeight(rows, parts[0]->cols()), parts_(std::move(parts)) {}

  void Forward(const LinearInput& in, const float* bias, float* y, kernels::ThreadPool* pool) const override {
    const int64_t m = in.m();
    int64_t offset = 0;
    for (const auto& p : parts_) {
      const float* b = bias ? bias + offset : nullptr;
      if (m == 1) {
        p->Forward(in, b, y + offset, pool);
      } else {
        scratch_.resize(static_cast<size_t>(m * p->rows()));
        p->Forward(in, b, scratch_.data(), pool);
        for (int64_t t = 0; t < m; ++t) {
          std::copy_n(scratch_.data() + t * p->rows(), p->rows(), y + t * rows() + offset);
        }
      }
      offset += p->rows();
    }
  }
  uint64_t BytesRead() const override {
    uint64_t n = 0;
    for (const auto& p : parts_) n += p->BytesRead();
    return n;
  }
  std::string Describe() const override {
    std::string s = "stacked(";
    for (size_t i = 0; i < parts_.size(); ++i) absl::StrAppend(&s, i ? ", " : "", parts_[i]->Describe());
    return s + ")";
  }

 private:
  std::vector<std::unique_ptr<LinearWeight>> parts_;
  // Forward runs on the model's forward thread only (the model is not
  // reentrant), so one scratch buffer per weight suffices.
  mutable std::vector<float> scratch_;
};

bool SameQuantShape(const kernels::QuantLayout& a, const kernels::QuantLayout& b) {
  return a.format == b.format && a.bits == b.bits && a.cols == b.cols && a.group_size == b.group_size;
}

}  // namespace

const kernels::QuantActivations& LinearInput::Quantized(kernels::ThreadPool* pool) const {
  if (!prepared_) {
    quant_.Prepare(x_, m_, cols_, pool);
    prepared_ = true;
  }
  return quant_;
}

std::unique_ptr<LinearWeight> MakeDenseWeight(const kernels::MatrixView& w) {
  return std::make_unique<DenseWeight>(w);
}

absl::StatusOr<std::unique_ptr<LinearWeight>> MakeQuantWeight(const kernels::QuantMatrixView& w) {
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<kernels::PackedQuantMatrix> packed, kernels::PackedQuantMatrix::Pack(w));
  return std::unique_ptr<LinearWeight>(new QuantWeight(std::move(packed)));
}

absl::StatusOr<std::unique_ptr<LinearWeight>> StackLinearWeights(const std::vector<LinearSource>& parts) {
  if (parts.empty()) return absl::InvalidArgumentError("StackLinearWeights: no parts");
  int64_t rows = 0;
  bool fusable = parts[0].quantized;
  for (const LinearSource& p : parts) {
    if (p.cols() != parts[0].cols()) {
      return absl::InvalidArgumentError(absl::StrCat("StackLinearWeights: parts have ", parts[0].cols(), " and ",
                                                     p.cols(), " input columns"));
    }
    rows += p.rows();
    fusable = fusable && p.quantized && SameQuantShape(p.quant.layout, parts[0].quant.layout);
  }
  if (parts.size() == 1) {
    return parts[0].quantized ? MakeQuantWeight(parts[0].quant) : MakeDenseWeight(parts[0].dense);
  }
  if (fusable) {
    std::vector<kernels::QuantMatrixView> views;
    for (const LinearSource& p : parts) views.push_back(p.quant);
    LCD_ASSIGN_OR_RETURN(std::unique_ptr<kernels::PackedQuantMatrix> packed,
                         kernels::PackedQuantMatrix::PackStacked(views));
    return std::unique_ptr<LinearWeight>(new QuantWeight(std::move(packed)));
  }
  std::vector<std::unique_ptr<LinearWeight>> weights;
  for (const LinearSource& p : parts) {
    if (p.quantized) {
      LCD_ASSIGN_OR_RETURN(std::unique_ptr<LinearWeight> w, MakeQuantWeight(p.quant));
      weights.push_back(std::move(w));
    } else {
      weights.push_back(MakeDenseWeight(p.dense));
    }
  }
  return std::unique_ptr<LinearWeight>(new StackedWeight(std::move(weights), rows));
}

}  // namespace lcd::runtime
