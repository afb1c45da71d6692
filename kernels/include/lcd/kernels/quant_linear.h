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
//   kLattice     (GLVQ; nominal b in 1..8, P = 1: the scale s of (row, group))
//     Column group k (columns [k*g, min(cols, (k+1)*g)), the same for every
//     row) has its own code width b_k in 1..8 (group_bits[k]; all b when
//     group_bits is empty), a d x d generator G_k and a companding parameter
//     mu_k > 0, shared by all rows (QuantMatrixView::lattice, fp16
//     [groups][d*d + 1]: G_k row-major, then mu_k). Each row's group is cut
//     into sub-vectors of d consecutive columns; the last one of a short
//     group has n = len % d < d columns and uses G_k's leading n x n block.
//     With c_j = q_j - 2^(b_k-1) + 1/2 (code q_j of the sub-vector's column
//     j, so z_j = q_j - 2^(b_k-1) in [-2^(b_k-1), 2^(b_k-1)-1]):
//       y_i = sum_{j<n} G_k[i][j] * c_j,
//       w_i = s * sign(y_i) * ((1 + mu_k)^|y_i| - 1) / mu_k    (i < n)
//     i.e. w = s * Finv(G (z + 1/2)), Finv the inverse mu-law. Widths vary
//     per column group, so the code stream of a row is the concatenation
//     of its groups, group k taking b_k bits per column (CodeBitOffset).
//
// Canonical storage (QuantMatrixView, as the artifact stores it):
//   codes:  uint8 [rows][CodeRowBytes()]; the codes of one row form a bit
//           stream, LSB first: the code of column c is bits [c*b, c*b + b) of
//           the stream, and stream bit k is bit (k % 8) of byte k / 8. Each
//           row starts on a byte boundary; padding bits are zero.
//   params: fp16 [rows][groups][P].
//   (kLattice also: lattice fp16 [groups][d*d + 1] and the widths in
//   QuantLayout::group_bits; the code of column c is bits
//   [CodeBitOffset(c), + GroupBits(c / group_size)).)
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

enum class QuantFormat : uint8_t { kCodebook = 0, kAffine = 1, kBinaryCoded = 2, kLattice = 3 };
// "codebook", "affine", "binary_coded", "lattice"
std::string_view QuantFormatName(QuantFormat f);

struct QuantLayout {
  QuantFormat format = QuantFormat::kCodebook;
  int bits = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;
  // kLattice only (0 and empty for the other formats): the sub-vector
  // dimension d (group_size % d == 0), and the code width of every column
  // group ([groups], each 1..8; empty = `bits` for all groups).
  int lattice_dim = 0;
  std::vector<uint8_t> group_bits = {};

  int64_t groups() const { return (cols + group_size - 1) / group_size; }
  int GroupBits(int64_t group) const { return group_bits.empty() ? bits : group_bits[group]; }
  // Bits of one row's code stream, and the stream offset of column c's code.
  int64_t CodeRowBits() const;
  int64_t CodeBitOffset(int64_t col) const;
  int64_t CodeRowBytes() const { return (CodeRowBits() + 7) / 8; }
  // kLattice: fp16 values of QuantMatrixView::lattice (d*d + 1 per group).
  int64_t LatticeParamsPerGroup() const { return int64_t{lattice_dim} * lattice_dim + 1; }
  int64_t LatticeParamCount() const { return format == QuantFormat::kLattice ? groups() * LatticeParamsPerGroup() : 0; }
  // P, the fp16 parameters per (row, group).
  int64_t ParamsPerGroup() const;
  int64_t CodeBytes() const { return rows * CodeRowBytes(); }
  int64_t ParamCount() const { return rows * groups() * ParamsPerGroup(); }
};

// InvalidArgument naming the fault: bits outside the format's range,
// non-positive rows/cols/group_size; for kLattice a d outside 1..32 or not
// dividing group_size, group_bits of the wrong length or outside 1..8; for
// the other formats a lattice_dim or group_bits set.
absl::Status ValidateQuantLayout(const QuantLayout& layout);

// A quantized matrix in the canonical layout above. Non-owning.
struct QuantMatrixView {
  QuantLayout layout;
  const uint8_t* codes = nullptr;    // [rows][CodeRowBytes()]
  const uint16_t* params = nullptr;  // fp16 [rows][groups][P]
  const uint16_t* lattice = nullptr; // kLattice: fp16 [groups][d*d + 1]
};

// kLattice: decodes one sub-vector of n <= d columns (the formula above):
// g = the group's generator widened to fp32 (d x d row-major), q its n
// codes, out its n weights. ln1p_mu = log1p(mu) in fp32. The one definition
// DequantizeRows, the scalar twin and the quantizer agree with.
void DecodeLatticeSubvector(const float* g, int d, float mu, float ln1p_mu, float s, int bits,
                            const int* q, int n, float* out);
// kLattice: InvalidArgument naming the first group whose mu is not a finite
// positive number, whose generator is not finite, or whose decoded values
// could overflow fp32 (max_i sum_j |G[i][j]| * 2^(b-1) * log1p(mu) > 80).
absl::Status CheckLatticeParams(const QuantMatrixView& w);

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
//   kLatticeDecode kLattice only, decode-then-multiply: each row is decoded
//                  to fp32 once per call into a per-thread scratch row (AVX2:
//                  for d = 8, 16 and b_k <= 4 eight sub-vectors at a time,
//                  one per lane: codes gathered, G z as d*d FMAs with
//                  broadcast G entries, a transpose on store; otherwise G z by
//                  8-row FMA blocks per sub-vector; the inverse mu-law with a
//                  vector exp) and dotted with every input row, so m > 1
//                  decodes once. Needs d % 8 == 0 (short sub-vectors whose n is not
//                  a multiple of 8 are decoded by the scalar twin's code).
//                  Exact up to fp32 rounding and the vector exp (~2 ulp).
//                  kReference runs the same scheme with DecodeLatticeSubvector.
enum class QuantKernel : uint8_t { kAuto = 0, kReference, kCentroidTable, kActivationLut, kLatticeDecode };
// "auto", "reference", "centroid_table", "activation_lut", "lattice_decode".
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
  // layouts differ in anything but rows (kLattice: parts may differ in rows,
  // group_bits and lattice_dim; each part keeps its own lattice params).
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
