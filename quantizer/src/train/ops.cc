#include "lcd/quantizer/train/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace lcd::quantizer::train {
namespace {

using kernels::ParallelFor;
using kernels::ThreadPool;

// Rows per chunk for per-token loops: enough work to amortise a wake-up.
int64_t RowChunk(int64_t row_len) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_len)); }

// log-softmax of one row, in double: lp[j] = z[j] - logsumexp(z).
void LogSoftmaxRow(const float* z, int64_t V, double* lp) {
  double m = z[0];
  for (int64_t j = 1; j < V; ++j) m = std::max(m, static_cast<double>(z[j]));
  double s = 0.0;
  for (int64_t j = 0; j < V; ++j) s += std::exp(static_cast<double>(z[j]) - m);
  const double lse = m + std::log(s);
  for (int64_t j = 0; j < V; ++j) lp[j] = static_cast<double>(z[j]) - lse;
}

// LogSoftmaxRow and the probabilities p = exp(lp), in double, with one exp
// per element: p[j] = exp(z[j] - max) / sum.
void SoftmaxRow(const float* z, int64_t V, double* lp, double* p) {
  double m = z[0];
  for (int64_t j = 1; j < V; ++j) m = std::max(m, static_cast<double>(z[j]));
  double s = 0.0;
  for (int64_t j = 0; j < V; ++j) {
    p[j] = std::exp(static_cast<double>(z[j]) - m);
    s += p[j];
  }
  const double lse = m + std::log(s), inv = 1.0 / s;
  for (int64_t j = 0; j < V; ++j) {
    lp[j] = static_cast<double>(z[j]) - lse;
    p[j] *= inv;
  }
}

// C = alpha op(A) op(B) + beta C, row-major, with explicit leading dimensions
// (the heads of a [T][H][D] activation are strided views).
void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

// Sums per-row losses in row order (deterministic whatever the threads).
double MeanOf(const std::vector<double>& row_loss) {
  double s = 0.0;
  for (double x : row_loss) s += x;
  return row_loss.empty() ? 0.0 : s / static_cast<double>(row_loss.size());
}

}  // namespace

void SetBlasThreads(int n) { openblas_set_num_threads(n); }

void EmbeddingForward(const float* table, const int32_t* tokens, int64_t T, int64_t C, float* out) {
  for (int64_t t = 0; t < T; ++t) std::copy_n(table + static_cast<int64_t>(tokens[t]) * C, C, out + t * C);
}

void EmbeddingBackward(const float* dout, const int32_t* tokens, int64_t T, int64_t C, float* dtable) {
  for (int64_t t = 0; t < T; ++t) {
    float* row = dtable + static_cast<int64_t>(tokens[t]) * C;
    const float* d = dout + t * C;
    for (int64_t c = 0; c < C; ++c) row[c] += d[c];
  }
}

void RmsNormForward(const float* x, const float* w, int64_t T, int64_t C, float eps, float* out, float* rstd,
                    ThreadPool* pool) {
  ParallelFor(pool, T, RowChunk(C), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = x + t * C;
      float* o = out + t * C;
      float ss = 0.0f;
      for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
      const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
      rstd[t] = r;
      for (int64_t c = 0; c < C; ++c) o[c] = w[c] * (xr[c] * r);
    }
  });
}

void RmsNormBackward(const float* dout, const float* x, const float* w, const float* rstd, int64_t T, int64_t C,
                     float* dx, float* dw, ThreadPool* pool) {
  // y_c = w_c x_c r, r = (mean x^2 + eps)^-1/2, dr/dx_c = -r^3 x_c / C:
  // dx_c = r w_c dy_c - r^3 x_c / C * sum_j w_j dy_j x_j.
  ParallelFor(pool, T, RowChunk(C), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* d = dout + t * C;
      const float* xr = x + t * C;
      const float r = rstd[t];
      float dot = 0.0f;
      for (int64_t c = 0; c < C; ++c) dot += w[c] * d[c] * xr[c];
      const float k = r * r * r * dot / static_cast<float>(C);
      float* g = dx + t * C;
      for (int64_t c = 0; c < C; ++c) g[c] += r * w[c] * d[c] - k * xr[c];
    }
  });
  if (dw == nullptr) return;
  // Each column is summed over t in order by one thread.
  ParallelFor(pool, C, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t t = 0; t < T; ++t) {
      const float* d = dout + t * C;
      const float* xr = x + t * C;
      const float r = rstd[t];
      for (int64_t c = c0; c < c1; ++c) dw[c] += d[c] * xr[c] * r;
    }
  });
}

void RopeTables(const float* inv_freq, int64_t L, int64_t D, float* cos, float* sin) {
  const int64_t half = D / 2;
  for (int64_t p = 0; p < L; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      // The runtime's kernels form the angle as float(pos) * inv_freq in fp32
      // (as transformers does); the same here, then cos/sin in double.
      const float angle = static_cast<float>(p) * inv_freq[i];
      cos[p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

namespace {
// Rotates every (i, i + D/2) pair of x by +angle (sign 1) or -angle (sign -1).
void RopeRotate(float* x, int64_t B, int64_t L, int64_t H, int64_t D, const float* cos, const float* sin,
                float sign) {
  const int64_t half = D / 2;
  for (int64_t t = 0; t < B * L; ++t) {
    const float* c = cos + (t % L) * half;
    const float* s = sin + (t % L) * half;
    for (int64_t h = 0; h < H; ++h) {
      float* v = x + (t * H + h) * D;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        const float si = sign * s[i];
        v[i] = a * c[i] - b * si;
        v[i + half] = b * c[i] + a * si;
      }
    }
  }
}
}  // namespace

void RopeForward(float* x, int64_t B, int64_t L, int64_t H, int64_t D, const float* cos, const float* sin) {
  RopeRotate(x, B, L, H, D, cos, sin, 1.0f);
}

void RopeBackward(float* dx, int64_t B, int64_t L, int64_t H, int64_t D, const float* cos, const float* sin) {
  RopeRotate(dx, B, L, H, D, cos, sin, -1.0f);
}

void LinearForward(const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t N, float* y) {
  float beta = 0.0f;
  if (b != nullptr) {
    for (int64_t t = 0; t < T; ++t) std::copy_n(b, N, y + t * N);
    beta = 1.0f;
  }
  Gemm(false, true, T, N, K, 1.0f, x, K, w, K, beta, y, N);
}

void LinearBackward(const float* dy, const float* x, const float* w, int64_t T, int64_t K, int64_t N, float* dx,
                    float* dw, float* db, ThreadPool* pool) {
  if (dx != nullptr) {
    Gemm(false, false, T, K, N, 1.0f, dy, N, w, K, 1.0f, dx, K);
  }
  if (dw != nullptr) {
    Gemm(true, false, N, K, T, 1.0f, dy, N, x, K, 1.0f, dw, K);
  }
  if (db != nullptr) {
    ParallelFor(pool, N, 256, [&](int64_t n0, int64_t n1) {
      for (int64_t t = 0; t < T; ++t) {
        const float* d = dy + t * N;
        for (int64_t n = n0; n < n1; ++n) db[n] += d[n];
      }
    });
  }
}

namespace {
// Query rows per block of the causal attention: row block [i0, i1) needs key
// columns [0, i1) only, so the sgemms skip most of the masked upper
// triangle (at L = 512, 56% of the full square's work).
constexpr int64_t kAttnRows = 64;

// OpenBLAS single-threaded while the pool runs one (sequence, head) per
// task: the heads are the parallelism, and OpenBLAS's own threads would only
// contend with the pool's for the same cores. Restores the previous count.
class SerialBlas {
 public:
  SerialBlas() : prev_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~SerialBlas() { openblas_set_num_threads(prev_); }

 private:
  int prev_;
};
}  // namespace

// Per (sequence, head), one pool task each (single-threaded sgemms, see
// SerialBlas), row block by row block: S = scale Q K^T over the causal
// columns, the masked softmax, out = P V.
void AttentionForward(const float* q, const float* k, const float* v, int64_t B, int64_t L, int64_t H, int64_t KVH,
                      int64_t D, float* att, float* out, ThreadPool* pool) {
  const int64_t group = H / KVH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  SerialBlas serial;
  ParallelFor(pool, B * H, 1, [&](int64_t bh0, int64_t bh1) {
    for (int64_t bh = bh0; bh < bh1; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* qh = q + (b * L * H + h) * D;
      const float* kh = k + (b * L * KVH + h / group) * D;
      const float* vh = v + (b * L * KVH + h / group) * D;
      float* p0 = att + bh * L * L;
      for (int64_t i0 = 0; i0 < L; i0 += kAttnRows) {
        const int64_t i1 = std::min(L, i0 + kAttnRows);
        Gemm(false, true, i1 - i0, i1, D, scale, qh + i0 * H * D, H * D, kh, KVH * D, 0.0f, p0 + i0 * L, L);
        for (int64_t i = i0; i < i1; ++i) {  // Query position i attends to j <= i.
          float* p = p0 + i * L;
          float m = p[0];
          for (int64_t j = 1; j <= i; ++j) m = std::max(m, p[j]);
          float sum = 0.0f;
          for (int64_t j = 0; j <= i; ++j) {
            p[j] = std::exp(p[j] - m);
            sum += p[j];
          }
          const float inv = 1.0f / sum;
          for (int64_t j = 0; j <= i; ++j) p[j] *= inv;
          std::fill(p + i + 1, p + L, 0.0f);
        }
        Gemm(false, false, i1 - i0, D, i1, 1.0f, p0 + i0 * L, L, vh, KVH * D, 0.0f,
             out + (b * L * H + h) * D + i0 * H * D, H * D);
      }
    }
  });
}

// Per (sequence, head), one pool task each, over the causal blocks only:
// dP = dO V^T, dS = P (dP - rowsum(P dP)) scale, dQ += dS K; the head's
// dV = P^T dO and dK = dS^T Q go to a per-head scratch that is then added
// into dk/dv head by head in order (fixed order whatever the threads).
void AttentionBackward(const float* dout, const float* q, const float* k, const float* v, const float* att, int64_t B,
                       int64_t L, int64_t H, int64_t KVH, int64_t D, float* dq, float* dk, float* dv,
                       ThreadPool* pool) {
  const int64_t group = H / KVH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<float> dk_h(static_cast<size_t>(B * H * L * D)), dv_h(static_cast<size_t>(B * H * L * D));
  {
    SerialBlas serial;
    ParallelFor(pool, B * H, 1, [&](int64_t bh0, int64_t bh1) {
      std::vector<float> ds(static_cast<size_t>(L * L));
      for (int64_t bh = bh0; bh < bh1; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const int64_t qo = (b * L * H + h) * D, ko = (b * L * KVH + h / group) * D;
        const float* p = att + bh * L * L;
        float* dkh = dk_h.data() + bh * L * D;
        float* dvh = dv_h.data() + bh * L * D;
        for (int64_t i0 = 0; i0 < L; i0 += kAttnRows) {
          const int64_t i1 = std::min(L, i0 + kAttnRows);
          Gemm(false, true, i1 - i0, i1, D, 1.0f, dout + qo + i0 * H * D, H * D, v + ko, KVH * D, 0.0f,
               ds.data() + i0 * L, L);
          for (int64_t i = i0; i < i1; ++i) {
            const float* pi = p + i * L;
            float* d = ds.data() + i * L;
            float dot = 0.0f;
            for (int64_t j = 0; j <= i; ++j) dot += pi[j] * d[j];
            for (int64_t j = 0; j <= i; ++j) d[j] = pi[j] * (d[j] - dot) * scale;
            std::fill(d + i + 1, d + L, 0.0f);
          }
          Gemm(false, false, i1 - i0, D, i1, 1.0f, ds.data() + i0 * L, L, k + ko, KVH * D, 1.0f,
               dq + qo + i0 * H * D, H * D);
        }
        // Key block [j0, j1) gets its gradient from query rows i >= j0 (P and
        // dS are 0 above the diagonal).
        for (int64_t j0 = 0; j0 < L; j0 += kAttnRows) {
          const int64_t j1 = std::min(L, j0 + kAttnRows);
          Gemm(true, false, j1 - j0, D, L - j0, 1.0f, p + j0 * L + j0, L, dout + qo + j0 * H * D, H * D, 0.0f,
               dvh + j0 * D, D);
          Gemm(true, false, j1 - j0, D, L - j0, 1.0f, ds.data() + j0 * L + j0, L, q + qo + j0 * H * D, H * D, 0.0f,
               dkh + j0 * D, D);
        }
      }
    });
  }
  // dk/dv [B*L][KVH][D] += the heads' parts, heads in order; parallel over tokens.
  ParallelFor(pool, B * L, RowChunk(H * D), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / L, i = t % L;
      for (int64_t h = 0; h < H; ++h) {
        const float* sk = dk_h.data() + ((b * H + h) * L + i) * D;
        const float* sv = dv_h.data() + ((b * H + h) * L + i) * D;
        float* gk = dk + (t * KVH + h / group) * D;
        float* gv = dv + (t * KVH + h / group) * D;
        for (int64_t d = 0; d < D; ++d) {
          gk[d] += sk[d];
          gv[d] += sv[d];
        }
      }
    }
  });
}

void SwiGluForward(const float* gate, const float* up, int64_t n, float* out, ThreadPool* pool) {
  ParallelFor(pool, n, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void SwiGluBackward(const float* dout, const float* gate, const float* up, int64_t n, float* dgate, float* dup,
                    ThreadPool* pool) {
  // silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
  ParallelFor(pool, n, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      const float s = 1.0f / (1.0f + std::exp(-g));
      dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
      dup[i] += dout[i] * g * s;
    }
  });
}

void ResidualForward(const float* a, const float* b, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void ResidualBackward(const float* dout, int64_t n, float* da, float* db) {
  for (int64_t i = 0; i < n; ++i) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

double CrossEntropyLoss(const float* logits, const int32_t* targets, int64_t N, int64_t V, float* dlogits,
                        ThreadPool* pool) {
  std::vector<double> row_loss(static_cast<size_t>(N));
  const double inv_n = 1.0 / static_cast<double>(N);
  ParallelFor(pool, N, 1, [&](int64_t r0, int64_t r1) {
    std::vector<double> lp(static_cast<size_t>(V)), p(static_cast<size_t>(V));
    for (int64_t r = r0; r < r1; ++r) {
      SoftmaxRow(logits + r * V, V, lp.data(), p.data());
      const int32_t y = targets[r];
      row_loss[r] = -lp[y];
      if (dlogits == nullptr) continue;
      float* g = dlogits + r * V;
      for (int64_t j = 0; j < V; ++j) g[j] += static_cast<float>((p[j] - (j == y ? 1.0 : 0.0)) * inv_n);
    }
  });
  return MeanOf(row_loss);
}

namespace {
// gamma * KL(S||T) + (1 - gamma) * KL(T||S), averaged over rows.
// d KL(T||S)/dz_j = p_S,j - p_T,j;  d KL(S||T)/dz_j = p_S,j (log p_S,j - log p_T,j - KL(S||T)).
double MixedKl(const float* logits, const float* teacher_logits, int64_t N, int64_t V, double gamma, float* dlogits,
               ThreadPool* pool) {
  std::vector<double> row_loss(static_cast<size_t>(N));
  const double inv_n = 1.0 / static_cast<double>(N);
  ParallelFor(pool, N, 1, [&](int64_t r0, int64_t r1) {
    std::vector<double> ls(static_cast<size_t>(V)), lt(static_cast<size_t>(V)), ps(static_cast<size_t>(V)),
        pt(static_cast<size_t>(V));
    for (int64_t r = r0; r < r1; ++r) {
      SoftmaxRow(logits + r * V, V, ls.data(), ps.data());
      SoftmaxRow(teacher_logits + r * V, V, lt.data(), pt.data());
      double fkl = 0.0, rkl = 0.0;
      for (int64_t j = 0; j < V; ++j) {
        const double d = ls[j] - lt[j];
        fkl -= pt[j] * d;
        rkl += ps[j] * d;
      }
      row_loss[r] = gamma * rkl + (1.0 - gamma) * fkl;
      if (dlogits == nullptr) continue;
      float* g = dlogits + r * V;
      for (int64_t j = 0; j < V; ++j) {
        const double grad = gamma * ps[j] * (ls[j] - lt[j] - rkl) + (1.0 - gamma) * (ps[j] - pt[j]);
        g[j] += static_cast<float>(grad * inv_n);
      }
    }
  });
  return MeanOf(row_loss);
}
}  // namespace

double ForwardKlLoss(const float* logits, const float* teacher_logits, int64_t N, int64_t V, float* dlogits,
                     ThreadPool* pool) {
  return MixedKl(logits, teacher_logits, N, V, 0.0, dlogits, pool);
}

double ReverseKlLoss(const float* logits, const float* teacher_logits, int64_t N, int64_t V, float* dlogits,
                     ThreadPool* pool) {
  return MixedKl(logits, teacher_logits, N, V, 1.0, dlogits, pool);
}

double CakldLoss(const float* logits, const float* teacher_logits, int64_t N, int64_t V, double gamma, float* dlogits,
                 ThreadPool* pool) {
  return MixedKl(logits, teacher_logits, N, V, gamma, dlogits, pool);
}

double MeanTopProbability(const float* teacher_logits, int64_t N, int64_t V) {
  std::vector<double> lp(static_cast<size_t>(V));
  double s = 0.0;
  for (int64_t r = 0; r < N; ++r) {
    LogSoftmaxRow(teacher_logits + r * V, V, lp.data());
    s += std::exp(*std::max_element(lp.begin(), lp.end()));
  }
  return N > 0 ? s / static_cast<double>(N) : 0.0;
}

}  // namespace lcd::quantizer::train
