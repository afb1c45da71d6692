// GPTQ for one matrix (contract in lcd/quantizer/gptq.h).
#include "lcd/quantizer/gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <cblas.h>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/quant_linear.h"
#include "src/quant_common.h"

namespace lcd::quantizer {
namespace {

constexpr uint16_t kFp16SmallestSubnormal = 0x0001;  // 2^-24
constexpr uint16_t kFp16Inf = 0x7C00;
constexpr int64_t kCholeskyBlock = 64;
constexpr int64_t kRowChunk = 16;  // Rows sharing one pass over U.

// In-place lower Cholesky of the row-major n x n matrix a (lower triangle
// read and written; the strict upper triangle is left as it was). Returns
// the first column whose pivot is not positive, or -1.
int64_t CholeskyLower(double* a, int64_t n) {
  for (int64_t k0 = 0; k0 < n; k0 += kCholeskyBlock) {
    const int64_t kb = std::min(kCholeskyBlock, n - k0);
    // Diagonal block, unblocked (its trailing updates from earlier panels are done).
    for (int64_t j = k0; j < k0 + kb; ++j) {
      double d = a[j * n + j];
      for (int64_t k = k0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
      if (!(d > 0.0) || !std::isfinite(d)) return j;
      const double ljj = std::sqrt(d);
      a[j * n + j] = ljj;
      for (int64_t i = j + 1; i < k0 + kb; ++i) {
        double s = a[i * n + j];
        for (int64_t k = k0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
        a[i * n + j] = s / ljj;
      }
    }
    const int64_t m = n - k0 - kb;
    if (m == 0) break;
    // Panel below the block: A21 <- A21 L11^-T.
    double* l11 = a + k0 * n + k0;
    double* a21 = a + (k0 + kb) * n + k0;
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, static_cast<int>(m),
                static_cast<int>(kb), 1.0, l11, static_cast<int>(n), a21, static_cast<int>(n));
    // Trailing matrix: A22 <- A22 - A21 A21^T (lower triangle).
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, static_cast<int>(m), static_cast<int>(kb), -1.0, a21,
                static_cast<int>(n), 1.0, a + (k0 + kb) * n + k0 + kb, static_cast<int>(n));
  }
  return -1;
}

// QuantizeRtn's grid of one group from its current weights, in QuantizeRtn's
// fp32 arithmetic (the weights rounded to fp32 first), so that with no error
// feedback GPTQ is QuantizeRtn bit for bit.
struct Grid {
  float scale = 0.0f;
  float zero = 0.0f;
  uint16_t scale16 = 0;
  bool overflow = false;
};

Grid MakeGrid(const double* w, int64_t n, int maxq) {
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, static_cast<float>(w[i]));
    hi = std::max(hi, static_cast<float>(w[i]));
  }
  Grid g;
  g.scale16 = kernels::FloatToFp16((hi - lo) / static_cast<float>(maxq));
  if ((g.scale16 & 0x7FFF) >= kFp16Inf) {
    g.overflow = true;
    return g;
  }
  if (g.scale16 == 0) g.scale16 = kFp16SmallestSubnormal;
  g.scale = kernels::Fp16ToFloat(g.scale16);
  g.zero = std::clamp(std::round(-lo / g.scale), 0.0f, static_cast<float>(maxq));
  return g;
}

// The code of w on grid g (QuantizeRtn's formula on fp32(w)).
inline float Code(double w, const Grid& g, int maxq) {
  return std::clamp(std::round(static_cast<float>(w) / g.scale) + g.zero, 0.0f, static_cast<float>(maxq));
}

}  // namespace

absl::StatusOr<GptqHessian> PrepareGptqHessian(const double* h, int64_t cols, const GptqOptions& options) {
  if (cols < 1) return absl::InvalidArgumentError(absl::StrCat("gptq: Hessian width must be >= 1, got ", cols));
  if (h == nullptr) return absl::InvalidArgumentError("gptq: Hessian is null");
  if (!(options.percdamp >= 0.0) || !std::isfinite(options.percdamp)) {
    return absl::InvalidArgumentError(absl::StrCat("gptq: dampening must be finite and >= 0, got ", options.percdamp));
  }
  if (options.block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("gptq: block size must be >= 1, got ", options.block_size));
  }
  const int64_t n = cols;
  for (int64_t i = 0; i < n * n; ++i) {
    if (!std::isfinite(h[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("gptq: non-finite Hessian entry at (", i / n, ", ", i % n, ")"));
    }
  }
  GptqHessian out;
  out.cols = n;
  out.act_order = options.act_order;
  out.block_size = options.block_size;
  out.dead.assign(static_cast<size_t>(n), 0);
  std::vector<double> diag(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    diag[j] = h[j * n + j];
    if (diag[j] < 0.0) {
      return absl::InvalidArgumentError(absl::StrCat("gptq: Hessian diagonal entry ", j, " is negative (", diag[j],
                                                     "); not a second-moment matrix"));
    }
    if (diag[j] == 0.0) {
      out.dead[j] = 1;
      diag[j] = 1.0;
    }
  }
  out.perm.resize(static_cast<size_t>(n));
  std::iota(out.perm.begin(), out.perm.end(), 0);
  if (options.act_order) {
    std::stable_sort(out.perm.begin(), out.perm.end(), [&](int32_t a, int32_t b) { return diag[a] > diag[b]; });
  }
  // Hp, reversed: a[i][j] = Hp[n-1-i][n-1-j] (only the lower triangle is used).
  std::vector<double> a(static_cast<size_t>(n * n));
  double mean = 0.0;
  for (int64_t j = 0; j < n; ++j) mean += diag[j];
  mean /= static_cast<double>(n);
  out.damp = options.percdamp * mean;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pi = out.perm[n - 1 - i];
    for (int64_t j = 0; j <= i; ++j) {
      const int64_t pj = out.perm[n - 1 - j];
      a[i * n + j] = pi == pj ? diag[pi] + out.damp : h[pi * n + pj];
    }
  }
  const int64_t bad = CholeskyLower(a.data(), n);
  if (bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gptq: H + ", out.damp, " I is not positive definite (pivot of processing position ", n - 1 - bad,
        ", column ", out.perm[n - 1 - bad], "); raise the dampening"));
  }
  // L^-1 (lower), then U = J L^-1 J.
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) a[i * n + j] = 0.0;
  }
  std::vector<double> inv(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) inv[i * n + i] = 1.0;
  cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, static_cast<int>(n),
              static_cast<int>(n), 1.0, a.data(), static_cast<int>(n), inv.data(), static_cast<int>(n));
  out.u.assign(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j) out.u[i * n + j] = inv[(n - 1 - i) * n + (n - 1 - j)];
  }
  return out;
}

absl::StatusOr<QuantizedMatrix> QuantizeGptq(const float* w, int64_t rows, int64_t cols, int bits,
                                             int64_t group_size, const GptqHessian& hs, kernels::ThreadPool* pool) {
  LCD_RETURN_IF_ERROR(
      internal::ValidateMatrixArgs("gptq", w, rows, cols, bits, kGptqMinBits, kGptqMaxBits, group_size));
  if (hs.cols != cols || hs.u.size() != static_cast<size_t>(cols * cols) ||
      hs.perm.size() != static_cast<size_t>(cols) || hs.dead.size() != static_cast<size_t>(cols) ||
      hs.block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("gptq: the Hessian is prepared for ", hs.cols, " columns, the weight has ", cols));
  }
  QuantizedMatrix q = internal::AllocateQuantized(kernels::QuantFormat::kAffine, bits, rows, cols, group_size);
  const int64_t n = cols;
  const int64_t groups = q.layout.groups();
  const int64_t row_bytes = q.layout.CodeRowBytes();
  const int maxq = (1 << bits) - 1;
  const double* u = hs.u.data();
  const int32_t* perm = hs.perm.data();
  // Block ends: every block_size columns and, without act_order, every group start.
  std::vector<int64_t> block_end;
  for (int64_t i1 = 0; i1 < n;) {
    int64_t i2 = std::min(n, (i1 / hs.block_size + 1) * hs.block_size);
    if (!hs.act_order) i2 = std::min(i2, (i1 / group_size + 1) * group_size);
    block_end.push_back(i2);
    i1 = i2;
  }
  std::vector<uint8_t> overflow(static_cast<size_t>(rows), 0);

  kernels::ParallelFor(pool, rows, /*min_chunk=*/kRowChunk, [&](int64_t begin, int64_t end) {
    std::vector<double> wc(static_cast<size_t>(kRowChunk * n));       // Rows in processing order.
    std::vector<double> err(static_cast<size_t>(kRowChunk * hs.block_size));
    std::vector<Grid> grid(static_cast<size_t>(kRowChunk * groups));
    std::vector<double> orig(static_cast<size_t>(n));
    for (int64_t r0 = begin; r0 < end; r0 += kRowChunk) {
      const int64_t nr = std::min(kRowChunk, end - r0);
      for (int64_t r = 0; r < nr; ++r) {
        const float* src = w + (r0 + r) * n;
        for (int64_t c = 0; c < n; ++c) orig[c] = hs.dead[c] ? 0.0 : static_cast<double>(src[c]);
        for (int64_t p = 0; p < n; ++p) wc[r * n + p] = orig[perm[p]];
        if (hs.act_order) {  // Static groups: every grid from the original weights.
          for (int64_t g = 0; g < groups; ++g) {
            const int64_t c0 = g * group_size;
            grid[r * groups + g] = MakeGrid(orig.data() + c0, std::min(group_size, n - c0), maxq);
          }
        }
      }
      int64_t i1 = 0;
      for (const int64_t i2 : block_end) {
        for (int64_t i = i1; i < i2; ++i) {
          const int64_t col = perm[i];
          const int64_t g = col / group_size;
          const double d = u[i * n + i];
          const double* urow = u + i * n;
          for (int64_t r = 0; r < nr; ++r) {
            double* row = wc.data() + r * n;
            Grid& gr = grid[r * groups + g];
            if (!hs.act_order && i == g * group_size) {
              // The group's first column: every earlier error is applied (i == i1 here).
              gr = MakeGrid(row + i, std::min(group_size, n - i), maxq);
            }
            if (gr.overflow) {  // Reported below; the row's result is discarded.
              overflow[r0 + r] = 1;
              err[r * hs.block_size + (i - i1)] = 0.0;
              continue;
            }
            const float code = Code(row[i], gr, maxq);
            internal::PutCode(q.codes.data() + (r0 + r) * row_bytes, col, bits, static_cast<uint32_t>(code));
            // The stored decode, exact in double (an fp16 scale times a small integer).
            const double decoded = static_cast<double>(gr.scale) * (static_cast<double>(code) - gr.zero);
            const double e = (row[i] - decoded) / d;
            err[r * hs.block_size + (i - i1)] = e;
            for (int64_t j = i + 1; j < i2; ++j) row[j] -= e * urow[j];
          }
        }
        // Lazy batch update of the columns after the block.
        if (i2 < n) {
          for (int64_t k = i1; k < i2; ++k) {
            const double* urow = u + k * n;
            for (int64_t r = 0; r < nr; ++r) {
              const double e = err[r * hs.block_size + (k - i1)];
              double* row = wc.data() + r * n;
              for (int64_t j = i2; j < n; ++j) row[j] -= e * urow[j];
            }
          }
        }
        i1 = i2;
      }
      for (int64_t r = 0; r < nr; ++r) {
        for (int64_t g = 0; g < groups; ++g) {
          const Grid& gr = grid[r * groups + g];
          uint16_t* params = q.params.data() + ((r0 + r) * groups + g) * 2;
          params[0] = gr.scale16;
          params[1] = kernels::FloatToFp16(gr.zero);  // An integer <= 255: exact.
        }
      }
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    if (overflow[r]) {
      return absl::InvalidArgumentError(
          absl::StrCat("gptq: row ", r, " has a group whose range needs a scale beyond fp16 (max 65504)"));
    }
  }
  return q;
}

absl::StatusOr<QuantizedMatrix> QuantizeGptq(const float* w, int64_t rows, int64_t cols, int bits,
                                             int64_t group_size, const InputGram& gram, const GptqOptions& options,
                                             kernels::ThreadPool* pool) {
  if (gram.cols != cols || gram.xtx.size() != static_cast<size_t>(cols * cols)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gptq: the input second moment is ", gram.cols, " wide, the weight has ", cols, " columns"));
  }
  LCD_ASSIGN_OR_RETURN(GptqHessian hs, PrepareGptqHessian(gram.xtx.data(), cols, options));
  return QuantizeGptq(w, rows, cols, bits, group_size, hs, pool);
}

absl::StatusOr<double> LayerOutputError(const float* w, int64_t rows, int64_t cols, const QuantizedMatrix& q,
                                        const double* h) {
  const kernels::QuantLayout& l = q.layout;
  if (l.rows != rows || l.cols != cols || w == nullptr || h == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("output error: quantized matrix is ", l.rows, "x", l.cols,
                                                   ", weights are ", rows, "x", cols));
  }
  int64_t p = 0;
  if (l.format == kernels::QuantFormat::kAffine) {
    p = 2;
  } else if (l.format == kernels::QuantFormat::kCodebook) {
    p = int64_t{1} << l.bits;
  } else {
    return absl::UnimplementedError("output error: only affine and codebook formats are decoded here");
  }
  if (l.bits < 1 || l.bits > 8 || l.group_size < 1 || q.codes.size() != static_cast<size_t>(l.CodeBytes()) ||
      q.params.size() != static_cast<size_t>(rows * l.groups() * p)) {
    return absl::InvalidArgumentError("output error: quantized matrix arrays do not match its layout");
  }
  const int64_t groups = l.groups();
  const int64_t row_bytes = l.CodeRowBytes();
  std::vector<double> e(static_cast<size_t>(rows * cols));
  std::vector<float> gp(static_cast<size_t>(p));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t k = 0; k < p; ++k) gp[k] = kernels::Fp16ToFloat(q.params[(r * groups + g) * p + k]);
      const int64_t c_end = std::min(cols, (g + 1) * l.group_size);
      for (int64_t c = g * l.group_size; c < c_end; ++c) {
        const int code = static_cast<int>(internal::GetCode(q.codes.data() + r * row_bytes, c, l.bits));
        const float decoded = kernels::DecodeCode(l.format, l.bits, gp.data(), code);
        e[r * cols + c] = static_cast<double>(w[r * cols + c]) - decoded;
      }
    }
  }
  // tr(E H E^T) = sum_{r,c} (E H)[r][c] E[r][c].
  std::vector<double> eh(static_cast<size_t>(rows * cols));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols),
              static_cast<int>(cols), 1.0, e.data(), static_cast<int>(cols), h, static_cast<int>(cols), 0.0,
              eh.data(), static_cast<int>(cols));
  double total = 0.0;
  for (size_t i = 0; i < e.size(); ++i) total += eh[i] * e[i];
  return total;
}

}  // namespace lcd::quantizer
