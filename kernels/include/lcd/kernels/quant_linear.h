// Linear layers over quantized weights: the formats of artifact v1
// (docs/ARTIFACT.md) and the LUT GEMV/GEMM kernels that run them.
//
// A quantized matrix W [rows][cols] (rows = out_features) is cut, per row,
// into groups of `group_size` consecutive columns; the last group of a row is
// short when group_size does not divide cols (groups = ceil(cols/group_size)).
// Every weight has a b-bit code q in [0, 2^b), and every (row, group) has P
// fp16 parameters p[0..P) that say what each code means:
//
//   kCodebook    (b in 1..4, P = 2^b)  w = p[q]                      (LCD, k-means, NF3)
//   kAffine      (b in 1..8, P = 2)    w = p[0] * (q - p[1])         (RTN, GPTQ, BitDistiller INT2)
//   kBinaryCoded (b in 1..4, P = b+1)  w = sum_i p[i]*(2*bit_i(q)-1) + p[b]   (R2Q: b = 2 planes)
//
// with bit_i(q) = (q >> i) & 1 and every p widened from fp16 to fp32 before
// the arithmetic (the product and the sums in fp32; the kernels may reorder
// sums, so results agree with the reference to rounding, not bit for bit).
//
// Canonical storage (QuantMatrixView, as the artifact stores it):
//   codes:  uint8 [rows][CodeRowBytes()]; the codes of one row form a bit
//           stream, LSB first: the code of column c is bits [c*b, c*b + b) of
//           the stream, and stream bit k is bit (k % 8) of byte k / 8. Each
//           row starts on a byte boundary; padding bits are zero.
//   params: fp16 [rows][groups][P].
// Kernels never read the canonical layout directly: PackedQuantMatrix::Pack repacks
// it once, at load, into whatever layout the active kernel wants.
//
// Conventions as in ops.h: activations fp32, row-major; pool may be nullptr;
// arguments are trusted (ValidateQuantLayout and the artifact reader check
// them once at load).
#ifndef LCD_KERNELS_QUANT_LINEAR_H_
#define LCD_KERNELS_QUANT_LINEAR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lcd/kernels/ops.h"
#include "lcd/kernels/thread_pool.h"

namespace lcd::kernels {

enum class QuantFormat : uint8_t { kCodebook = 0, kAffine = 1, kBinaryCoded = 2 };
std::string_view QuantFormatName(QuantFormat f);  // "codebook", "affine", "binary_coded"

struct QuantLayout {
  QuantFormat format = QuantFormat::kCodebook;
  int bits = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;

  int64_t groups() const { return (cols + group_size - 1) / group_size; }
  int64_t CodeRowBytes() const { return (cols * bits + 7) / 8; }
  // P, the fp16 parameters per (row, group).
  int64_t ParamsPerGroup() const;
  int64_t CodeBytes() const { return rows * CodeRowBytes(); }
  int64_t ParamCount() const { return rows * groups() * ParamsPerGroup(); }
};

// InvalidArgument naming the fault: bits outside the format's range,
// non-positive rows/cols/group_size.
absl::Status ValidateQuantLayout(const QuantLayout& layout);

// A quantized matrix in the canonical layout above. Non-owning.
struct QuantMatrixView {
  QuantLayout layout;
  const uint8_t* codes = nullptr;    // [rows][CodeRowBytes()]
  const uint16_t* params = nullptr;  // fp16 [rows][groups][P]
};

// Reads the code of (row, col) from the canonical layout.
int CanonicalCode(const QuantMatrixView& w, int64_t row, int64_t col);
// InvalidArgument naming the first row whose padding bits (after its last
// code) are not zero: a writer that sets them disagrees with the layout.
absl::Status CheckCodePadding(const QuantMatrixView& w);
// The value one code decodes to, given its group's P parameters widened to
// fp32 (the formula table above). The one definition every kernel, packer
// and quantizer agrees with.
float DecodeCode(QuantFormat format, int bits, const float* group_params, int code);
// Dequantizes rows [row_begin, row_end) into out [row_end-row_begin][cols]
// (the reference meaning of the matrix; used by tests and quantizers).
void DequantizeRows(const QuantMatrixView& w, int64_t row_begin, int64_t row_end, float* out);

// The kernel design a packed matrix runs with. Pack picks one from the ISA
// active at pack time (ActiveIsa()) and the layout; the object remembers it,
// so QuantLinear runs the implementation that packed it even if the ISA is
// changed (SetIsaForTesting) between Pack and QuantLinear.
//
//   kReference     scalar twin (canonical codes, fp32 params): the oracle and
//                  the fallback for layouts no fast kernel covers.
//   kCentroidTable AVX2 design (a): per (row, group) the 2^b decoded values in
//                  registers, looked up with vpermps, FMA with x. Exact up to
//                  fp32 rounding. Any format with b <= 4, and affine b = 8
//                  (decoded directly from bytes); group_size % 8 == 0.
//   kActivationLut AVX2 design (b), T-MAC style: tables of partial sums of x
//                  (QuantActivations::Tables) looked up with vpshufb by the
//                  bit planes of many rows at once. Needs group_size % 32 == 0;
//                  codebook b = 2, affine b = 2..4, binary-coded b = 1..2.
//                  Not exact: see "LUT quantization" below.
//
// LUT quantization (kActivationLut only). For every input row and block of
// 4 columns j, the centred partial sums
//   T_j[pattern] = sum_{t<4} x[4j+t] * (bit_t(pattern) - 1/2)
// are rounded to int8 with one scale per 32-column block B (columns past
// cols count as x = 0): s_B = max_{j in B} sum_t |x[4j+t]| / 2 / 127,
// Tq = round(T / s_B). A code's value is expanded over its bits (Moebius
// transform of the group's 2^b decoded values: value(q) = sum over bit
// subsets S of q of c_S), so the kernel's result differs from the exact one
// by at most
//   sum over 4-column blocks j (in block B, group g) of
//       s_B / 2 * sum_{S nonempty} |c_S(row, g)|
// plus fp32 rounding; the centring and c_{} use fp32 sums of x. In practice
// that is a relative RMS error of 0.5-0.9% at cols = 4096 (quant_linear_test,
// ActivationLutRelativeErrorAtLlamaWidth), small next to 2-4-bit weight
// error; the runtime needing exact results packs with kCentroidTable.
enum class QuantKernel : uint8_t { kAuto = 0, kReference, kCentroidTable, kActivationLut };
// "auto", "reference", "centroid_table", "activation_lut".
std::string_view QuantKernelName(QuantKernel k);

class QuantActivations;

// A quantized matrix repacked for the kernels of this machine. Owns its
// memory; immutable after Pack, so any number of threads may read it. Pack
// and PackStacked are reentrant (a loader may pack matrices in parallel).
class PackedQuantMatrix {
 public:
  // Repacks `w` (which may be freed afterwards) for the fastest kernel
  // available under ActiveIsa() for this layout. InvalidArgument for a bad
  // layout; codes outside [0, 2^b) cannot occur by construction.
  static absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> Pack(const QuantMatrixView& w);
  // As above with a forced design (benchmarks and tests compare designs).
  // kAuto is the choice Pack makes. Unimplemented when `kernel` cannot run
  // this layout or needs an ISA above ActiveIsa().
  static absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> Pack(const QuantMatrixView& w,
                                                                 QuantKernel kernel);
  // Several matrices with the same cols, format, bits and group_size stacked
  // row-wise into one (q/k/v, gate/up), so one call computes all of them:
  // output columns are w[0]'s rows, then w[1]'s, ... InvalidArgument when the
  // layouts differ in anything but rows.
  static absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> PackStacked(
      const std::vector<QuantMatrixView>& parts);
  static absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> PackStacked(
      const std::vector<QuantMatrixView>& parts, QuantKernel kernel);

  virtual ~PackedQuantMatrix() = default;
  const QuantLayout& layout() const { return layout_; }
  // The design and ISA that packed this matrix (what QuantLinear will run).
  virtual QuantKernel kernel() const = 0;
  virtual Isa isa() const = 0;
  // Bytes a kernel streams per call (codes plus parameters, as packed).
  virtual uint64_t BytesRead() const = 0;
  // Short description of the packing, for logs
  // ("avx2 activation_lut affine b=2 g=128 rows x16 int8 vpshufb tables").
  virtual std::string Describe() const = 0;

 protected:
  explicit PackedQuantMatrix(const QuantLayout& layout) : layout_(layout) {}
  // The kernel behind QuantLinear (same contract).
  virtual void Run(const QuantActivations& x, const float* bias, float* y,
                   ThreadPool* pool) const = 0;
  friend void QuantLinear(const QuantActivations& x, const PackedQuantMatrix& w, const float* bias,
                          float* y, ThreadPool* pool);

  QuantLayout layout_;
};

// Input-side preparation, built once per activation matrix and shared by every
// quantized matrix that reads the same input (q/k/v; gate/up): whatever the
// active kernel derives from x alone (the int8 activation tables of
// kActivationLut, built when ActiveIsa() >= kAvx2 at Prepare; a LUT matrix
// given activations prepared without them builds its own per call). Holds a
// pointer to x: x must outlive its use. Reusable across calls (buffers grow).
// Thread safety: Prepare is not reentrant; a prepared object may be read by
// any number of QuantLinear calls.
class QuantActivations {
 public:
  QuantActivations();
  ~QuantActivations();
  QuantActivations(const QuantActivations&) = delete;
  QuantActivations& operator=(const QuantActivations&) = delete;

  // x: [m][cols].
  void Prepare(const float* x, int64_t m, int64_t cols, ThreadPool* pool);
  const float* x() const { return x_; }
  int64_t m() const { return m_; }
  int64_t cols() const { return cols_; }

  struct Tables;  // Kernel-private derived data (nullptr when not built).
  const Tables* tables() const { return has_tables_ ? tables_.get() : nullptr; }

 private:
  const float* x_ = nullptr;
  int64_t m_ = 0;
  int64_t cols_ = 0;
  bool has_tables_ = false;
  std::unique_ptr<Tables> tables_;
};

// y[m][w.rows] = x · Ŵᵀ + bias, Ŵ the dequantized matrix (reference meaning:
// DequantizeRows, then a float64-exact dot product up to fp32 rounding; for
// kActivationLut also up to the LUT quantization bound above).
// x.cols() must equal w.layout().cols. m = 1 is the decode GEMV; m > 1 reads
// the packed weights once per call, not once per token.
void QuantLinear(const QuantActivations& x, const PackedQuantMatrix& w, const float* bias, float* y,
                 ThreadPool* pool);

}  // namespace lcd::kernels

#endif  // LCD_KERNELS_QUANT_LINEAR_H_
