// The lattice format's packed matrix (quant_linear.h, kLattice and
// kLatticeDecode): every part keeps its canonical codes (plus 8 zero bytes so
// 64-bit loads never read past them), its scales and lattice parameters
// widened to fp32, and per-group bit offsets. Run decodes each output row
// once per call into a per-chunk scratch row and dots it with every input
// row: with the AVX2 decoder (d % 8 == 0) or, for kReference, with
// DecodeLatticeSubvector and a scalar dot, the scalar twin.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpu/quant_linear_cpu.h"
#include "src/quant_linear_internal.h"

namespace lcd::kernels {
namespace {

struct LatticePart {
  QuantLayout layout;
  int64_t row0 = 0;
  int64_t row_bytes = 0;
  std::vector<uint8_t> codes;  // [rows][row_bytes] + 8 zero bytes
  std::vector<float> scales;   // [rows][groups]
  std::vector<uint8_t> bits;   // [groups]
  std::vector<int64_t> bit_offset;
  std::vector<float> gen, gen_t, mu, ln1p_mu;

  LatticePackedView View() const {
    LatticePackedView v;
    v.d = layout.lattice_dim;
    v.cols = layout.cols;
    v.group_size = layout.group_size;
    v.groups = layout.groups();
    v.bits = bits.data();
    v.bit_offset = bit_offset.data();
    v.gen = gen.data();
    v.gen_t = gen_t.data();
    v.mu = mu.data();
    v.ln1p_mu = ln1p_mu.data();
    return v;
  }
};

LatticePart MakePart(const QuantMatrixView& w, int64_t row0) {
  LatticePart p;
  const QuantLayout& l = w.layout;
  p.layout = l;
  p.row0 = row0;
  p.row_bytes = l.CodeRowBytes();
  p.codes.assign(w.codes, w.codes + l.CodeBytes());
  p.codes.resize(p.codes.size() + 8, 0);
  p.scales.resize(static_cast<size_t>(l.rows * l.groups()));
  for (size_t i = 0; i < p.scales.size(); ++i) p.scales[i] = Fp16ToFloat(w.params[i]);
  const int d = l.lattice_dim;
  const int64_t P = l.LatticeParamsPerGroup();
  for (int64_t k = 0; k < l.groups(); ++k) {
    p.bits.push_back(static_cast<uint8_t>(l.GroupBits(k)));
    p.bit_offset.push_back(l.CodeBitOffset(k * l.group_size));
    const uint16_t* g = w.lattice + k * P;
    for (int i = 0; i < d * d; ++i) p.gen.push_back(Fp16ToFloat(g[i]));
    for (int j = 0; j < d; ++j) {
      for (int i = 0; i < d; ++i) p.gen_t.push_back(Fp16ToFloat(g[i * d + j]));
    }
    const float mu = Fp16ToFloat(g[P - 1]);
    p.mu.push_back(mu);
    p.ln1p_mu.push_back(std::log1p(mu));
  }
  return p;
}

// Row r of part p into out[cols], scalar: DecodeLatticeSubvector per sub-vector.
void DecodeRowScalar(const LatticePart& p, int64_t r, float* out) {
  const QuantLayout& l = p.layout;
  const int d = l.lattice_dim;
  const uint8_t* row = p.codes.data() + r * p.row_bytes;
  int q[32];
  for (int64_t k = 0; k < l.groups(); ++k) {
    const int b = p.bits[k];
    const int64_t c0 = k * l.group_size;
    const int64_t len = std::min(l.cols, c0 + l.group_size) - c0;
    for (int64_t t = 0; t < len; t += d) {
      const int n = static_cast<int>(std::min<int64_t>(d, len - t));
      for (int j = 0; j < n; ++j) q[j] = ReadCodeBits(row, p.bit_offset[k] + (t + j) * b, b);
      DecodeLatticeSubvector(p.gen.data() + k * d * d, d, p.mu[k], p.ln1p_mu[k],
                             p.scales[r * l.groups() + k], b, q, n, out + c0 + t);
    }
  }
}

class LatticePackedQuantMatrix final : public PackedQuantMatrix {
 public:
  LatticePackedQuantMatrix(const QuantLayout& layout, std::vector<LatticePart> parts, bool avx2)
      : PackedQuantMatrix(layout), parts_(std::move(parts)), avx2_(avx2) {}

  QuantKernel kernel() const override { return avx2_ ? QuantKernel::kLatticeDecode : QuantKernel::kReference; }
  Isa isa() const override { return avx2_ ? Isa::kAvx2 : Isa::kReference; }
  uint64_t BytesRead() const override {
    uint64_t n = 0;
    for (const LatticePart& p : parts_) {
      n += p.codes.size() - 8 + p.scales.size() * sizeof(float) +
           (p.gen.size() + p.mu.size()) * sizeof(float);
    }
    return n;
  }
  std::string Describe() const override {
    return absl::StrCat(avx2_ ? "avx2 lattice_decode" : "reference lattice", " b=", layout_.bits,
                        " d=", layout_.lattice_dim, " g=", layout_.group_size, " parts=", parts_.size(),
                        ", rows decoded to fp32 once per call");
  }

 protected:
  void Run(const QuantActivations& x, const float* bias, float* y, ThreadPool* pool) const override {
    const int64_t rows = layout_.rows;
    const int64_t cols = layout_.cols;
    const int64_t m = x.m();
    ParallelFor(pool, rows, 4, [&](int64_t begin, int64_t end) {
      std::vector<float> w(static_cast<size_t>(cols));
      size_t pi = 0;
      for (int64_t r = begin; r < end; ++r) {
        while (r >= parts_[pi].row0 + parts_[pi].layout.rows) ++pi;
        const LatticePart& p = parts_[pi];
        const int64_t pr = r - p.row0;
        if (avx2_) {
          avx2::DecodeLatticeRow(p.View(), p.codes.data() + pr * p.row_bytes,
                                 p.scales.data() + pr * p.layout.groups(), w.data());
          avx2::DotRows(w.data(), x.x(), m, cols, y + r, rows);
        } else {
          DecodeRowScalar(p, pr, w.data());
          for (int64_t t = 0; t < m; ++t) {
            const float* xt = x.x() + t * cols;
            float acc = 0.0f;
            for (int64_t c = 0; c < cols; ++c) acc += xt[c] * w[c];
            y[t * rows + r] = acc;
          }
        }
        if (bias != nullptr) {
          for (int64_t t = 0; t < m; ++t) y[t * rows + r] += bias[r];
        }
      }
    });
  }

 private:
  std::vector<LatticePart> parts_;
  bool avx2_;
};

}  // namespace

void DecodeLatticeRow(const QuantMatrixView& w, int64_t r, float* out) {
  // One part of one row: the packer's scalar path on a view-backed copy would
  // copy the whole matrix, so decode straight from the canonical arrays.
  const QuantLayout& l = w.layout;
  const int d = l.lattice_dim;
  const int64_t P = l.LatticeParamsPerGroup();
  const uint8_t* row = w.codes + r * l.CodeRowBytes();
  std::vector<float> g(static_cast<size_t>(d) * d);
  int q[32];
  int64_t bit = 0;
  for (int64_t k = 0; k < l.groups(); ++k) {
    const int b = l.GroupBits(k);
    const uint16_t* lp = w.lattice + k * P;
    for (int i = 0; i < d * d; ++i) g[i] = Fp16ToFloat(lp[i]);
    const float mu = Fp16ToFloat(lp[P - 1]);
    const float s = Fp16ToFloat(w.params[r * l.groups() + k]);
    const int64_t c0 = k * l.group_size;
    const int64_t len = std::min(l.cols, c0 + l.group_size) - c0;
    for (int64_t t = 0; t < len; t += d) {
      const int n = static_cast<int>(std::min<int64_t>(d, len - t));
      for (int j = 0; j < n; ++j, bit += b) q[j] = ReadCodeBits(row, bit, b);
      DecodeLatticeSubvector(g.data(), d, mu, std::log1p(mu), s, b, q, n, out + c0 + t);
    }
  }
}

absl::StatusOr<std::unique_ptr<PackedQuantMatrix>> PackLattice(const std::vector<QuantMatrixView>& parts,
                                                               QuantKernel kernel) {
  QuantLayout stacked = parts[0].layout;
  stacked.rows = 0;
  bool all_d8 = true;
  for (size_t i = 0; i < parts.size(); ++i) {
    const QuantLayout& l = parts[i].layout;
    if (absl::Status s = ValidateQuantLayout(l); !s.ok()) return s;
    if (l.format != QuantFormat::kLattice || l.cols != stacked.cols) {
      return absl::InvalidArgumentError(
          absl::StrCat("PackStacked: part ", i, " is not a lattice matrix with ", stacked.cols, " columns"));
    }
    if (parts[i].codes == nullptr || parts[i].params == nullptr || parts[i].lattice == nullptr) {
      return absl::InvalidArgumentError("lattice matrix without codes, params or lattice parameters");
    }
    all_d8 = all_d8 && l.lattice_dim % 8 == 0;
    stacked.rows += l.rows;
  }
  const bool avx2_ok = static_cast<int>(ActiveIsa()) >= static_cast<int>(Isa::kAvx2) && all_d8;
  bool avx2 = false;
  switch (kernel) {
    case QuantKernel::kAuto:
      avx2 = avx2_ok;
      break;
    case QuantKernel::kReference:
      break;
    case QuantKernel::kLatticeDecode:
      if (!avx2_ok) {
        return absl::UnimplementedError(absl::StrCat("kernel lattice_decode needs AVX2 and d % 8 == 0 (d = ",
                                                     stacked.lattice_dim, ", ISA ", std::string(IsaName(ActiveIsa())), ")"));
      }
      avx2 = true;
      break;
    default:
      return absl::UnimplementedError(absl::StrCat("kernel ", std::string(QuantKernelName(kernel)),
                                                   " cannot run the lattice format"));
  }
  std::vector<LatticePart> packed;
  int64_t row0 = 0;
  for (const QuantMatrixView& w : parts) {
    packed.push_back(MakePart(w, row0));
    row0 += w.layout.rows;
  }
  return std::unique_ptr<PackedQuantMatrix>(new LatticePackedQuantMatrix(stacked, std::move(packed), avx2));
}

}  // namespace lcd::kernels
