// Packers and owning PackedQuantMatrix classes of the AVX2 designs
// (layouts in cpu/quant_linear_cpu.h). Packing runs once per matrix at load,
// in plain scalar code; the hot loops are in cpu/quant_*_avx2.cc.
#include "cpu/quant_linear_cpu.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/quant_linear_internal.h"

namespace lcd::kernels {
namespace {

// 64-byte aligned, zero-initialised bytes (vector loads never split a cache
// line). `pad` extra zero bytes allow over-reading the tail.
class AlignedBytes {
 public:
  AlignedBytes(size_t n, size_t pad) : size_(n) {
    const size_t total = (n + pad + 63) / 64 * 64;
    data_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, total)));
    std::memset(data_.get(), 0, total);
  }
  uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  size_t size_;
  std::unique_ptr<uint8_t, Free> data_;
};

std::string LayoutName(const QuantLayout& l) {
  return absl::StrCat(std::string(QuantFormatName(l.format)), " b=", l.bits, " g=", l.group_size);
}

// (row within the tile, bit plane) that byte 2k + h of vector n holds.
void LutSlot(QuantFormat format, int bits, int n, int h, int k, int* row, int* plane) {
  if (format == QuantFormat::kCodebook) {  // b = 2
    *row = k + 16 * h, *plane = n;
    return;
  }
  switch (bits) {
    case 1:
      *row = k + 16 * h, *plane = 0;
      return;
    case 2:
      *row = k, *plane = h;
      return;
    case 3:
      if (n < 2) {
        *row = k + 16 * n, *plane = h;
      } else {
        *row = k + 16 * h, *plane = 2;
      }
      return;
    default:
      *row = k, *plane = 2 * n + h;
      return;
  }
}

class LutPackedQuantMatrix final : public PackedQuantMatrix {
 public:
  explicit LutPackedQuantMatrix(const QuantMatrixView& w) : PackedQuantMatrix(w.layout) {
    const QuantLayout& l = w.layout;
    LutPackedView& v = view_;
    v.format = l.format;
    v.bits = l.bits;
    const bool cb = l.format == QuantFormat::kCodebook;
    v.tile_rows = (l.bits == 1 || l.bits == 3 || cb) ? 32 : 16;
    v.vecs = l.bits == 3 ? 3 : ((l.bits == 4 || cb) ? 2 : 1);
    v.rows = l.rows;
    v.cols = l.cols;
    v.group_size = l.group_size;
    v.groups = l.groups();
    v.tiles = (l.rows + v.tile_rows - 1) / v.tile_rows;
    v.blocks32 = (l.cols + 31) / 32;
    const int64_t P = l.ParamsPerGroup();
    codes_ = std::make_unique<AlignedBytes>(v.tiles * v.blocks32 * 4 * v.vecs * 32, 0);
    params_ = std::make_unique<AlignedBytes>(v.tiles * v.groups * P * v.tile_rows * 2, 0);
    uint8_t* out = codes_->data();
    uint16_t* pout = reinterpret_cast<uint16_t*>(params_->data());
    // Packing runs at model load (~45M weights per Llama-2-7B MLP matrix), so
    // codes are read 64 bits at a time and bit planes gathered 8 columns at a
    // time with a multiply: ((x >> p) & 0x01..01) * 0x0102040810204080 >> 56
    // moves bit p of byte t to bit t.
    const int64_t stride = v.blocks32 * 32, chunks = v.blocks32 * 4;
    const int64_t row_bytes = l.CodeRowBytes();
    const uint64_t mask = (uint64_t{1} << l.bits) - 1;
    std::vector<uint8_t> code(static_cast<size_t>(v.tile_rows * stride));
    std::vector<uint8_t> planes(static_cast<size_t>(v.tile_rows * l.bits * chunks));
    std::vector<uint8_t> row_buf(static_cast<size_t>(row_bytes + 8));
    for (int64_t tile = 0; tile < v.tiles; ++tile) {
      std::fill(code.begin(), code.end(), 0);
      for (int r = 0; r < v.tile_rows; ++r) {
        const int64_t row = tile * v.tile_rows + r;
        if (row >= l.rows) break;
        std::memcpy(row_buf.data(), w.codes + row * row_bytes, row_bytes);
        uint8_t* cr = code.data() + r * stride;
        for (int64_t c = 0; c < l.cols; ++c) {
          const int64_t bit = c * l.bits;
          uint64_t word;
          std::memcpy(&word, row_buf.data() + (bit >> 3), 8);
          cr[c] = static_cast<uint8_t>((word >> (bit & 7)) & mask);
        }
        for (int64_t g = 0; g < v.groups; ++g) {
          for (int64_t p = 0; p < P; ++p) {
            pout[((tile * v.groups + g) * P + p) * v.tile_rows + r] =
                w.params[(row * v.groups + g) * P + p];
          }
        }
      }
      for (int r = 0; r < v.tile_rows; ++r) {
        for (int p = 0; p < l.bits; ++p) {
          for (int64_t ch = 0; ch < chunks; ++ch) {
            uint64_t x;
            std::memcpy(&x, code.data() + r * stride + ch * 8, 8);
            planes[(r * l.bits + p) * chunks + ch] = static_cast<uint8_t>(
                (((x >> p) & 0x0101010101010101ull) * 0x0102040810204080ull) >> 56);
          }
        }
      }
      for (int64_t ch = 0; ch < chunks; ++ch) {  // ch = block * 4 + chunk
        for (int n = 0; n < v.vecs; ++n) {
          for (int k = 0; k < 16; ++k) {
            for (int h = 0; h < 2; ++h) {
              int r, plane;
              LutSlot(l.format, l.bits, n, h, k, &r, &plane);
              out[2 * k + h] = planes[(r * l.bits + plane) * chunks + ch];
            }
          }
          out += 32;
        }
      }
    }
    view_.codes = codes_->data();
    view_.params = pout;
  }

  uint64_t BytesRead() const override { return codes_->size() + params_->size(); }
  std::string Describe() const override {
    return absl::StrCat("avx2 activation_lut ", LayoutName(layout_), " rows x", view_.tile_rows,
                        " int8 vpshufb tables");
  }
  QuantKernel kernel() const override { return QuantKernel::kActivationLut; }
  Isa isa() const override { return Isa::kAvx2; }

 protected:
  void Run(const QuantActivations& x, const float* bias, float* y,
           ThreadPool* pool) const override {
    const QuantActivations::Tables* t = x.tables();
    QuantActivations::Tables local;
    if (t == nullptr || t->m != x.m() || t->cols != layout_.cols) {
      BuildLutTables(x.x(), x.m(), layout_.cols, &local, pool);
      t = &local;
    }
    const LutTablesView tv{t->blocks32, t->lut.data(), t->scale.data(), t->sum.data()};
    avx2::LutLinear(view_, tv, x.m(), bias, y, pool);
  }

 private:
  LutPackedView view_;
  std::unique_ptr<AlignedBytes> codes_;
  std::unique_ptr<AlignedBytes> params_;
};

class CentroidPackedQuantMatrix final : public PackedQuantMatrix {
 public:
  explicit CentroidPackedQuantMatrix(const QuantMatrixView& w)
      : PackedQuantMatrix(w.layout),
        // Padding: 4-byte code loads and 16-byte param loads past the end.
        codes_(std::make_unique<AlignedBytes>(w.layout.CodeBytes(), 8)),
        params_(std::make_unique<AlignedBytes>(w.layout.ParamCount() * 2, 16)) {
    std::memcpy(codes_->data(), w.codes, codes_->size());
    std::memcpy(params_->data(), w.params, params_->size());
    view_ = {layout_, codes_->data(), reinterpret_cast<const uint16_t*>(params_->data())};
  }

  uint64_t BytesRead() const override { return codes_->size() + params_->size(); }
  std::string Describe() const override {
    return absl::StrCat("avx2 centroid_table ", LayoutName(layout_),
                        " canonical codes, vpermps tables");
  }
  QuantKernel kernel() const override { return QuantKernel::kCentroidTable; }
  Isa isa() const override { return Isa::kAvx2; }

 protected:
  void Run(const QuantActivations& x, const float* bias, float* y,
           ThreadPool* pool) const override {
    avx2::CentroidLinear(view_, x.x(), x.m(), bias, y, pool);
  }

 private:
  CentroidPackedView view_;
  std::unique_ptr<AlignedBytes> codes_;
  std::unique_ptr<AlignedBytes> params_;
};

}  // namespace

bool QuantLutSupports(const QuantLayout& l) {
  if (l.group_size % 32 != 0) return false;
  switch (l.format) {
    case QuantFormat::kCodebook:
      return l.bits == 2;
    case QuantFormat::kAffine:
      return l.bits >= 2 && l.bits <= 4;
    case QuantFormat::kBinaryCoded:
      return l.bits <= 2;
    case QuantFormat::kLattice:
      return false;
  }
  return false;
}

bool QuantCentroidSupports(const QuantLayout& l) {
  const bool bits_ok = (l.format != QuantFormat::kLattice && l.bits <= 4) || (l.format == QuantFormat::kAffine && l.bits == 8);
  return bits_ok && l.group_size % 8 == 0;
}

std::unique_ptr<PackedQuantMatrix> PackQuantLutAvx2(const QuantMatrixView& w) {
  if (!QuantLutSupports(w.layout)) return nullptr;
  return std::make_unique<LutPackedQuantMatrix>(w);
}

std::unique_ptr<PackedQuantMatrix> PackQuantCentroidAvx2(const QuantMatrixView& w) {
  if (!QuantCentroidSupports(w.layout)) return nullptr;
  return std::make_unique<CentroidPackedQuantMatrix>(w);
}

void BuildLutTables(const float* x, int64_t m, int64_t cols, QuantActivations::Tables* t,
                    ThreadPool* pool) {
  t->m = m;
  t->cols = cols;
  t->blocks32 = (cols + 31) / 32;
  t->lut.resize(static_cast<size_t>(m * t->blocks32 * 8 * 16));
  t->scale.resize(static_cast<size_t>(m * t->blocks32));
  t->sum.resize(static_cast<size_t>(m * t->blocks32));
  avx2::BuildLutTables(x, m, cols, t->blocks32, t->lut.data(), t->scale.data(), t->sum.data());
}

}  // namespace lcd::kernels
