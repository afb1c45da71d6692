// R2Q's closed form, its least-squares refinement and the kBinaryCoded
// packing (contract in lcd/quantizer/r2q.h).
#include "lcd/quantizer/r2q.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "src/quant_common.h"

namespace lcd::quantizer {
namespace {

// Weighted squared error of the group under (alpha, codes).
double Objective(const float* w, const float* h, int64_t n, const float* alpha, const uint8_t* codes) {
  double e = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = static_cast<double>(w[j]) - R2qLevel(codes[j], alpha[0], alpha[1]);
    e += (h ? h[j] : 1.0) * d * d;
  }
  return e;
}

// The least-squares (alpha1, alpha2) for fixed codes (the 2x2 normal
// equations of the header; minimum-norm when they are singular).
void Refit(const float* w, const float* h, int64_t n, const uint8_t* codes, float* alpha) {
  double H = 0.0, C = 0.0, r1 = 0.0, r2 = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    const double hj = h ? h[j] : 1.0;
    const double b1 = (codes[j] & 1) ? 1.0 : -1.0, b2 = (codes[j] & 2) ? 1.0 : -1.0;
    H += hj;
    C += hj * b1 * b2;
    r1 += hj * w[j] * b1;
    r2 += hj * w[j] * b2;
  }
  if (!(H > 0.0)) return;  // Unreachable: the caller falls back to h = 1.
  if (H - std::abs(C) <= 1e-9 * H) {
    const double a = r1 / (2.0 * H);
    alpha[0] = static_cast<float>(a);
    alpha[1] = static_cast<float>(C >= 0.0 ? a : -a);
    return;
  }
  const double det = H * H - C * C;
  alpha[0] = static_cast<float>((H * r1 - C * r2) / det);
  alpha[1] = static_cast<float>((H * r2 - C * r1) / det);
}

}  // namespace

uint8_t R2qNearestCode(float w, float alpha1, float alpha2) {
  uint8_t best = 0;
  float best_level = R2qLevel(0, alpha1, alpha2);
  float best_d = std::abs(w - best_level);
  for (int q = 1; q < 4; ++q) {
    const float level = R2qLevel(q, alpha1, alpha2);
    const float d = std::abs(w - level);
    if (d < best_d || (d == best_d && level > best_level)) {
      best = static_cast<uint8_t>(q);
      best_level = level;
      best_d = d;
    }
  }
  return best;
}

void R2qFitGroup(const float* w, const float* importance, int64_t n, int refit, float* alpha, uint8_t* codes,
                 double* objective) {
  // An all-zero importance says nothing about the group: fit it unweighted.
  const float* h = importance;
  if (h != nullptr && std::all_of(h, h + n, [](float x) { return x == 0.0f; })) h = nullptr;
  // The closed form, in double.
  double a1 = 0.0;
  for (int64_t j = 0; j < n; ++j) a1 += std::abs(static_cast<double>(w[j]));
  a1 /= static_cast<double>(n);
  double a2 = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    const bool b1 = w[j] >= 0.0f;  // sign(0) = +1.
    const double r = static_cast<double>(w[j]) - (b1 ? a1 : -a1);
    a2 += std::abs(r);
    codes[j] = static_cast<uint8_t>((b1 ? 1 : 0) | (r >= 0.0 ? 2 : 0));
  }
  a2 /= static_cast<double>(n);
  alpha[0] = static_cast<float>(a1);
  alpha[1] = static_cast<float>(a2);
  if (objective != nullptr) objective[0] = Objective(w, h, n, alpha, codes);
  for (int round = 0; round < refit; ++round) {
    Refit(w, h, n, codes, alpha);
    for (int64_t j = 0; j < n; ++j) codes[j] = R2qNearestCode(w[j], alpha[0], alpha[1]);
    if (objective != nullptr) objective[round + 1] = Objective(w, h, n, alpha, codes);
  }
}

absl::StatusOr<QuantizedMatrix> QuantizeR2q(const float* w, int64_t rows, int64_t cols, int64_t group_size,
                                            const float* importance, int refit, kernels::ThreadPool* pool) {
  LCD_RETURN_IF_ERROR(
      internal::ValidateMatrixArgs("r2q", w, rows, cols, kR2qBits, kR2qBits, kR2qBits, group_size));
  if (refit < 0) return absl::InvalidArgumentError(absl::StrCat("r2q: refit rounds must be >= 0, got ", refit));
  if (importance != nullptr) {
    for (int64_t c = 0; c < cols; ++c) {
      if (!std::isfinite(importance[c]) || importance[c] < 0.0f) {
        return absl::InvalidArgumentError(
            absl::StrCat("r2q: importance of column ", c, " is ", importance[c], " (must be finite and >= 0)"));
      }
    }
  }
  QuantizedMatrix q =
      internal::AllocateQuantized(kernels::QuantFormat::kBinaryCoded, kR2qBits, rows, cols, group_size);
  const int64_t groups = q.layout.groups();
  const int64_t row_bytes = q.layout.CodeRowBytes();
  std::vector<int64_t> bad_row(static_cast<size_t>(rows), -1);  // Column of an alpha too large for fp16.
  kernels::ParallelFor(pool, rows, 1, [&](int64_t r0, int64_t r1) {
    std::vector<uint8_t> codes(static_cast<size_t>(std::min(group_size, cols)));
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * group_size, n = std::min(cols, c0 + group_size) - c0;
        const float* wg = w + r * cols + c0;
        float alpha[2];
        R2qFitGroup(wg, importance ? importance + c0 : nullptr, n, refit, alpha, codes.data());
        if (std::abs(alpha[0]) > 65504.0f || std::abs(alpha[1]) > 65504.0f) {
          if (bad_row[r] < 0) bad_row[r] = c0;
          continue;
        }
        uint16_t* p = q.params.data() + (r * groups + g) * kR2qParams;
        p[0] = kernels::FloatToFp16(alpha[0]);
        p[1] = kernels::FloatToFp16(alpha[1]);
        p[2] = kernels::FloatToFp16(0.0f);
        const float s1 = kernels::Fp16ToFloat(p[0]), s2 = kernels::Fp16ToFloat(p[1]);
        uint8_t* row = q.codes.data() + r * row_bytes;
        for (int64_t j = 0; j < n; ++j) {
          // With refinement the codes follow the stored alphas; the closed form keeps its signs.
          const uint8_t code = refit > 0 ? R2qNearestCode(wg[j], s1, s2) : codes[j];
          internal::PutCode(row, c0 + j, kR2qBits, code);
        }
      }
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    if (bad_row[r] >= 0) {
      return absl::InvalidArgumentError(absl::StrCat("r2q: a scale of row ", r, ", group at column ", bad_row[r],
                                                     " exceeds the fp16 range (|alpha| > 65504)"));
    }
  }
  return q;
}

}  // namespace lcd::quantizer
