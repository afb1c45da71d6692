// GLVQ (LCD.md "GLVQ"; Zhang et al., NeurIPS 2025, code not released): one
// weight matrix into the kLattice format of lcd/kernels/quant_linear.h
// (docs/ARTIFACT.md "lattice"), given the second moment H = E[x x^T] of the
// layer's input (calibration.h, gram_for).
//
// The format fixes where the parameters live: a generator G_k (d x d) and a
// companding parameter mu_k per column group k of g columns, shared by all
// rows, a code width b_k per column group, and a scale s per (row, group).
// Decode: w = s * Finv_mu(G (z + 1/2)), Finv(y) = sign(y)((1+mu)^|y| - 1)/mu,
// z integer in [-2^(b-1), 2^(b-1) - 1] per coordinate.
//
// QuantizeGlvq, per matrix:
//  1. Bit allocation (AllocateBits): salience of column group k =
//     sum_{j in k} H_jj * sum_r W_rj^2. Among the groups of full length g
//     ranked by salience, the top floor(n/3) get N+1 bits, the bottom
//     floor(n/3) N-1, the rest N (as many up as down: the mean stays N); a
//     short last group keeps N (moving it would change the mean). N-1 < 1
//     or N+1 > 8 disables the allocation. Off with allocate_bits = false.
//  2. Per column group (independently; groups run in parallel):
//     s_r = fp16(max_j |W_rj|) (1 for an all-zero row group) for the init
//       statistics below; with search_scales, every rounding (after G0 is
//       chosen, every re-rounding, the final one) also picks each row's s
//       among fp16(max|w| * {1, 0.95, ..., 0.6}) by that row's output error
//       e H e^T (weights beyond s saturate at the outermost code);
//     mu0 = InitialMu(W/s): clamp(100 tanh(kappa/10), 10, 255), kappa the
//       Pearson (non-excess) kurtosis of the group's normalised weights;
//     u = F_mu(W/s), F(x) = sign(x) ln(1 + mu|x|)/ln(1 + mu), in [-1, 1];
//     Sigma = mean over the group's full d-dim sub-vectors v of u of v v^T,
//       plus 1e-2 * tr(Sigma)/d * I (regularised; a group shorter than d uses
//       its n-dim sub-vectors and the identity beyond);
//     G0 = kappa * Cholesky(Sigma), kappa = Delta_b * t, Delta_b the
//       Gaussian-optimal uniform step for b bits (in units of sigma: 1.596,
//       0.996, 0.586, 0.335, 0.188, 0.104, 0.057, 0.031 for b = 1..8) and t
//       the best of {0.5, 0.6, ..., 1.6} by the group's output error (below);
//     z = BabaiRound(G, u) (clamped).
//  3. Adam on (G, log mu) for `steps` steps minimising GroupLoss (below), z
//     fixed between re-roundings: every `reround_every` steps (and at the
//     end) u and z are recomputed from the current mu and G. After each step
//     mu is clamped to [10, 255] and the singular values of G to
//     [sigma_lo * sigma_min(G0), sigma_hi * sigma_max(G0)] (0.5 and 2 by
//     default). Step sizes: lr * ||G0||_F / d per element of G, lr for
//     log mu.
//  4. G and mu are rounded to fp16 and z re-rounded with the rounded G; the
//     stored state is the best (lowest output error) of the initial one and
//     this final one, so training never makes a group worse than its init.
//
// GroupLoss (the layer output error ||W X - W' X||^2 = tr((W-W') H (W-W')^T)
// restricted to the group's diagonal block of H: groups are treated as
// independent, cross-group terms of H are ignored):
//   L = tr(E H_kk E^T) / tr(W_k H_kk W_k^T) + lambda ||G - G0||_F^2 / ||G0||_F^2,
// E = W_k - W'_k over all rows. Without H (nullptr) H = I.
//
// Errors: InvalidArgument for a null or non-finite w, bad shapes, bits
// outside 1..8, dim outside 1..32 or not dividing group_size, a non-finite H
// (h must hold cols x cols values: not checkable here), options out of range. Determinism: a pure
// function of the inputs (no randomness; independent of the pool).
#ifndef LCD_QUANTIZER_GLVQ_H_
#define LCD_QUANTIZER_GLVQ_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/artifact_writer.h"

namespace lcd::quantizer {

struct GlvqOptions {
  int bits = 2;              // Nominal N.
  int64_t group_size = 128;
  int dim = 8;               // d: 8 by default; 16 and 32 selectable (any 1..32 dividing g).
  int steps = 50;            // Adam steps per column group (0: the initialisation only).
  int reround_every = 10;    // Steps between Babai re-roundings (0: only at the end).
  double lr = 1e-2;
  double lambda = 1e-2;
  double sigma_lo = 0.5;
  double sigma_hi = 2.0;
  bool allocate_bits = true;
  bool search_scales = true;  // Per-row scale search at every rounding (header comment).
};

struct GlvqReport {
  double loss_init = 0.0;   // Output-error term of GroupLoss, summed over groups, at the init.
  double loss_final = 0.0;  // The same for the stored state.
  int groups_up = 0;        // Column groups at N+1 and at N-1 bits.
  int groups_down = 0;
};

// rows x cols weights; h: E[x x^T] [cols][cols] row-major (nullptr = I).
absl::StatusOr<QuantizedMatrix> QuantizeGlvq(const float* w, int64_t rows, int64_t cols, const double* h,
                                             const GlvqOptions& options, GlvqReport* report = nullptr,
                                             kernels::ThreadPool* pool = nullptr);

// The pieces, exposed for tests (tests/python/test_glvq_math.py drives them
// through tests/python/cpp/glvq_check.cc against numpy / torch float64).
namespace glvq {

// F and its inverse (the format's formula), in double.
double Compand(double x, double mu);
double Expand(double y, double mu);

// Lower-triangular L with L L^T = a (d x d row-major, symmetric positive
// definite); FailedPrecondition when a pivot is not positive.
absl::StatusOr<std::vector<double>> Cholesky(const std::vector<double>& a, int d);

// Inverse of the leading n x n block of g (d x d row-major), Gauss-Jordan
// with partial pivoting; FailedPrecondition when singular.
absl::StatusOr<std::vector<double>> InverseLeading(const std::vector<double>& g, int d, int n);

// Babai rounding onto the coset lattice G(Z^n + 1/2): given ginv, the
// inverse of G's leading n x n block (n x n), z_j = clamp(round((G^-1 u)_j -
// 1/2), -2^(b-1), 2^(b-1) - 1) (ties away from zero, std::round).
void BabaiRound(const double* ginv, int n, const double* u, int bits, int* z);

// g (d x d) <- U clamp(S, lo, hi) V^T (one-sided Jacobi SVD).
void ClampSingularValues(double* g, int d, double lo, double hi);
// The singular values of g (d x d), descending.
std::vector<double> SingularValues(const double* g, int d);

// clamp(100 tanh(kappa/10), 10, 255), kappa = E[(x-m)^4] / E[(x-m)^2]^2
// (population moments; 10 for n < 2 or zero variance).
double InitialMu(const float* values, int64_t n);

// Per-group widths (rule in the header comment). salience and len: [groups].
std::vector<uint8_t> AllocateBits(const std::vector<double>& salience, const std::vector<int64_t>& len,
                                  int64_t group_size, int bits);

// One column group's problem: w [rows][len] (row stride `stride`), h
// [len][len] (nullptr = I), scales [rows], codes z [rows][len] (integer
// points, fixed), generator g and g0 (d x d), mu.
struct GroupProblem {
  int64_t rows = 0;
  int64_t len = 0;
  int64_t stride = 0;
  int d = 0;
  int bits = 0;
  const float* w = nullptr;
  const double* h = nullptr;
  const double* scales = nullptr;
  const int* z = nullptr;
  const double* g0 = nullptr;
  double lambda = 0.0;
  double den = 0.0;  // tr(W H W^T) when known (> 0); computed otherwise.
};
// GroupLoss (header comment) at (g, mu); with grad_g (d x d) and grad_mu
// non-null, their gradients (exact, double). *data_term (optional) receives
// the output-error term alone.
double GroupLoss(const GroupProblem& p, const double* g, double mu, double* grad_g, double* grad_mu,
                 double* data_term = nullptr);

}  // namespace glvq
}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_GLVQ_H_
