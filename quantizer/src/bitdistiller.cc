// BitDistiller's INT-b / NF3 group quantizers and asymmetric clipping search
// (contract in lcd/quantizer/bitdistiller.h).
#include "lcd/quantizer/bitdistiller.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "src/quant_common.h"

namespace lcd::quantizer {
namespace {

constexpr uint16_t kFp16SmallestSubnormal = 0x0001;  // 2^-24
constexpr uint16_t kFp16Inf = 0x7C00;
constexpr int kClipGrid = 10;         // Shrink steps 0, .05, ..., .45 (reference: n_grid 20, max_shrink .5).
constexpr float kMinRange = 1e-5f;    // The reference's scales clamp.

// The NF3 code of w in a group with positive scale sp = |hi| and negative
// scale sn = |lo|.
uint8_t Nf3Code(float w, float sp, float sn) {
  if (w >= 0.0f) {
    const float r = sp > 0.0f ? w / sp : 0.0f;
    uint8_t k = 3;
    for (int t = 3; t < 7; ++t) {
      if (r >= kNf3Thresholds[t]) k = static_cast<uint8_t>(t + 1);
    }
    return k;
  }
  const float r = w / sn;  // w < 0 implies lo < 0, so sn > 0.
  uint8_t k = 0;
  for (int t = 0; t < 3; ++t) {
    if (r >= kNf3Thresholds[t]) k = static_cast<uint8_t>(t + 1);
  }
  return k;
}

// d^T H d for a symmetric n x n block H (row stride ld): the diagonal plus
// twice the strict upper triangle, four independent partial sums per row so
// the compiler can keep them in one vector register (about 4x faster than
// the plain double loop; the order of the sums differs from numpy's, which
// the tests allow for).
double QuadraticForm(const double* h, int64_t ld, const double* d, int64_t n) {
  double err = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double* hi = h + i * ld;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int64_t j = i + 1;
    for (; j + 4 <= n; j += 4) {
      s0 += hi[j] * d[j];
      s1 += hi[j + 1] * d[j + 1];
      s2 += hi[j + 2] * d[j + 2];
      s3 += hi[j + 3] * d[j + 3];
    }
    for (; j < n; ++j) s0 += hi[j] * d[j];
    err += d[i] * (hi[i] * d[i] + 2.0 * ((s0 + s1) + (s2 + s3)));
  }
  return err;
}

absl::Status Validate(const char* what, const float* w, int64_t rows, int64_t cols, int bits, int64_t group_size) {
  const BitDistillerFormat f = BitDistillerFormatFor(bits);
  if (f == BitDistillerFormat::kNf3) {
    return internal::ValidateMatrixArgs(what, w, rows, cols, bits, 3, 3, group_size);
  }
  return internal::ValidateMatrixArgs(what, w, rows, cols, bits, 2, 8, group_size);
}

}  // namespace

bool BitDistillerQuantizeGroup(BitDistillerFormat f, int bits, const float* w, int64_t n, uint8_t* codes,
                               uint16_t* params) {
  float lo = w[0], hi = w[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  if (f == BitDistillerFormat::kNf3) {
    const float sp = std::abs(hi), sn = std::abs(lo);
    for (int k = 0; k < 8; ++k) {
      params[k] = kernels::FloatToFp16(kNf3Levels[k] * (k < 3 ? sn : sp));
      if ((params[k] & 0x7FFF) >= kFp16Inf) return false;
    }
    for (int64_t i = 0; i < n; ++i) codes[i] = Nf3Code(w[i], sp, sn);
    return true;
  }
  const int maxq = (1 << bits) - 1;
  uint16_t scale16 = kernels::FloatToFp16(std::max(hi - lo, kMinRange) / static_cast<float>(maxq));
  if ((scale16 & 0x7FFF) >= kFp16Inf) return false;
  if (scale16 == 0) scale16 = kFp16SmallestSubnormal;
  const float scale = kernels::Fp16ToFloat(scale16);
  const float zero = std::clamp(-std::round(lo / scale), 0.0f, static_cast<float>(maxq));
  params[0] = scale16;
  params[1] = kernels::FloatToFp16(zero);  // An integer <= 255: exact.
  for (int64_t i = 0; i < n; ++i) {
    codes[i] = static_cast<uint8_t>(std::clamp(std::round(w[i] / scale) + zero, 0.0f, static_cast<float>(maxq)));
  }
  return true;
}

float BitDistillerDecodeCode(BitDistillerFormat f, const uint16_t* params, uint8_t code) {
  if (f == BitDistillerFormat::kNf3) return kernels::Fp16ToFloat(params[code]);
  return kernels::Fp16ToFloat(params[0]) * (static_cast<float>(code) - kernels::Fp16ToFloat(params[1]));
}

absl::StatusOr<BitDistillerClip> BitDistillerClipSearch(const float* w, int64_t rows, int64_t cols, int bits,
                                                        int64_t group_size, const InputGram* gram,
                                                        kernels::ThreadPool* pool) {
  LCD_RETURN_IF_ERROR(Validate("bitdistiller clip", w, rows, cols, bits, group_size));
  if (gram != nullptr && (gram->cols != cols || static_cast<int64_t>(gram->xtx.size()) != cols * cols)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bitdistiller clip: E[x x^T] is ", gram->cols, " wide, the weight has ", cols, " columns"));
  }
  const BitDistillerFormat f = BitDistillerFormatFor(bits);
  BitDistillerClip clip;
  clip.rows = rows;
  clip.groups = (cols + group_size - 1) / group_size;
  const size_t cells = static_cast<size_t>(rows * clip.groups);
  clip.a_step.assign(cells, 0);
  clip.b_step.assign(cells, 0);
  clip.lo.assign(cells, 0.0f);
  clip.hi.assign(cells, 0.0f);
  clip.err.assign(cells, 0.0);
  clip.err_noclip.assign(cells, 0.0);
  std::vector<uint8_t> overflow(static_cast<size_t>(rows), 0);
  kernels::ParallelFor(pool, rows, /*min_chunk=*/1, [&](int64_t begin, int64_t end) {
    std::vector<float> cur(static_cast<size_t>(group_size));
    std::vector<double> d(static_cast<size_t>(group_size));
    std::vector<uint8_t> codes(static_cast<size_t>(group_size));
    uint16_t params[8];
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t g = 0; g < clip.groups; ++g) {
        const int64_t c0 = g * group_size, n = std::min(group_size, cols - c0);
        const float* wg = w + r * cols + c0;
        const size_t cell = static_cast<size_t>(r * clip.groups + g);
        float lo = wg[0], hi = wg[0];
        for (int64_t i = 1; i < n; ++i) {
          lo = std::min(lo, wg[i]);
          hi = std::max(hi, wg[i]);
        }
        clip.lo[cell] = lo;
        clip.hi[cell] = hi;
        if (gram == nullptr) continue;
        double best = std::numeric_limits<double>::infinity();
        for (int a = 0; a < kClipGrid; ++a) {
          const float hi_c = hi * static_cast<float>(1.0 - a / 20.0);
          for (int b = 0; b < kClipGrid; ++b) {
            const float lo_c = lo * static_cast<float>(1.0 - b / 20.0);
            for (int64_t i = 0; i < n; ++i) cur[i] = std::min(std::max(wg[i], lo_c), hi_c);
            if (!BitDistillerQuantizeGroup(f, bits, cur.data(), n, codes.data(), params)) {
              overflow[r] = 1;
              continue;
            }
            for (int64_t i = 0; i < n; ++i) {
              d[i] = static_cast<double>(BitDistillerDecodeCode(f, params, codes[i])) - static_cast<double>(wg[i]);
            }
            const double err = QuadraticForm(gram->xtx.data() + c0 * cols + c0, cols, d.data(), n);
            if (a == 0 && b == 0) clip.err_noclip[cell] = err;
            if (err < best) {
              best = err;
              clip.a_step[cell] = static_cast<uint8_t>(a);
              clip.b_step[cell] = static_cast<uint8_t>(b);
              clip.lo[cell] = lo_c;
              clip.hi[cell] = hi_c;
            }
          }
        }
        clip.err[cell] = best;
      }
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    if (overflow[r] != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("bitdistiller clip: row ", r, " has a group whose range needs a scale beyond fp16"));
    }
  }
  return clip;
}

void ApplyBitDistillerClip(const BitDistillerClip& clip, float* w, int64_t cols, int64_t group_size) {
  for (int64_t r = 0; r < clip.rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const size_t cell = static_cast<size_t>(r * clip.groups + c / group_size);
      float& x = w[r * cols + c];
      x = std::min(std::max(x, clip.lo[cell]), clip.hi[cell]);
    }
  }
}

absl::StatusOr<QuantizedMatrix> QuantizeBitDistiller(const float* w, int64_t rows, int64_t cols, int bits,
                                                     int64_t group_size, kernels::ThreadPool* pool) {
  LCD_RETURN_IF_ERROR(Validate("bitdistiller", w, rows, cols, bits, group_size));
  const BitDistillerFormat f = BitDistillerFormatFor(bits);
  const int np = BitDistillerParamsPerGroup(f);
  QuantizedMatrix q = internal::AllocateQuantized(
      f == BitDistillerFormat::kNf3 ? kernels::QuantFormat::kCodebook : kernels::QuantFormat::kAffine, bits, rows,
      cols, group_size);
  const int64_t groups = q.layout.groups(), row_bytes = q.layout.CodeRowBytes();
  std::vector<uint8_t> overflow(static_cast<size_t>(rows), 0);
  kernels::ParallelFor(pool, rows, /*min_chunk=*/4, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> codes(static_cast<size_t>(group_size));
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * group_size, n = std::min(group_size, cols - c0);
        if (!BitDistillerQuantizeGroup(f, bits, w + r * cols + c0, n, codes.data(),
                                       q.params.data() + (r * groups + g) * np)) {
          overflow[r] = 1;
          continue;
        }
        for (int64_t i = 0; i < n; ++i) internal::PutCode(q.codes.data() + r * row_bytes, c0 + i, bits, codes[i]);
      }
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    if (overflow[r] != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("bitdistiller: row ", r, " has a group whose range needs a scale beyond fp16 (max 65504)"));
    }
  }
  return q;
}

}  // namespace lcd::quantizer
