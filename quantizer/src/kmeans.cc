// Importance-weighted k-means per (row, group) into the codebook format
// (contract in quantize_matrix.h; LCD.md step 3).
//
// Values are clustered in sorted order: in one dimension the clusters of a
// nearest-centroid assignment are contiguous runs of the sorted values, so
// assignment is one merge walk (O(n + K)) instead of O(n K).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "src/quant_common.h"

namespace lcd::quantizer {
namespace {

// Per-thread buffers, reused across the groups of a row chunk.
struct Scratch {
  std::vector<int64_t> order;  // Group positions sorted by (value, position).
  std::vector<double> v, a;    // Sorted values and their importance.
  std::vector<int> assign;     // Cluster of each sorted element.
  std::vector<double> c, sum, mass, plain, best_c;
  std::vector<int64_t> count;
  std::vector<int> by_value;   // Cluster ids sorted by (centroid, id).
};

// Nearest centroid for ascending values, as one walk: calls out(i, k) for
// every sorted element i. Ties go to the lower centroid value, equal values
// to the lower id.
template <typename Out>
void AssignSorted(const std::vector<double>& v, const std::vector<double>& c, std::vector<int>& by_value,
                  Out out) {
  const int k_count = static_cast<int>(c.size());
  by_value.resize(k_count);
  std::iota(by_value.begin(), by_value.end(), 0);
  std::sort(by_value.begin(), by_value.end(),
            [&](int x, int y) { return c[x] < c[y] || (c[x] == c[y] && x < y); });
  int pos = 0;  // Number of centroids < v[i].
  for (size_t i = 0; i < v.size(); ++i) {
    while (pos < k_count && c[by_value[pos]] < v[i]) ++pos;
    int k;
    if (pos == 0) {
      k = by_value[0];
    } else if (pos == k_count) {
      k = by_value[k_count - 1];
    } else {
      // Choose the smallest centroid >= v[i] only when strictly closer; among
      // equal centroids `pos` is the first, i.e. the lowest id.
      const double lo = c[by_value[pos - 1]];
      int first_lo = pos - 1;
      while (first_lo > 0 && c[by_value[first_lo - 1]] == lo) --first_lo;
      k = (c[by_value[pos]] - v[i] < v[i] - lo) ? by_value[pos] : by_value[first_lo];
    }
    out(i, k);
  }
}

// Moves empty clusters onto the elements with the largest weighted error
// (then largest plain error, then lowest position): each move puts one
// element at zero error and changes no other, so the objective cannot rise.
void FixEmptyClusters(Scratch& s) {
  const int k_count = static_cast<int>(s.c.size());
  for (int round = 0; round < k_count; ++round) {
    int empty = -1;
    for (int k = 0; k < k_count && empty < 0; ++k) {
      if (s.count[k] == 0) empty = k;
    }
    if (empty < 0) return;
    int64_t best = -1;
    double best_we = 0.0, best_e = 0.0;
    for (size_t i = 0; i < s.v.size(); ++i) {
      const double d = s.v[i] - s.c[s.assign[i]];
      const double e = d * d, we = s.a[i] * e;
      if (we > best_we || (we == best_we && e > best_e) ||
          (we == best_we && e == best_e && best >= 0 && s.order[i] < s.order[best])) {
        best = static_cast<int64_t>(i);
        best_we = we;
        best_e = e;
      }
    }
    if (best < 0 || best_e == 0.0) return;  // Every element sits on its centroid.
    --s.count[s.assign[best]];
    s.assign[best] = empty;
    s.count[empty] = 1;
    s.c[empty] = s.v[best];
  }
}

// Seeds s.c / s.assign / s.count. Quantile seeds cut the sorted values into
// K bins of equal mass under `bin_weight` (an element goes to the bin holding
// the midpoint of its mass); each centroid is its bin's mean under the
// clustering weights s.a. The grid seed spreads K levels evenly over
// [min, max], as RTN does, and assigns each value to its nearest level.
enum class SeedKind { kWeightedQuantile, kCountQuantile, kEvenGrid };

void Seed(SeedKind kind, Scratch& s) {
  const int k_count = static_cast<int>(s.c.size());
  const int64_t n = static_cast<int64_t>(s.v.size());
  std::fill(s.count.begin(), s.count.end(), 0);
  if (kind == SeedKind::kEvenGrid) {
    const double lo = s.v.front(), hi = s.v.back();
    for (int k = 0; k < k_count; ++k) s.c[k] = k_count == 1 ? lo : lo + (hi - lo) * k / (k_count - 1);
    AssignSorted(s.v, s.c, s.by_value, [&](size_t i, int k) {
      s.assign[i] = k;
      ++s.count[k];
    });
    FixEmptyClusters(s);
    return;
  }
  const bool weighted = kind == SeedKind::kWeightedQuantile;
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += weighted ? s.a[i] : 1.0;
  std::fill(s.sum.begin(), s.sum.end(), 0.0);
  std::fill(s.mass.begin(), s.mass.end(), 0.0);
  std::vector<double>& plain = s.plain;
  plain.assign(k_count, 0.0);
  double cum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double m = weighted ? s.a[i] : 1.0;
    const double mid = cum + 0.5 * m;
    cum += m;
    const int bin = std::min(k_count - 1, static_cast<int>(std::floor(mid * k_count / total)));
    s.assign[i] = bin;
    s.sum[bin] += s.a[i] * s.v[i];
    s.mass[bin] += s.a[i];
    plain[bin] += s.v[i];
    ++s.count[bin];
  }
  int last_nonempty = -1;
  for (int k = 0; k < k_count; ++k) {
    if (s.count[k] == 0) continue;
    s.c[k] = s.mass[k] > 0.0 ? s.sum[k] / s.mass[k] : plain[k] / static_cast<double>(s.count[k]);
    // Empty bins before the first non-empty one copy it; later ones copy the
    // previous non-empty bin (a duplicate changes nothing until moved).
    for (int e = last_nonempty + 1; e < k; ++e) s.c[e] = s.c[k];
    last_nonempty = k;
  }
  for (int e = last_nonempty + 1; e < k_count; ++e) s.c[e] = s.c[last_nonempty];
  FixEmptyClusters(s);
}

// Lloyd from the current seed; returns the weighted objective it reaches.
double Lloyd(int max_iters, Scratch& s) {
  const int k_count = static_cast<int>(s.c.size());
  const int64_t n = static_cast<int64_t>(s.v.size());
  for (int it = 0; it < max_iters; ++it) {
    bool changed = false;
    std::fill(s.count.begin(), s.count.end(), 0);
    AssignSorted(s.v, s.c, s.by_value, [&](size_t i, int k) {
      changed |= s.assign[i] != k;
      s.assign[i] = k;
      ++s.count[k];
    });
    if (!changed && it > 0) break;
    FixEmptyClusters(s);
    std::fill(s.sum.begin(), s.sum.end(), 0.0);
    std::fill(s.mass.begin(), s.mass.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      s.sum[s.assign[i]] += s.a[i] * s.v[i];
      s.mass[s.assign[i]] += s.a[i];
    }
    for (int k = 0; k < k_count; ++k) {
      if (s.mass[k] > 0.0) s.c[k] = s.sum[k] / s.mass[k];  // Else keep: it costs nothing.
    }
  }
  double objective = 0.0;
  AssignSorted(s.v, s.c, s.by_value, [&](size_t i, int k) {
    const double d = s.v[i] - s.c[k];
    objective += s.a[i] * d * d;
  });
  return objective;
}

// Clusters one group of n weights (importance `imp`, or nullptr) and writes
// its K fp16 centroids and n codes. Returns false when a centroid overflows fp16.
bool KmeansGroup(const float* w, const float* imp, int64_t n, int bits, int max_iters, int64_t col0,
                 uint8_t* code_row, uint16_t* params, Scratch& s) {
  const int k_count = 1 << bits;
  s.order.resize(n);
  std::iota(s.order.begin(), s.order.end(), int64_t{0});
  std::sort(s.order.begin(), s.order.end(),
            [&](int64_t x, int64_t y) { return w[x] < w[y] || (w[x] == w[y] && x < y); });
  s.v.resize(n);
  s.a.resize(n);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    s.v[i] = w[s.order[i]];
    s.a[i] = imp ? imp[s.order[i]] : 1.0;
    total += s.a[i];
  }
  if (total <= 0.0) std::fill(s.a.begin(), s.a.end(), 1.0);  // No importance anywhere: uniform.
  s.assign.assign(n, 0);
  s.c.assign(k_count, 0.0);
  s.sum.assign(k_count, 0.0);
  s.mass.assign(k_count, 0.0);
  s.count.assign(k_count, 0);

  // LCD.md's seed is the weighted quantiles. Lloyd from it alone measurably
  // lands in poor local optima when a few columns carry most of the
  // importance (the light tails share one centroid), so two more seeds are
  // run and the lowest weighted objective wins (ties keep the earlier seed).
  // With max_iters = 0 only the LCD.md seed is used: it is the seed itself.
  const SeedKind kinds[] = {SeedKind::kWeightedQuantile, SeedKind::kCountQuantile, SeedKind::kEvenGrid};
  const int num_kinds = max_iters == 0 ? 1 : 3;
  double best = INFINITY;
  for (int t = 0; t < num_kinds; ++t) {
    if (t == 1 && imp == nullptr) continue;  // Same as the weighted quantiles.
    Seed(kinds[t], s);
    const double objective = Lloyd(max_iters, s);
    if (objective < best) {
      best = objective;
      s.best_c = s.c;
    }
  }

  // Store sorted fp16 centroids, then pick each code against what is stored.
  std::sort(s.best_c.begin(), s.best_c.end());
  for (int k = 0; k < k_count; ++k) {
    params[k] = kernels::FloatToFp16(static_cast<float>(s.best_c[k]));
    if ((params[k] & 0x7FFF) >= 0x7C00) return false;
    s.best_c[k] = kernels::Fp16ToFloat(params[k]);
  }
  AssignSorted(s.v, s.best_c, s.by_value, [&](size_t i, int k) {
    internal::PutCode(code_row, col0 + s.order[i], bits, static_cast<uint32_t>(k));
  });
  return true;
}

}  // namespace

absl::StatusOr<QuantizedMatrix> QuantizeKmeans(const float* w, int64_t rows, int64_t cols, int bits,
                                               int64_t group_size, const float* importance, int max_iters,
                                               kernels::ThreadPool* pool) {
  LCD_RETURN_IF_ERROR(internal::ValidateMatrixArgs("kmeans", w, rows, cols, bits, kKmeansMinBits,
                                                   kKmeansMaxBits, group_size));
  if (max_iters < 0) {
    return absl::InvalidArgumentError(absl::StrCat("kmeans: max_iters must be >= 0, got ", max_iters));
  }
  if (importance != nullptr) {
    for (int64_t c = 0; c < cols; ++c) {
      if (!std::isfinite(importance[c]) || importance[c] < 0.0f) {
        return absl::InvalidArgumentError(absl::StrCat("kmeans: importance of column ", c,
                                                       " must be finite and >= 0, got ", importance[c]));
      }
    }
  }
  QuantizedMatrix q =
      internal::AllocateQuantized(kernels::QuantFormat::kCodebook, bits, rows, cols, group_size);
  const int64_t groups = q.layout.groups();
  const int64_t row_bytes = q.layout.CodeRowBytes();
  const int64_t p = int64_t{1} << bits;
  std::vector<uint8_t> overflow(static_cast<size_t>(rows), 0);
  kernels::ParallelFor(pool, rows, /*min_chunk=*/1, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * group_size;
        const int64_t n = std::min(group_size, cols - c0);
        if (!KmeansGroup(w + r * cols + c0, importance ? importance + c0 : nullptr, n, bits, max_iters, c0,
                         q.codes.data() + r * row_bytes, q.params.data() + (r * groups + g) * p, scratch)) {
          overflow[r] = 1;
        }
      }
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    if (overflow[r]) {
      return absl::InvalidArgumentError(
          absl::StrCat("kmeans: row ", r, " has a centroid beyond fp16's range (max 65504)"));
    }
  }
  return q;
}

}  // namespace lcd::quantizer
