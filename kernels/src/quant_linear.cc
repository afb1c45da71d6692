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
  }
  return 0;
}

absl::Status ValidateQuantLayout(const QuantLayout& layout) {
  int max_bits = 0;
  switch (layout.format) {
    case QuantFormat::kCodebook:
    case QuantFormat::kBinaryCoded:
      max_bits = 4;
      break;
    case QuantFormat::kAffine:
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
  // Offsets are int64 byte/bit counts; refuse sizes whose bit count overflows.
  if (layout.cols > (int64_t{1} << 40) / layout.bits || layout.rows > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError("quantized matrix too large");
  }
  return absl::OkStatus();
}

int CanonicalCode(const QuantMatrixView& w, int64_t row, int64_t col) {
  const uint8_t* r = w.codes + row * w.layout.CodeRowBytes();
  return ReadCodeBits(r, col * w.layout.bits, w.layout.bits);
}

absl::Status CheckCodePadding(const QuantMatrixView& w) {
  const QuantLayout& l = w.layout;
  const int64_t used_bits = l.cols * l.bits;
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
  }
  return 0.0f;
}

void DequantizeRows(const QuantMatrixView& w, int64_t row_begin, int64_t row_end, float* out) {
  const QuantLayout& l = w.layout;
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
