// The quantizer in the training loop, one per quantized linear weight: the
// forward uses Ŵ = Decode(W, params, codes), the backward turns dL/dŴ into
// the latent weight's gradient (straight-through where the format rounds)
// and the gradient of the format's own trainable parameters (centroids,
// scales). TrainModel owns one per quantized weight (EnableQuantized) and
// runs every linear through it; each method brings its format's subclass
// (LCD: CodebookLoopQuantizer below).
//
// Codes: one uint8 per weight, [rows][cols] row-major, the discrete part of
// Ŵ (a centroid index, a pair of signs, an integer level). Assign derives
// them from the latent weight; TrainModel::ReassignCodes applies that, and
// callers may save and restore codes() (speculative re-assignment).
//
// Parameters: TrainModel stores them as the trainable tensor
// "<prefix>.<param_name()>" of param_shape() (prefix = the weight's name
// without ".weight"; never weight-decayed); an empty shape means none, and
// the functions then get params == nullptr.
//
// Conventions as in ops.h: backward functions accumulate (+=), a nullptr
// gradient is frozen, pool may be nullptr. Implementations must be
// deterministic for any thread count (each row computed by one thread).
#ifndef LCD_QUANTIZER_TRAIN_LOOP_QUANTIZER_H_
#define LCD_QUANTIZER_TRAIN_LOOP_QUANTIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/train/codebook_linear.h"

namespace lcd::quantizer::train {

class LoopQuantizer {
 public:
  LoopQuantizer(int64_t rows, int64_t cols)
      : rows_(rows), cols_(cols), codes_(static_cast<size_t>(rows * cols), 0) {}
  virtual ~LoopQuantizer() = default;
  LoopQuantizer(const LoopQuantizer&) = delete;
  LoopQuantizer& operator=(const LoopQuantizer&) = delete;

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  std::vector<uint8_t>& codes() { return codes_; }
  const std::vector<uint8_t>& codes() const { return codes_; }

  virtual std::string param_name() const = 0;
  virtual std::vector<int64_t> param_shape() const = 0;
  // w_hat [rows][cols] = Ŵ of the latent weight w, params and codes().
  virtual void Decode(const float* w, const float* params, float* w_hat, kernels::ThreadPool* pool) const = 0;
  // Given dw_hat = dL/dŴ: dw += dL/dW (nullptr: frozen), dparams += dL/dparams
  // (nullptr: frozen).
  virtual void Backward(const float* w, const float* params, const float* dw_hat, float* dw, float* dparams,
                        kernels::ThreadPool* pool) const = 0;
  // codes [rows][cols] = the codes the latent weight w maps to under params.
  virtual void Assign(const float* w, const float* params, uint8_t* codes, kernels::ThreadPool* pool) const = 0;
  // The largest valid code (codes restored from a checkpoint are checked).
  virtual int max_code() const { return 255; }
  // LCD.md step 6's centroid merge/split on codes() and params, for a
  // quantizer with centroids (CodebookMergeSplit); returns the groups changed
  // and appends their indices (into param_shape()'s leading dimensions,
  // flattened) to *changed. Without centroids: nothing to do, 0.
  virtual int64_t MergeSplit(const float* w, float* params, float tau, std::vector<int64_t>* changed) {
    (void)w, (void)params, (void)tau, (void)changed;
    return 0;
  }

 private:
  int64_t rows_, cols_;
  std::vector<uint8_t> codes_;
};

// LCD's codebook (codebook_linear.h): params = centroids [rows][groups][k],
// named "centroids"; Ŵ = the centroid of each code; dW = dŴ
// (straight-through); dc_k = sum of dŴ over the weights coded k; Assign =
// the nearest centroid (lowest index on a tie).
class CodebookLoopQuantizer final : public LoopQuantizer {
 public:
  explicit CodebookLoopQuantizer(const CodebookShape& shape) : LoopQuantizer(shape.rows, shape.cols), shape_(shape) {}
  const CodebookShape& shape() const { return shape_; }

  std::string param_name() const override { return "centroids"; }
  std::vector<int64_t> param_shape() const override { return {shape_.rows, shape_.groups(), shape_.k}; }
  void Decode(const float* w, const float* params, float* w_hat, kernels::ThreadPool* pool) const override;
  void Backward(const float* w, const float* params, const float* dw_hat, float* dw, float* dparams,
                kernels::ThreadPool* pool) const override;
  void Assign(const float* w, const float* params, uint8_t* codes, kernels::ThreadPool* pool) const override;
  int max_code() const override { return static_cast<int>(shape_.k) - 1; }
  int64_t MergeSplit(const float* w, float* params, float tau, std::vector<int64_t>* changed) override;

 private:
  CodebookShape shape_;
};

}  // namespace lcd::quantizer::train

#endif  // LCD_QUANTIZER_TRAIN_LOOP_QUANTIZER_H_
