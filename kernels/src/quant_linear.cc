// The format half of quant_linear.h (validation, canonical codes, decoding)
// and the dispatch: Pack chooses a design from ActiveIsa() and the layout,
// QuantLinear runs whatever design packed the matrix.
#include "lcd/kernels/quant_linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "src/quant_linear_internal.h"

namespace lcd::kernels {

std::string_view QuantFormatName(QuantFormat f) {
  switch (f) {
    case QuantFormat::kCodebook:
      return "codebook";
    case QuantFormat::kAffine:
      return "affine";
    case QuantFormat::kBinaryCoded:
      return "binary_coded";
    case QuantFormat::kLattice:
      return "lattice";
  }
  return "unknown";
}

std::string_view QuantKernelName(QuantKernel k) {
  switch (k) {
    case QuantKernel::kAuto:
      return "auto";
    case QuantKernel::kReference:
      return "reference";
    case QuantKernel::kCentroidTable:
      return "centroid_table";
    case QuantKernel::kActivationLut:
      return "activation_lut";
    case QuantKernel::kLatticeDecode:
      return "lattice_decode";
  }
  return "unknown";
}

int64_t QuantLayout::ParamsPerGroup() const {
  switch (format) {
    case QuantFormat::kCodebook:
      return int64_t{1} << bits;
    case QuantFormat::kAffine:
      return 2;
    case QuantFormat::kBinaryCoded:
      return bits + 1;
    case QuantFormat::kLattice:
      return 1;
  }
  return 0;
}

int64_t QuantLayout::CodeRowBits() const {
  if (group_bits.empty()) return cols * bits;
  int64_t total = 0;
  for (int64_t g = 0; g < groups(); ++g) {
    total += (std::min(cols, (g + 1) * group_size) - g * group_size) * group_bits[g];
  }
  return total;
}

int64_t QuantLayout::CodeBitOffset(int64_t col) const {
  if (group_bits.empty()) return col * bits;
  const int64_t k = col / group_size;
  int64_t off = 0;
  for (int64_t g = 0; g < k; ++g) off += group_size * group_bits[g];
  return off + (col - k * group_size) * group_bits[k];
}

absl::Status ValidateQuantLayout(const QuantLayout& layout) {
  int max_bits = 0;
  switch (layout.format) {
    case QuantFormat::kCodebook:
    case QuantFormat::kBinaryCoded:
      max_bits = 4;
      break;
    case QuantFormat::kAffine:
    case QuantFormat::kLattice:
      max_bits = 8;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown quant format ", static_cast<int>(layout.format)));
  }
  if (layout.bits < 1 || layout.bits > max_bits) {
    return absl::InvalidArgumentError(absl::StrCat("bits ", layout.bits, " outside 1..", max_bits,
                                                   " for format ",
                                                   std::string(QuantFormatName(layout.format))));
  }
  if (layout.rows <= 0 || layout.cols <= 0 || layout.group_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("rows ", layout.rows, ", cols ", layout.cols,
                                                   ", group_size ", layout.group_size,
                                                   ": all must be positive"));
  }
  if (layout.format == QuantFormat::kLattice) {
    if (layout.lattice_dim < 1 || layout.lattice_dim > 32 || layout.group_size % layout.lattice_dim != 0) {
      return absl::InvalidArgumentError(absl::StrCat("lattice_dim ", layout.lattice_dim,
                                                     " must be in 1..32 and divide group_size ", layout.group_size));
    }
    if (!layout.group_bits.empty()) {
      if (static_cast<int64_t>(layout.group_bits.size()) != layout.groups()) {
        return absl::InvalidArgumentError(absl::StrCat("group_bits has ", layout.group_bits.size(),
                                                       " entries; the matrix has ", layout.groups(), " groups"));
      }
      for (size_t g = 0; g < layout.group_bits.size(); ++g) {
        if (layout.group_bits[g] < 1 || layout.group_bits[g] > 8) {
          return absl::InvalidArgumentError(
              absl::StrCat("group_bits[", g, "] = ", layout.group_bits[g], " outside 1..8"));
        }
      }
    }
  } else if (layout.lattice_dim != 0 || !layout.group_bits.empty()) {
    return absl::InvalidArgumentError("lattice_dim and group_bits are for the lattice format only");
  }
  // Offsets are int64 byte/bit counts; refuse sizes whose bit count overflows.
  if (layout.cols > (int64_t{1} << 40) / layout.bits || layout.rows > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError("quantized matrix too large");
  }
  return absl::OkStatus();
}

int CanonicalCode(const QuantMatrixView& w, int64_t row, int64_t col) {
  const uint8_t* r = w.codes + row * w.layout.CodeRowBytes();
  return ReadCodeBits(r, w.layout.CodeBitOffset(col), w.layout.GroupBits(col / w.layout.group_size));
}

absl::Status CheckCodePadding(const QuantMatrixView& w) {
  const QuantLayout& l = w.layout;
  const int64_t used_bits = l.CodeRowBits();
  if (used_bits % 8 == 0) return absl::OkStatus();
  const uint8_t mask = static_cast<uint8_t>(0xFF << (used_bits % 8));
  for (int64_t r = 0; r < l.rows; ++r) {
    if (w.codes[r * l.CodeRowBytes() + l.CodeRowBytes() - 1] & mask) {
      return absl::InvalidArgumentError(absl::StrCat("row ", r, " has non-zero padding bits after its last code"));
    }
  }
  return absl::OkStatus();
}

float DecodeCode(QuantFormat format, int bits, const float* p, int code) {
  switch (format) {
    case QuantFormat::kCodebook:
      return p[code];
    case QuantFormat::kAffine:
      return p[0] * (static_cast<float>(code) - p[1]);
    case QuantFormat::kBinaryCoded: {
      float acc = 0.0f;
      for (int i = 0; i < bits; ++i) acc += ((code >> i) & 1) ? p[i] : -p[i];
      return acc + p[bits];
    }
    case QuantFormat::kLattice:  // Not per code: DecodeLatticeSubvector.
      break;
  }
  return 0.0f;
}

void DecodeLatticeSubvector(const float* g, int d, float mu, float ln1p_mu, float s, int bits,
                            const int* q, int n, float* out) {
  float c[32];
  const float offset = static_cast<float>(1 << (bits - 1)) - 0.5f;
  for (int j = 0; j < n; ++j) c[j] = static_cast<float>(q[j]) - offset;
  for (int i = 0; i < n; ++i) {
    float y = 0.0f;
    for (int j = 0; j < n; ++j) y += g[i * d + j] * c[j];
    const float mag = std::expm1(std::fabs(y) * ln1p_mu) / mu;
    out[i] = s * (y < 0.0f ? -mag : mag);
  }
}

absl::Status CheckLatticeParams(const QuantMatrixView& w) {
  const QuantLayout& l = w.layout;
  const int d = l.lattice_dim;
  const int64_t P = l.LatticeParamsPerGroup();
  for (int64_t k = 0; k < l.groups(); ++k) {
    const uint16_t* p = w.lattice + k * P;
    const float mu = Fp16ToFloat(p[P - 1]);
    if (!std::isfinite(mu) || !(mu > 0.0f)) {
      return absl::InvalidArgumentError(absl::StrCat("lattice group ", k, ": mu ", mu, " is not a finite positive number"));
    }
    double worst = 0.0;
    for (int i = 0; i < d; ++i) {
      double row = 0.0;
      for (int j = 0; j < d; ++j) {
        const float v = Fp16ToFloat(p[i * d + j]);
        if (!std::isfinite(v)) {
          return absl::InvalidArgumentError(absl::StrCat("lattice group ", k, ": generator element (", i, ", ", j, ") is not finite"));
        }
        row += std::fabs(v);
      }
      worst = std::max(worst, row);
    }
    const double bound = worst * static_cast<double>(1 << (l.GroupBits(k) - 1)) * std::log1p(static_cast<double>(mu));
    if (bound > 80.0) {
      return absl::InvalidArgumentError(absl::StrCat("lattice group ", k, ": generator and mu let decoded values reach e^",
                                                     bound, " (limit e^80)"));
    }
  }
  return absl::OkStatus();
}

void DequantizeRows(const QuantMatrixView& w, int64_t row_begin, int64_t row_end, float* out) {
  const QuantLayout& l = w.layout;
  if (l.format == QuantFormat::kLattice) {
    for (int64_t r = row_begin; r < row_end; ++r) DecodeLatticeRow(w, r, out + (r - row_begin) * l.cols);
    return;
  }
  const int64_t P = l.ParamsPerGroup();
  std::vector<float> params(static_cast<size_t>(P));
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* o = out + (r - row_begin) * l.cols;
    for (int64_t g = 0; g < l.groups(); ++g) {
      const uint16_t* gp = w.params + (r * l.groups() + g) * P;
      for (int64_t i = 0; i < P; ++i) params[i] = Fp16ToFloat(gp[i]);
      const int64_t c_end = std::min(l.cols, (g + 1) * l.group_size);
      for (int64_t c = g * l.group_size; c < c_end; ++c) {
        o[c] = DecodeCode(l.format, l.bits, params.data(), CanonicalCode(w, r, c));
      }
    }
  }
}

absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> PackedQuantMatrix::Pack(
    const QuantMatrixView& w) {
  return Pack(w, QuantKernel::kAuto);
}

absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> PackedQuantMatrix::Pack(const QuantMatrixView& w,
                                                                           QuantKernel kernel) {
  if (absl::Status s = ValidateQuantLayout(w.layout); !s.ok()) return s;
  if (w.codes == nullptr || w.params == nullptr) {
    return absl::InvalidArgumentError("quantized matrix without codes or params");
  }
  const bool avx2 = static_cast<int>(ActiveIsa()) >= static_cast<int>(Isa::kAvx2);
  if (w.layout.format == QuantFormat::kLattice) return PackLattice({w}, kernel);
  if (kernel == QuantKernel::kLatticeDecode) {
    return absl::UnimplementedError("kernel lattice_decode runs only the lattice format");
  }
  std::unique_ptr<PackedQuantMatrix> packed;
  switch (kernel) {
    case QuantKernel::kAuto:
      // The faster design per case, as measured (docs/PERFORMANCE.md).
      if (avx2) packed = PackQuantLutAvx2(w);
      if (avx2 && packed == nullptr) packed = PackQuantCentroidAvx2(w);
      if (packed == nullptr) packed = reference::PackQuantReference(w);
      break;
    case QuantKernel::kReference:
      packed = reference::PackQuantReference(w);
      break;
    case QuantKernel::kCentroidTable:
      if (avx2) packed = PackQuantCentroidAvx2(w);
      break;
    case QuantKernel::kActivationLut:
      if (avx2) packed = PackQuantLutAvx2(w);
      break;
    case QuantKernel::kLatticeDecode:
      break;
  }
  if (packed == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "kernel ", std::string(QuantKernelName(kernel)), " cannot run ",
        std::string(QuantFormatName(w.layout.format)), " b=", w.layout.bits,
        " group_size=", w.layout.group_size, " under ISA ", std::string(IsaName(ActiveIsa()))));
  }
  return packed;
}

absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> PackedQuantMatrix::PackStacked(
    const std::vector<QuantMatrixView>& parts) {
  return PackStacked(parts, QuantKernel::kAuto);
}

absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> PackedQuantMatrix::PackStacked(
    const std::vector<QuantMatrixView>& parts, QuantKernel kernel) {
  if (parts.empty()) return absl::InvalidArgumentError("PackStacked of no matrices");
  if (parts[0].layout.format == QuantFormat::kLattice) return PackLattice(parts, kernel);
  QuantLayout stacked = parts[0].layout;
  stacked.rows = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const QuantLayout& l = parts[i].layout;
    if (absl::Status s = ValidateQuantLayout(l); !s.ok()) return s;
    if (l.format != stacked.format || l.bits != stacked.bits || l.cols != stacked.cols ||
        l.group_size != stacked.group_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("PackStacked: part ", i, " differs from part 0 in more than rows"));
    }
    stacked.rows += l.rows;
  }
  // Rows start on byte boundaries and params are per row, so stacking is a
  // concatenation of both arrays in the canonical layout.
  std::vector<uint8_t> codes(static_cast<size_t>(stacked.CodeBytes()));
  std::vector<uint16_t> params(static_cast<size_t>(stacked.ParamCount()));
  size_t code_off = 0, param_off = 0;
  for (const QuantMatrixView& p : parts) {
    std::memcpy(codes.data() + code_off, p.codes, p.layout.CodeBytes());
    std::memcpy(params.data() + param_off, p.params, p.layout.ParamCount() * sizeof(uint16_t));
    code_off += p.layout.CodeBytes();
    param_off += p.layout.ParamCount();
  }
  return Pack(QuantMatrixView{stacked, codes.data(), params.data()}, kernel);
}

QuantActivations::QuantActivations() : tables_(std::make_unique<Tables>()) {}
QuantActivations::~QuantActivations() = default;

void QuantActivations::Prepare(const float* x, int64_t m, int64_t cols, ThreadPool* pool) {
  x_ = x;
  m_ = m;
  cols_ = cols;
  has_tables_ = static_cast<int>(ActiveIsa()) >= static_cast<int>(Isa::kAvx2) && m > 0;
  if (has_tables_) BuildLutTables(x, m, cols, tables_.get(), pool);
}

void QuantLinear(const QuantActivations& x, const PackedQuantMatrix& w, const float* bias, float* y,
                 ThreadPool* pool) {
  if (x.m() <= 0) return;
  w.Run(x, bias, y, pool);
}

}  // namespace lcd::kernels
