// The weight seam: a model sees every linear layer as one LinearWeight,
// whatever its storage (dense fp32/fp16/bf16 mapped from a checkpoint, or a
// quantized format of artifact v1 repacked for the kernels). Adding a format
// or a device means adding an implementation here, not touching the model.
//
// Layers that read the same input (q/k/v; gate/up) share one LinearInput, so
// input-side preparation (activation lookup tables, ...) happens once per
// input; where the formats allow, they are also stacked into one weight at
// load (StackLinearWeights), so one kernel call computes all of them.
//
// Thread safety: a LinearWeight is immutable after construction; Forward may
// run concurrently on different inputs and outputs. A LinearInput belongs to
// the thread running the forward pass.
#ifndef LCD_RUNTIME_LINEAR_WEIGHT_H_
#define LCD_RUNTIME_LINEAR_WEIGHT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/ops.h"
#include "lcd/kernels/quant_linear.h"
#include "lcd/kernels/thread_pool.h"

namespace lcd::runtime {

// One activation matrix x [m][cols] about to be read by one or more linear
// layers. The quantized kernels' preparation is built on first use and reused
// by every later layer until Reset.
class LinearInput {
 public:
  void Reset(const float* x, int64_t m, int64_t cols) {
    x_ = x;
    m_ = m;
    cols_ = cols;
    prepared_ = false;
  }
  const float* x() const { return x_; }
  int64_t m() const { return m_; }
  int64_t cols() const { return cols_; }
  const kernels::QuantActivations& Quantized(kernels::ThreadPool* pool) const;

 private:
  const float* x_ = nullptr;
  int64_t m_ = 0;
  int64_t cols_ = 0;
  mutable bool prepared_ = false;
  mutable kernels::QuantActivations quant_;
};

class LinearWeight {
 public:
  virtual ~LinearWeight() = default;
  int64_t rows() const { return rows_; }  // out_features
  int64_t cols() const { return cols_; }  // in_features

  // y[m][rows] = x · Wᵀ + bias (bias [rows] or nullptr). in.cols() == cols().
  virtual void Forward(const LinearInput& in, const float* bias, float* y, kernels::ThreadPool* pool) const = 0;
  // Bytes of weight data one Forward call streams (codes, parameters, or the
  // dense matrix): the bandwidth cost of a decode step.
  virtual uint64_t BytesRead() const = 0;
  // The stored format and the kernel that runs it, for logs and benchmarks
  // ("bf16", "codebook b2 g128 [avx2 ...]").
  virtual std::string Describe() const = 0;

 protected:
  LinearWeight(int64_t rows, int64_t cols) : rows_(rows), cols_(cols) {}

 private:
  int64_t rows_;
  int64_t cols_;
};

// A dense matrix read in place (the view's memory must outlive the weight).
std::unique_ptr<LinearWeight> MakeDenseWeight(const kernels::MatrixView& w);
// A quantized matrix, repacked for the active kernels (the view may be freed
// afterwards). InvalidArgument for a bad layout.
absl::StatusOr<std::unique_ptr<LinearWeight>> MakeQuantWeight(const kernels::QuantMatrixView& w);

// Where a linear layer's weight comes from before it is bound.
struct LinearSource {
  bool quantized = false;
  kernels::MatrixView dense;        // When !quantized.
  kernels::QuantMatrixView quant;  // When quantized.
  int64_t rows() const { return quantized ? quant.layout.rows : dense.rows; }
  int64_t cols() const { return quantized ? quant.layout.cols : dense.cols; }
};

// Weights with the same cols stacked row-wise into one: output columns are
// parts[0]'s rows, then parts[1]'s, ... Quantized parts with identical
// layouts (but rows) become one packed matrix (one kernel call); anything
// else is computed part by part into the stacked output. InvalidArgument when
// cols differ.
absl::StatusOr<std::unique_ptr<LinearWeight>> StackLinearWeights(const std::vector<LinearSource>& parts);

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_LINEAR_WEIGHT_H_
