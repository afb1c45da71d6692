// GLVQ's math (contract in lcd/quantizer/glvq.h): bit allocation, the
// per-column-group lattice initialisation (Cholesky, Babai, mu from the
// kurtosis) and its training by Adam on the group's output error, in double.
#include "lcd/quantizer/glvq.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/quant_linear.h"

namespace lcd::quantizer {
namespace {

// F and F^-1 with ln1p = log1p(mu) computed once by the caller.
inline double CompandL(double x, double mu, double ln1p) {
  const double v = std::log1p(mu * std::fabs(x)) / ln1p;
  return x < 0 ? -v : v;
}
inline double ExpandL(double y, double mu, double ln1p) {
  const double v = std::expm1(std::fabs(y) * ln1p) / mu;
  return y < 0 ? -v : v;
}

}  // namespace

namespace glvq {

double Compand(double x, double mu) { return CompandL(x, mu, std::log1p(mu)); }
double Expand(double y, double mu) { return ExpandL(y, mu, std::log1p(mu)); }

absl::StatusOr<std::vector<double>> Cholesky(const std::vector<double>& a, int d) {
  std::vector<double> l(static_cast<size_t>(d) * d, 0.0);
  for (int j = 0; j < d; ++j) {
    double diag = a[j * d + j];
    for (int k = 0; k < j; ++k) diag -= l[j * d + k] * l[j * d + k];
    if (!(diag > 0.0)) return absl::FailedPreconditionError(absl::StrCat("Cholesky: pivot ", j, " is ", diag));
    l[j * d + j] = std::sqrt(diag);
    for (int i = j + 1; i < d; ++i) {
      double v = a[i * d + j];
      for (int k = 0; k < j; ++k) v -= l[i * d + k] * l[j * d + k];
      l[i * d + j] = v / l[j * d + j];
    }
  }
  return l;
}

absl::StatusOr<std::vector<double>> InverseLeading(const std::vector<double>& g, int d, int n) {
  std::vector<double> a(static_cast<size_t>(n) * n), inv(static_cast<size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) a[i * n + j] = g[i * d + j];
    inv[i * n + i] = 1.0;
  }
  for (int c = 0; c < n; ++c) {
    int piv = c;
    for (int r = c + 1; r < n; ++r) {
      if (std::fabs(a[r * n + c]) > std::fabs(a[piv * n + c])) piv = r;
    }
    if (!(std::fabs(a[piv * n + c]) > 1e-300)) return absl::FailedPreconditionError("generator is singular");
    if (piv != c) {
      for (int j = 0; j < n; ++j) {
        std::swap(a[c * n + j], a[piv * n + j]);
        std::swap(inv[c * n + j], inv[piv * n + j]);
      }
    }
    const double p = a[c * n + c];
    for (int j = 0; j < n; ++j) {
      a[c * n + j] /= p;
      inv[c * n + j] /= p;
    }
    for (int r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[r * n + c];
      if (f == 0.0) continue;
      for (int j = 0; j < n; ++j) {
        a[r * n + j] -= f * a[c * n + j];
        inv[r * n + j] -= f * inv[c * n + j];
      }
    }
  }
  return inv;
}

void BabaiRound(const double* ginv, int n, const double* u, int bits, int* z) {
  const double lo = -std::ldexp(1.0, bits - 1), hi = std::ldexp(1.0, bits - 1) - 1.0;
  for (int i = 0; i < n; ++i) {
    double c = 0.0;
    for (int j = 0; j < n; ++j) c += ginv[i * n + j] * u[j];
    z[i] = static_cast<int>(std::clamp(std::round(c - 0.5), lo, hi));
  }
}

namespace {

// One-sided Jacobi: a (d x d) becomes U S (columns orthogonal), v the V of
// A = U S V^T.
void Jacobi(std::vector<double>& a, std::vector<double>& v, int d) {
  v.assign(static_cast<size_t>(d) * d, 0.0);
  for (int i = 0; i < d; ++i) v[i * d + i] = 1.0;
  for (int sweep = 0; sweep < 60; ++sweep) {
    bool rotated = false;
    for (int p = 0; p < d - 1; ++p) {
      for (int q = p + 1; q < d; ++q) {
        double alpha = 0, beta = 0, gamma = 0;
        for (int i = 0; i < d; ++i) {
          alpha += a[i * d + p] * a[i * d + p];
          beta += a[i * d + q] * a[i * d + q];
          gamma += a[i * d + p] * a[i * d + q];
        }
        if (std::fabs(gamma) <= 1e-15 * std::sqrt(alpha * beta) || gamma == 0.0) continue;
        rotated = true;
        const double zeta = (beta - alpha) / (2.0 * gamma);
        const double t = (zeta >= 0 ? 1.0 : -1.0) / (std::fabs(zeta) + std::sqrt(1.0 + zeta * zeta));
        const double c = 1.0 / std::sqrt(1.0 + t * t), s = c * t;
        for (int i = 0; i < d; ++i) {
          const double ap = a[i * d + p], aq = a[i * d + q];
          a[i * d + p] = c * ap - s * aq;
          a[i * d + q] = s * ap + c * aq;
          const double vp = v[i * d + p], vq = v[i * d + q];
          v[i * d + p] = c * vp - s * vq;
          v[i * d + q] = s * vp + c * vq;
        }
      }
    }
    if (!rotated) break;
  }
}

}  // namespace

std::vector<double> SingularValues(const double* g, int d) {
  std::vector<double> a(g, g + d * d), v;
  Jacobi(a, v, d);
  std::vector<double> s(d);
  for (int j = 0; j < d; ++j) {
    double n = 0;
    for (int i = 0; i < d; ++i) n += a[i * d + j] * a[i * d + j];
    s[j] = std::sqrt(n);
  }
  std::sort(s.begin(), s.end(), std::greater<>());
  return s;
}

void ClampSingularValues(double* g, int d, double lo, double hi) {
  std::vector<double> a(g, g + d * d), v;
  Jacobi(a, v, d);
  for (int j = 0; j < d; ++j) {
    double n = 0;
    for (int i = 0; i < d; ++i) n += a[i * d + j] * a[i * d + j];
    n = std::sqrt(n);
    if (n <= 1e-300) continue;  // No direction to scale (G singular there).
    const double f = std::clamp(n, lo, hi) / n;
    for (int i = 0; i < d; ++i) a[i * d + j] *= f;
  }
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      double acc = 0;
      for (int k = 0; k < d; ++k) acc += a[i * d + k] * v[j * d + k];
      g[i * d + j] = acc;
    }
  }
}

double InitialMu(const float* values, int64_t n) {
  if (n < 2) return 10.0;
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += values[i];
  mean /= static_cast<double>(n);
  double m2 = 0, m4 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = values[i] - mean, x2 = x * x;
    m2 += x2;
    m4 += x2 * x2;
  }
  m2 /= static_cast<double>(n);
  m4 /= static_cast<double>(n);
  if (!(m2 > 0)) return 10.0;
  return std::clamp(100.0 * std::tanh(m4 / (m2 * m2) / 10.0), 10.0, 255.0);
}

std::vector<uint8_t> AllocateBits(const std::vector<double>& salience, const std::vector<int64_t>& len,
                                  int64_t group_size, int bits) {
  std::vector<uint8_t> out(salience.size(), static_cast<uint8_t>(bits));
  if (bits - 1 < 1 || bits + 1 > 8) return out;
  std::vector<size_t> full;
  for (size_t k = 0; k < salience.size(); ++k) {
    if (len[k] == group_size) full.push_back(k);
  }
  // Descending salience; ties by index (deterministic).
  std::stable_sort(full.begin(), full.end(), [&](size_t a, size_t b) { return salience[a] > salience[b]; });
  const size_t third = full.size() / 3;
  for (size_t i = 0; i < third; ++i) {
    out[full[i]] = static_cast<uint8_t>(bits + 1);
    out[full[full.size() - 1 - i]] = static_cast<uint8_t>(bits - 1);
  }
  return out;
}

double GroupLoss(const GroupProblem& p, const double* g, double mu, double* grad_g, double* grad_mu,
                 double* data_term) {
  const int d = p.d;
  const int64_t rows = p.rows, len = p.len;
  const double ln1p = std::log1p(mu);
  const double half = 0.5;
  std::vector<double> wh(static_cast<size_t>(rows * len)), e(static_cast<size_t>(rows * len)),
      y(static_cast<size_t>(rows * len)), c(static_cast<size_t>(rows * len));
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = p.w + r * p.stride;
    for (int64_t t = 0; t < len; t += d) {
      const int n = static_cast<int>(std::min<int64_t>(d, len - t));
      for (int j = 0; j < n; ++j) c[r * len + t + j] = p.z[r * len + t + j] + half;
      for (int i = 0; i < n; ++i) {
        double acc = 0;
        for (int j = 0; j < n; ++j) acc += g[i * d + j] * c[r * len + t + j];
        y[r * len + t + i] = acc;
        const double what = p.scales[r] * ExpandL(acc, mu, ln1p);
        wh[r * len + t + i] = what;
        e[r * len + t + i] = static_cast<double>(wr[t + i]) - what;
      }
    }
  }
  // EH = E H and WH = W H (H = I when absent), per row.
  std::vector<double> eh(static_cast<size_t>(rows * len));
  double num = 0, den = 0;
  std::vector<double> wrow(static_cast<size_t>(len));
  std::vector<double> whrow(static_cast<size_t>(len));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < len; ++j) wrow[j] = p.w[r * p.stride + j];
    double* ehr = eh.data() + r * len;
    const double* er = e.data() + r * len;
    if (p.h == nullptr) {
      std::copy(er, er + len, ehr);
      std::copy(wrow.begin(), wrow.end(), whrow.begin());
    } else {
      // Row times H as a sum of H's rows (axpy form: vectorises without reassociation).
      std::fill(ehr, ehr + len, 0.0);
      std::fill(whrow.begin(), whrow.end(), 0.0);
      for (int64_t k = 0; k < len; ++k) {
        const double* hk = p.h + k * len;
        const double ek = er[k], wk = wrow[k];
        for (int64_t j = 0; j < len; ++j) ehr[j] += ek * hk[j];
        if (!(p.den > 0)) {
          for (int64_t j = 0; j < len; ++j) whrow[j] += wk * hk[j];
        }
      }
    }
    for (int64_t j = 0; j < len; ++j) {
      num += er[j] * ehr[j];
      den += wrow[j] * whrow[j];
    }
  }
  if (p.den > 0) den = p.den;
  const double data = den > 0 ? num / den : 0.0;
  if (data_term != nullptr) *data_term = data;
  double g0n = 0, reg = 0;
  for (int i = 0; i < d * d; ++i) {
    g0n += p.g0[i] * p.g0[i];
    reg += (g[i] - p.g0[i]) * (g[i] - p.g0[i]);
  }
  const double reg_scale = g0n > 0 ? p.lambda / g0n : 0.0;
  const double loss = data + reg_scale * reg;
  if (grad_g == nullptr || grad_mu == nullptr) return loss;

  for (int i = 0; i < d * d; ++i) grad_g[i] = 2.0 * reg_scale * (g[i] - p.g0[i]);
  *grad_mu = 0.0;
  if (!(den > 0)) return loss;
  for (int64_t r = 0; r < rows; ++r) {
    const double s = p.scales[r];
    for (int64_t t = 0; t < len; t += d) {
      const int n = static_cast<int>(std::min<int64_t>(d, len - t));
      for (int i = 0; i < n; ++i) {
        const int64_t idx = r * len + t + i;
        const double dw = -2.0 * eh[idx] / den;  // dL/dw'
        const double ay = std::fabs(y[idx]);
        const double pw = std::exp(ay * ln1p);   // (1+mu)^|y|
        const double gy = dw * s * ln1p * pw / mu;
        for (int j = 0; j < n; ++j) grad_g[i * d + j] += gy * c[r * len + t + j];
        // d/dmu of ((1+mu)^a - 1)/mu at a = |y|.
        const double dmag = (ay * pw / (1.0 + mu) * mu - (pw - 1.0)) / (mu * mu);
        *grad_mu += dw * s * (y[idx] < 0 ? -dmag : dmag);
      }
    }
  }
  return loss;
}

}  // namespace glvq

namespace {

constexpr double kGaussStep[9] = {0, 1.596, 0.996, 0.586, 0.335, 0.188, 0.104, 0.057, 0.031};

double Fp16Round(double x) { return kernels::Fp16ToFloat(kernels::FloatToFp16(static_cast<float>(x))); }

// One column group's trained state.
struct GroupResult {
  std::vector<double> scales;  // [rows], fp16 values
  std::vector<double> g;       // d x d, fp16 values
  double mu = 0;               // fp16 value
  std::vector<int> z;          // [rows][len]
  double data_init = 0, data_final = 0;
  absl::Status status;
};

// The scale of a row group whose largest |w| is m, shrunk by `ratio`: fp16,
// and for ratio 1 never below m (so |w/s| <= 1); 1 for an all-zero group.
double ScaleFor(double m, double ratio) {
  if (!(m > 0)) return 1.0;
  double s = Fp16Round(m * ratio);
  if (ratio >= 1.0 && s < m) s = Fp16Round(m * (1.0 + 1e-3));
  return s;
}

constexpr int kScaleRatios = 9;  // 1, 0.95, ..., 0.6

// Codes of every row for (g, mu) with the rows' scales; with `search`, each
// row's scale is also chosen among kScaleRatios shrinkings of its max |w|
// (the one with the lowest row output error e H e^T; clipped weights then
// saturate at the outermost code).
absl::Status RoundRows(const float* w, int64_t stride, int64_t rows, int64_t len, int d, int bits,
                       const std::vector<double>& g, double mu, const double* h, const std::vector<double>& absmax,
                       bool search, std::vector<double>* scales, std::vector<int>* z) {
  LCD_ASSIGN_OR_RETURN(std::vector<double> inv_full, glvq::InverseLeading(g, d, std::min<int64_t>(d, len)));
  std::vector<double> inv_short;
  const int tail = static_cast<int>(len % d);
  if (tail != 0 && len > d) {
    LCD_ASSIGN_OR_RETURN(inv_short, glvq::InverseLeading(g, d, tail));
  }
  z->resize(static_cast<size_t>(rows * len));
  std::vector<int> zr(static_cast<size_t>(len));
  std::vector<double> e(static_cast<size_t>(len)), he(static_cast<size_t>(len));
  const double ln1p = std::log1p(mu);
  double u[32];
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * stride;
    double best = INFINITY;
    for (int a = 0; a < (search ? kScaleRatios : 1); ++a) {
      const double s = search ? ScaleFor(absmax[r], 1.0 - 0.05 * a) : (*scales)[r];
      for (int64_t t = 0; t < len; t += d) {
        const int n = static_cast<int>(std::min<int64_t>(d, len - t));
        for (int j = 0; j < n; ++j) u[j] = CompandL(wr[t + j] / s, mu, ln1p);
        const std::vector<double>& inv = (n == std::min<int64_t>(d, len)) ? inv_full : inv_short;
        glvq::BabaiRound(inv.data(), n, u, bits, zr.data() + t);
      }
      if (search) {
        for (int64_t t = 0; t < len; t += d) {
          const int n = static_cast<int>(std::min<int64_t>(d, len - t));
          for (int i = 0; i < n; ++i) {
            double y = 0;
            for (int j = 0; j < n; ++j) y += g[i * d + j] * (zr[t + j] + 0.5);
            e[t + i] = wr[t + i] - s * ExpandL(y, mu, ln1p);
          }
        }
        double err = 0;
        if (h == nullptr) {
          for (int64_t i = 0; i < len; ++i) err += e[i] * e[i];
        } else {
          std::fill(he.begin(), he.end(), 0.0);
          for (int64_t k = 0; k < len; ++k) {
            const double* hk = h + k * len;
            const double ek = e[k];
            for (int64_t j = 0; j < len; ++j) he[j] += ek * hk[j];
          }
          for (int64_t i = 0; i < len; ++i) err += e[i] * he[i];
        }
        if (!(err < best)) continue;
        best = err;
        (*scales)[r] = s;
      }
      std::copy(zr.begin(), zr.end(), z->begin() + r * len);
    }
  }
  return absl::OkStatus();
}

bool DecodeBounded(const std::vector<double>& g, int d, int bits, double mu) {
  double worst = 0;
  for (int i = 0; i < d; ++i) {
    double row = 0;
    for (int j = 0; j < d; ++j) row += std::fabs(g[i * d + j]);
    worst = std::max(worst, row);
  }
  return worst * std::ldexp(1.0, bits - 1) * std::log1p(mu) <= 79.0;
}

GroupResult OptimizeGroup(const float* w, int64_t rows, int64_t len, int64_t stride, const double* h, int bits,
                          const GlvqOptions& o) {
  GroupResult res;
  const int d = o.dim;
  res.scales.resize(static_cast<size_t>(rows));
  std::vector<double> absmax(static_cast<size_t>(rows));
  std::vector<double> x(static_cast<size_t>(rows * len));
  std::vector<float> xf(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double m = 0;
    for (int64_t j = 0; j < len; ++j) m = std::max(m, std::fabs(static_cast<double>(w[r * stride + j])));
    absmax[r] = m;
    const double s = ScaleFor(m, 1.0);
    res.scales[r] = s;
    for (int64_t j = 0; j < len; ++j) {
      x[r * len + j] = w[r * stride + j] / s;
      xf[r * len + j] = static_cast<float>(x[r * len + j]);
    }
  }
  const double mu0 = glvq::InitialMu(xf.data(), static_cast<int64_t>(xf.size()));

  // Second moment of the companded sub-vectors.
  const int n0 = static_cast<int>(std::min<int64_t>(d, len));
  std::vector<double> sigma(static_cast<size_t>(d) * d, 0.0);
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t + n0 <= len; t += d) {
      if (len - t < n0) break;
      double u[32];
      for (int j = 0; j < n0; ++j) u[j] = glvq::Compand(x[r * len + t + j], mu0);
      for (int i = 0; i < n0; ++i) {
        for (int j = 0; j < n0; ++j) sigma[i * d + j] += u[i] * u[j];
      }
      ++count;
    }
  }
  double tr = 0;
  for (int i = 0; i < n0; ++i) {
    for (int j = 0; j < n0; ++j) sigma[i * d + j] /= static_cast<double>(std::max<int64_t>(count, 1));
    tr += sigma[i * d + i];
  }
  const double avg = tr > 0 ? tr / n0 : 1.0 / 3.0;
  for (int i = 0; i < d; ++i) sigma[i * d + i] += i < n0 ? 1e-2 * avg : avg;
  absl::StatusOr<std::vector<double>> chol = glvq::Cholesky(sigma, d);
  if (!chol.ok()) {
    res.status = chol.status();
    return res;
  }

  glvq::GroupProblem p;
  p.rows = rows;
  p.len = len;
  p.stride = stride;
  p.d = d;
  p.bits = bits;
  p.w = w;
  p.h = h;
  p.scales = res.scales.data();
  p.lambda = o.lambda;
  {
    // tr(W H W^T) once (GroupLoss would recompute it every call).
    double den = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* wr = w + r * stride;
      for (int64_t i = 0; i < len; ++i) {
        double acc = 0;
        if (h == nullptr) {
          acc = wr[i];
        } else {
          for (int64_t j = 0; j < len; ++j) acc += h[i * len + j] * wr[j];
        }
        den += wr[i] * acc;
      }
    }
    p.den = den;
  }

  // Initial scale of the generator: the best multiple of the Gaussian step.
  std::vector<int> z;
  std::vector<double> g0, best_g;
  double best = INFINITY;
  for (int ti = 0; ti <= 11; ++ti) {
    const double t = 0.5 + 0.1 * ti;
    std::vector<double> g(*chol);
    for (double& v : g) v = Fp16Round(v * kGaussStep[bits] * t);
    const double mu = Fp16Round(mu0);
    if (!DecodeBounded(g, d, bits, mu)) continue;
    if (absl::Status s = RoundRows(w, stride, rows, len, d, bits, g, mu, h, absmax, false, &res.scales, &z); !s.ok()) {
      continue;
    }
    p.z = z.data();
    p.g0 = g.data();
    double data = 0;
    glvq::GroupLoss(p, g.data(), mu, nullptr, nullptr, &data);
    if (data < best) {
      best = data;
      best_g = g;
    }
  }
  if (best_g.empty()) {
    res.status = absl::InternalError("no initial generator scale decodes within fp32 range");
    return res;
  }
  g0 = best_g;
  res.g = g0;
  res.mu = Fp16Round(mu0);
  absl::Status rs = RoundRows(w, stride, rows, len, d, bits, g0, res.mu, h, absmax, o.search_scales, &res.scales, &res.z);
  if (!rs.ok()) {
    res.status = rs;
    return res;
  }
  p.z = res.z.data();
  p.g0 = g0.data();
  glvq::GroupLoss(p, g0.data(), res.mu, nullptr, nullptr, &res.data_init);
  res.data_final = res.data_init;
  if (o.steps <= 0) return res;

  const std::vector<double> sv0 = glvq::SingularValues(g0.data(), d);
  const double sig_lo = o.sigma_lo * sv0.back(), sig_hi = o.sigma_hi * sv0.front();
  double gn = 0;
  for (double v : g0) gn += v * v;
  const double lr_g = o.lr * std::sqrt(gn) / d;
  std::vector<double> g = g0, grad(g.size()), m1(g.size(), 0.0), m2(g.size(), 0.0);
  double theta = std::log(res.mu), mt1 = 0, mt2 = 0;
  z = res.z;
  std::vector<double> scales = res.scales;
  p.scales = scales.data();
  p.g0 = g0.data();
  const double b1 = 0.9, b2 = 0.999, eps = 1e-12;
  for (int step = 1; step <= o.steps; ++step) {
    p.z = z.data();
    double gmu = 0;
    glvq::GroupLoss(p, g.data(), std::exp(theta), grad.data(), &gmu);
    const double gtheta = gmu * std::exp(theta);
    const double c1 = 1.0 - std::pow(b1, step), c2 = 1.0 - std::pow(b2, step);
    for (size_t i = 0; i < g.size(); ++i) {
      m1[i] = b1 * m1[i] + (1 - b1) * grad[i];
      m2[i] = b2 * m2[i] + (1 - b2) * grad[i] * grad[i];
      g[i] -= lr_g * (m1[i] / c1) / (std::sqrt(m2[i] / c2) + eps);
    }
    mt1 = b1 * mt1 + (1 - b1) * gtheta;
    mt2 = b2 * mt2 + (1 - b2) * gtheta * gtheta;
    theta -= o.lr * (mt1 / c1) / (std::sqrt(mt2 / c2) + eps);
    theta = std::clamp(theta, std::log(10.0), std::log(255.0));
    glvq::ClampSingularValues(g.data(), d, sig_lo, sig_hi);
    if ((o.reround_every > 0 && step % o.reround_every == 0) || step == o.steps) {
      std::vector<int> nz;
      if (RoundRows(w, stride, rows, len, d, bits, g, std::exp(theta), h, absmax, o.search_scales, &scales, &nz).ok()) {
        z.swap(nz);
      }
    }
  }
  // The stored state: fp16 G and mu, codes re-rounded with them.
  std::vector<double> gr(g);
  for (double& v : gr) v = Fp16Round(v);
  const double mur = Fp16Round(std::exp(theta));
  std::vector<int> zr;
  if (DecodeBounded(gr, d, bits, mur) &&
      RoundRows(w, stride, rows, len, d, bits, gr, mur, h, absmax, o.search_scales, &scales, &zr).ok()) {
    p.z = zr.data();
    p.scales = scales.data();
    double data = 0;
    glvq::GroupLoss(p, gr.data(), mur, nullptr, nullptr, &data);
    if (data < res.data_init) {
      res.g = gr;
      res.mu = mur;
      res.z = std::move(zr);
      res.scales = scales;
      res.data_final = data;
    }
  }
  return res;
}

void PutBits(uint8_t* row, int64_t bit, int bits, uint32_t code) {
  for (int i = 0; i < bits; ++i, ++bit) {
    if ((code >> i) & 1) row[bit >> 3] |= static_cast<uint8_t>(1u << (bit & 7));
  }
}

}  // namespace

absl::StatusOr<QuantizedMatrix> QuantizeGlvq(const float* w, int64_t rows, int64_t cols, const double* h,
                                             const GlvqOptions& o, GlvqReport* report, kernels::ThreadPool* pool) {
  if (w == nullptr || rows < 1 || cols < 1) return absl::InvalidArgumentError("glvq: empty weight matrix");
  if (o.bits < 1 || o.bits > 8) return absl::InvalidArgumentError(absl::StrCat("glvq: bits ", o.bits, " outside 1..8"));
  if (o.group_size < 1 || o.dim < 1 || o.dim > 32 || o.group_size % o.dim != 0) {
    return absl::InvalidArgumentError(absl::StrCat("glvq: lattice dim ", o.dim, " must be in 1..32 and divide group size ",
                                                   o.group_size));
  }
  if (o.steps < 0 || o.reround_every < 0 || !(o.lr >= 0) || !(o.lambda >= 0) || !(o.sigma_lo > 0) ||
      !(o.sigma_hi >= o.sigma_lo)) {
    return absl::InvalidArgumentError("glvq: steps and reround_every must be >= 0, lr and lambda >= 0, 0 < sigma_lo <= sigma_hi");
  }
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (!std::isfinite(w[i])) return absl::InvalidArgumentError(absl::StrCat("glvq: weight ", i, " is not finite"));
  }
  if (h != nullptr) {
    for (int64_t i = 0; i < cols * cols; ++i) {
      if (!std::isfinite(h[i])) return absl::InvalidArgumentError(absl::StrCat("glvq: H element ", i, " is not finite"));
    }
  }
  const int64_t g = o.group_size, groups = (cols + g - 1) / g;
  std::vector<double> salience(static_cast<size_t>(groups), 0.0);
  std::vector<int64_t> len(static_cast<size_t>(groups));
  for (int64_t k = 0; k < groups; ++k) {
    len[k] = std::min(cols, (k + 1) * g) - k * g;
    for (int64_t j = k * g; j < k * g + len[k]; ++j) {
      double col = 0;
      for (int64_t r = 0; r < rows; ++r) col += static_cast<double>(w[r * cols + j]) * w[r * cols + j];
      salience[k] += (h ? h[j * cols + j] : 1.0) * col;
    }
  }
  const std::vector<uint8_t> widths =
      o.allocate_bits ? glvq::AllocateBits(salience, len, g, o.bits) : std::vector<uint8_t>(groups, o.bits);

  std::vector<GroupResult> results(static_cast<size_t>(groups));
  kernels::ParallelFor(pool, groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      std::vector<double> hk;
      if (h != nullptr) {
        hk.resize(static_cast<size_t>(len[k] * len[k]));
        for (int64_t i = 0; i < len[k]; ++i) {
          for (int64_t j = 0; j < len[k]; ++j) hk[i * len[k] + j] = h[(k * g + i) * cols + k * g + j];
        }
      }
      results[k] = OptimizeGroup(w + k * g, rows, len[k], cols, h ? hk.data() : nullptr, widths[k], o);
    }
  });

  QuantizedMatrix q;
  q.layout.format = kernels::QuantFormat::kLattice;
  q.layout.bits = o.bits;
  q.layout.rows = rows;
  q.layout.cols = cols;
  q.layout.group_size = g;
  q.layout.lattice_dim = o.dim;
  q.layout.group_bits = widths;
  LCD_RETURN_IF_ERROR(kernels::ValidateQuantLayout(q.layout));
  q.codes.assign(static_cast<size_t>(q.layout.CodeBytes()), 0);
  q.params.resize(static_cast<size_t>(rows * groups));
  const int64_t P = q.layout.LatticeParamsPerGroup();
  q.lattice.resize(static_cast<size_t>(groups * P));
  const int64_t row_bytes = q.layout.CodeRowBytes();
  GlvqReport rep;
  for (int64_t k = 0; k < groups; ++k) {
    const GroupResult& gr = results[k];
    if (!gr.status.ok()) {
      return absl::Status(gr.status.code(), absl::StrCat("glvq: column group ", k, ": ", gr.status.message()));
    }
    rep.loss_init += gr.data_init;
    rep.loss_final += gr.data_final;
    rep.groups_up += widths[k] > o.bits;
    rep.groups_down += widths[k] < o.bits;
    for (int64_t i = 0; i < o.dim * o.dim; ++i) q.lattice[k * P + i] = kernels::FloatToFp16(static_cast<float>(gr.g[i]));
    q.lattice[k * P + P - 1] = kernels::FloatToFp16(static_cast<float>(gr.mu));
    const int b = widths[k];
    const int64_t off = q.layout.CodeBitOffset(k * g);
    for (int64_t r = 0; r < rows; ++r) {
      q.params[r * groups + k] = kernels::FloatToFp16(static_cast<float>(gr.scales[r]));
      for (int64_t j = 0; j < len[k]; ++j) {
        PutBits(q.codes.data() + r * row_bytes, off + j * b, b,
                static_cast<uint32_t>(gr.z[r * len[k] + j] + (1 << (b - 1))));
      }
    }
  }
  if (report != nullptr) *report = rep;
  return q;
}

}  // namespace lcd::quantizer
