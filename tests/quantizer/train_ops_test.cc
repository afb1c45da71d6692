// Fast checks of the training core without Python: every operation's backward
// against central finite differences of its own forward (fp32, so the bound
// is loose: 1e-2 of the gradient's largest entry; the tight float64 parity
// is tests/python/test_train_parity.py), that backward accumulates, that a
// TrainModel step is bit-identical for 1 and 2 pool threads (OpenBLAS threads fixed), its input errors,
// and AdamW / LR schedule / clipping against their formulas.
#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lcd/quantizer/train/codebook_linear.h"
#include "lcd/quantizer/train/ops.h"
#include "lcd/quantizer/train/optimizer.h"
#include "lcd/quantizer/train/train_model.h"
#include "quantizer_test_util.h"

namespace lcd::quantizer::train {
namespace {

using kernels::testing::SeedMessage;
using test_util::FreshSeed;

std::vector<float> Randn(std::mt19937_64& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

double Dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Compares `grad` (analytic d loss / d x) with central differences of
// `loss()` (which reads x) at every element of x.
void CheckGrad(const std::string& what, std::vector<float>& x, const std::vector<float>& grad,
               const std::function<double()>& loss, float h = 1e-2f) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  double gmax = 1e-12, err = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float x0 = x[i];
    x[i] = x0 + h;
    const double up = loss();
    x[i] = x0 - h;
    const double down = loss();
    x[i] = x0;
    const double fd = (up - down) / (2.0 * h);
    gmax = std::max(gmax, std::abs(fd));
    if (std::abs(fd - grad[i]) > err) {
      err = std::abs(fd - grad[i]);
      worst = i;
    }
  }
  EXPECT_LE(err / gmax, 1e-2) << what << ": element " << worst << " analytic " << grad[worst];
}

class TrainOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = FreshSeed();
    rng_.seed(seed_);
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  kernels::ThreadPool pool_{2};
};

TEST_F(TrainOpsTest, RmsNormMatchesFiniteDifferencesAndAccumulates) {
  SCOPED_TRACE(SeedMessage(seed_));
  const int64_t T = 3, C = 7;
  std::vector<float> x = Randn(rng_, T * C), w = Randn(rng_, C, 0.3f), dout = Randn(rng_, T * C);
  for (float& v : w) v += 1.0f;
  std::vector<float> y(T * C), rstd(T);
  auto loss = [&] {
    RmsNormForward(x.data(), w.data(), T, C, 1e-5f, y.data(), rstd.data(), &pool_);
    return Dot(y, dout);
  };
  loss();
  std::vector<float> dx(T * C, 0.5f), dw(C, -0.25f);  // Non-zero: backward must add.
  RmsNormBackward(dout.data(), x.data(), w.data(), rstd.data(), T, C, dx.data(), dw.data(), &pool_);
  for (float& v : dx) v -= 0.5f;
  for (float& v : dw) v += 0.25f;
  CheckGrad("rmsnorm dx", x, dx, loss);
  CheckGrad("rmsnorm dw", w, dw, loss);
}

TEST_F(TrainOpsTest, RopeMatchesFiniteDifferences) {
  SCOPED_TRACE(SeedMessage(seed_));
  const int64_t B = 2, L = 5, H = 3, D = 6;
  std::vector<float> inv_freq = {1.0f, 0.3f, 0.05f};
  std::vector<float> cos(L * D / 2), sin(L * D / 2);
  RopeTables(inv_freq.data(), L, D, cos.data(), sin.data());
  std::vector<float> x = Randn(rng_, B * L * H * D), dout = Randn(rng_, x.size());
  auto loss = [&] {
    std::vector<float> y = x;
    RopeForward(y.data(), B, L, H, D, cos.data(), sin.data());
    return Dot(y, dout);
  };
  std::vector<float> dx = dout;
  RopeBackward(dx.data(), B, L, H, D, cos.data(), sin.data());
  CheckGrad("rope dx", x, dx, loss);
}

TEST_F(TrainOpsTest, LinearWithBiasMatchesFiniteDifferences) {
  SCOPED_TRACE(SeedMessage(seed_));
  const int64_t T = 4, K = 5, N = 3;
  std::vector<float> x = Randn(rng_, T * K), w = Randn(rng_, N * K), b = Randn(rng_, N), dout = Randn(rng_, T * N);
  std::vector<float> y(T * N);
  auto loss = [&] {
    LinearForward(x.data(), w.data(), b.data(), T, K, N, y.data());
    return Dot(y, dout);
  };
  std::vector<float> dx(T * K, 0.0f), dw(N * K, 0.0f), db(N, 0.0f);
  LinearBackward(dout.data(), x.data(), w.data(), T, K, N, dx.data(), dw.data(), db.data(), &pool_);
  CheckGrad("linear dx", x, dx, loss);
  CheckGrad("linear dw", w, dw, loss);
  CheckGrad("linear db", b, db, loss);
}

TEST_F(TrainOpsTest, CodebookLinearCentroidGradientsMatchFiniteDifferences) {
  SCOPED_TRACE(SeedMessage(seed_));
  CodebookShape s;
  s.rows = 3;
  s.cols = 7;
  s.group_size = 3;  // Groups of 3, 3 and 1 columns.
  s.k = 4;
  const int64_t T = 5;
  std::vector<float> x = Randn(rng_, T * s.cols), w = Randn(rng_, s.rows * s.cols);
  std::vector<float> cent = Randn(rng_, s.num_centroids()), dout = Randn(rng_, T * s.rows);
  std::vector<uint8_t> codes(s.rows * s.cols);
  CodebookAssign(w.data(), cent.data(), s, codes.data(), &pool_);
  for (int64_t i = 0; i < s.rows * s.cols; ++i) {
    const float* c = cent.data() + ((i / s.cols) * s.groups() + (i % s.cols) / s.group_size) * s.k;
    for (int64_t q = 0; q < s.k; ++q) ASSERT_LE(std::abs(w[i] - c[codes[i]]), std::abs(w[i] - c[q])) << i;
  }
  std::vector<float> w_hat(w.size()), y(T * s.rows);
  auto loss = [&] {  // Codes fixed: the loss as a function of the centroids (and x).
    CodebookLinearForward(x.data(), cent.data(), codes.data(), nullptr, s, T, w_hat.data(), y.data(), &pool_);
    return Dot(y, dout);
  };
  loss();
  std::vector<float> dw_hat(w.size()), dx(x.size(), 0.0f), dw(w.size(), 0.0f), dc(cent.size(), 0.0f);
  CodebookLinearBackward(dout.data(), x.data(), w_hat.data(), codes.data(), s, T, dw_hat.data(), dx.data(), dw.data(),
                         dc.data(), nullptr, &pool_);
  CheckGrad("codebook dcentroids", cent, dc, loss);
  CheckGrad("codebook dx", x, dx, loss);
  // Straight-through: the latent weights get dL/dŴ itself, whose per-group
  // sums by code are the centroid gradients.
  std::vector<float> sums(cent.size(), 0.0f);
  for (int64_t i = 0; i < s.rows * s.cols; ++i) {
    sums[((i / s.cols) * s.groups() + (i % s.cols) / s.group_size) * s.k + codes[i]] += dw[i];
  }
  for (size_t j = 0; j < sums.size(); ++j) EXPECT_NEAR(sums[j], dc[j], 1e-5) << j;
}

// LCD.md step 6's centroid merge/split on hand-worked groups (group 8,
// k = 4, tau 0.05 of the range): group 0 merges its two near centroids and
// splits the most loaded; group 1 has no near pair; group 2's split would
// leave a half empty. Expected values worked out by hand.
TEST(CodebookMergeSplitTest, HandWorkedGroups) {
  CodebookShape s;
  s.rows = 1;
  s.cols = 24;
  s.group_size = 8;
  s.k = 4;
  std::vector<float> w = {-1.0f, -0.9f, -0.1f, 0.0f, 0.05f, 0.1f, 0.9f, 1.0f,   // near pair 0.0 / 0.02
                          -1.0f, -0.5f, -0.4f, 0.0f, 0.1f, 0.4f, 0.5f, 1.0f,    // centroids far apart
                          -1.0f, 1.0f,  1.0f,  1.0f, 1.0f, 1.0f, 1.0f, 1.0f};   // m's members all equal
  std::vector<float> cent = {-0.95f, 0.0f, 0.02f, 0.95f, -0.9f, -0.3f, 0.3f, 0.9f, -1.0f, 1.0f, 1.001f, 3.0f};
  std::vector<uint8_t> codes(w.size());
  CodebookAssign(w.data(), cent.data(), s, codes.data(), nullptr);
  const std::vector<float> cent0 = cent;
  const std::vector<uint8_t> codes0 = codes;
  std::vector<int64_t> changed;
  EXPECT_EQ(CodebookMergeSplit(w.data(), cent.data(), s, 0.05f, codes.data(), &changed), 1);
  EXPECT_EQ(changed, std::vector<int64_t>{0});
  // Group 0: counts 2/2/2/2; 1 and 2 merge at 0.01 (4 members), which is then
  // the most loaded: {-0.1, 0.0} -> -0.05 in slot 1, {0.05, 0.1} -> 0.075 in slot 2.
  const std::vector<float> want = {-0.95f, -0.05f, 0.075f, 0.95f};
  for (int q = 0; q < 4; ++q) EXPECT_NEAR(cent[q], want[q], 1e-6) << q;
  EXPECT_EQ(std::vector<uint8_t>(codes.begin(), codes.begin() + 8), (std::vector<uint8_t>{0, 0, 1, 1, 2, 2, 3, 3}));
  // Groups 1 and 2 untouched.
  EXPECT_EQ(std::vector<float>(cent.begin() + 4, cent.end()), std::vector<float>(cent0.begin() + 4, cent0.end()));
  EXPECT_EQ(std::vector<uint8_t>(codes.begin() + 8, codes.end()), std::vector<uint8_t>(codes0.begin() + 8, codes0.end()));
  // tau 0: nothing is nearer than 0.
  EXPECT_EQ(CodebookMergeSplit(w.data(), cent.data(), s, 0.0f, codes.data(), nullptr), 0);
}

// On random groups: every group the call reports changed has its codes at the
// nearest centroid and exactly three of its k centroids' values replaced at
// most; every other group is bit-identical.
TEST_F(TrainOpsTest, CodebookMergeSplitLeavesOtherGroupsAndAssignsNearest) {
  SCOPED_TRACE(SeedMessage(seed_));
  CodebookShape s;
  s.rows = 7;
  s.cols = 45;
  s.group_size = 16;  // The last group of each row is 13 wide.
  s.k = 4;
  std::vector<float> w = Randn(rng_, s.rows * s.cols), cent = Randn(rng_, s.num_centroids());
  std::vector<uint8_t> codes(w.size());
  CodebookAssign(w.data(), cent.data(), s, codes.data(), nullptr);
  const std::vector<float> cent0 = cent;
  const std::vector<uint8_t> codes0 = codes;
  std::vector<int64_t> changed;
  const int64_t n = CodebookMergeSplit(w.data(), cent.data(), s, 0.2f, codes.data(), &changed);
  ASSERT_EQ(n, static_cast<int64_t>(changed.size()));
  EXPECT_GT(n, 0);
  std::vector<uint8_t> nearest(codes.size());
  CodebookAssign(w.data(), cent.data(), s, nearest.data(), nullptr);
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int64_t g = 0; g < s.groups(); ++g) {
      const int64_t gi = r * s.groups() + g;
      const bool was_changed = std::find(changed.begin(), changed.end(), gi) != changed.end();
      int replaced = 0;
      for (int64_t q = 0; q < s.k; ++q) replaced += cent[gi * s.k + q] != cent0[gi * s.k + q];
      EXPECT_LE(replaced, was_changed ? 3 : 0) << gi;
      for (int64_t c = g * s.group_size; c < std::min(s.cols, (g + 1) * s.group_size); ++c) {
        const int64_t i = r * s.cols + c;
        EXPECT_EQ(codes[i], was_changed ? nearest[i] : codes0[i]) << gi << " " << c;
      }
    }
  }
}

TEST_F(TrainOpsTest, GqaAttentionMatchesFiniteDifferences) {
  SCOPED_TRACE(SeedMessage(seed_));
  const int64_t B = 2, L = 5, H = 4, KVH = 2, D = 6;
  std::vector<float> q = Randn(rng_, B * L * H * D), k = Randn(rng_, B * L * KVH * D), v = Randn(rng_, k.size());
  std::vector<float> dout = Randn(rng_, q.size()), att(B * H * L * L), y(q.size());
  auto loss = [&] {
    AttentionForward(q.data(), k.data(), v.data(), B, L, H, KVH, D, att.data(), y.data(), &pool_);
    return Dot(y, dout);
  };
  loss();
  std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
  AttentionBackward(dout.data(), q.data(), k.data(), v.data(), att.data(), B, L, H, KVH, D, dq.data(), dk.data(),
                    dv.data(), &pool_);
  CheckGrad("attention dq", q, dq, loss);
  CheckGrad("attention dk", k, dk, loss);
  CheckGrad("attention dv", v, dv, loss);
}

TEST_F(TrainOpsTest, SwiGluAndEmbeddingMatchFiniteDifferences) {
  SCOPED_TRACE(SeedMessage(seed_));
  const int64_t n = 23;
  std::vector<float> g = Randn(rng_, n, 2.0f), u = Randn(rng_, n), dout = Randn(rng_, n), y(n);
  auto loss = [&] {
    SwiGluForward(g.data(), u.data(), n, y.data(), &pool_);
    return Dot(y, dout);
  };
  std::vector<float> dg(n, 0.0f), du(n, 0.0f);
  SwiGluBackward(dout.data(), g.data(), u.data(), n, dg.data(), du.data(), &pool_);
  CheckGrad("swiglu dgate", g, dg, loss);
  CheckGrad("swiglu dup", u, du, loss);

  const int64_t V = 6, C = 4, T = 5;
  const std::vector<int32_t> tokens = {3, 1, 3, 5, 3};
  std::vector<float> table = Randn(rng_, V * C), dy = Randn(rng_, T * C), e(T * C);
  auto eloss = [&] {
    EmbeddingForward(table.data(), tokens.data(), T, C, e.data());
    return Dot(e, dy);
  };
  std::vector<float> dtable(V * C, 0.0f);
  EmbeddingBackward(dy.data(), tokens.data(), T, C, dtable.data());
  CheckGrad("embedding dtable", table, dtable, eloss);
}

TEST_F(TrainOpsTest, LossesMatchFiniteDifferences) {
  SCOPED_TRACE(SeedMessage(seed_));
  const int64_t N = 3, V = 7;
  std::vector<float> z = Randn(rng_, N * V, 2.0f), t = Randn(rng_, N * V, 2.0f);
  const std::vector<int32_t> targets = {0, 6, 2};
  for (double gamma : {0.0, 1.0, 0.3}) {
    std::vector<float> dz(N * V, 0.0f);
    CakldLoss(z.data(), t.data(), N, V, gamma, dz.data(), &pool_);
    CheckGrad("cakld gamma " + std::to_string(gamma), z, dz,
              [&] { return CakldLoss(z.data(), t.data(), N, V, gamma, nullptr, &pool_); });
  }
  std::vector<float> dz(N * V, 0.0f);
  CrossEntropyLoss(z.data(), targets.data(), N, V, dz.data(), &pool_);
  CheckGrad("cross-entropy", z, dz, [&] { return CrossEntropyLoss(z.data(), targets.data(), N, V, nullptr, &pool_); });
  // KL of a distribution with itself is 0; CAKLD mixes the two KLs linearly.
  EXPECT_NEAR(CakldLoss(z.data(), z.data(), N, V, 0.5, nullptr, nullptr), 0.0, 1e-12);
  const double f = ForwardKlLoss(z.data(), t.data(), N, V, nullptr, nullptr);
  const double r = ReverseKlLoss(z.data(), t.data(), N, V, nullptr, nullptr);
  EXPECT_NEAR(CakldLoss(z.data(), t.data(), N, V, 0.25, nullptr, nullptr), 0.25 * r + 0.75 * f, 1e-12);
}

runtime::ModelConfig TinyConfig(runtime::Architecture arch, bool tied) {
  runtime::ModelConfig c;
  c.arch = arch;
  // Large enough that OpenBLAS splits its GEMMs over both threads.
  c.vocab_size = 301;
  c.hidden_size = 64;
  c.intermediate_size = 160;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  c.attention_bias = arch == runtime::Architecture::kQwen2;
  return c;
}

// One CE step's loss and gradients.
std::vector<float> StepGrads(TrainModel& m, const std::vector<int32_t>& tokens, int64_t B, int64_t L, double* loss) {
  m.ZeroGrad();
  EXPECT_TRUE(m.Forward(tokens.data(), B, L).ok());
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(0);
  *loss = CrossEntropyLoss(m.logits(), targets.data(), B * L, m.config().vocab_size, m.dlogits(), m.pool());
  m.Backward();
  return std::vector<float>(m.grads(), m.grads() + m.num_params());
}

TEST_F(TrainOpsTest, TrainModelStepIsIdenticalForOneAndTwoPoolThreads) {
  SCOPED_TRACE(SeedMessage(seed_));
  for (auto [arch, tied] : {std::pair{runtime::Architecture::kLlama, true},
                            std::pair{runtime::Architecture::kQwen2, false}}) {
    const int64_t B = 2, L = 33;
    std::uniform_int_distribution<int32_t> tok(0, 300);
    std::vector<int32_t> tokens(B * L);
    for (int32_t& t : tokens) t = tok(rng_);
    double loss1 = 0, loss2 = 0;
    auto m1 = TrainModel::Create(TinyConfig(arch, tied), 1);
    ASSERT_TRUE(m1.ok()) << m1.status();
    (*m1)->InitRandom(seed_, 0.2f);
    // OpenBLAS's own partition of a GEMM depends on its thread count; fix it
    // so that only the training core's pool varies.
    SetBlasThreads(2);
    const std::vector<float> g1 = StepGrads(**m1, tokens, B, L, &loss1);
    auto m2 = TrainModel::Create(TinyConfig(arch, tied), 2);
    ASSERT_TRUE(m2.ok()) << m2.status();
    (*m2)->InitRandom(seed_, 0.2f);
    const std::vector<float> g2 = StepGrads(**m2, tokens, B, L, &loss2);
    EXPECT_EQ(loss1, loss2);
    EXPECT_EQ(g1, g2) << "gradients depend on the thread count";
    EXPECT_GT(ClipGradNorm(std::vector<float>(g1).data(), static_cast<int64_t>(g1.size()), 0.0), 0.0);
    // Buffers are reused: a second step on the same model gives the same result.
    double loss3 = 0;
    EXPECT_EQ(StepGrads(**m2, tokens, B, L, &loss3), g2);
    EXPECT_EQ(loss3, loss2);
    EXPECT_EQ((*m1)->Find("lm_head.weight").ok(), !tied);
    EXPECT_EQ((*m1)->Find("model.layers.1.self_attn.k_proj.bias").ok(), arch == runtime::Architecture::kQwen2);
  }
}

TEST_F(TrainOpsTest, TrainModelRejectsBadInputs) {
  auto m = TrainModel::Create(TinyConfig(runtime::Architecture::kLlama, false), 1);
  ASSERT_TRUE(m.ok());
  std::vector<int32_t> tokens(65, 1);
  absl::Status s = (*m)->Forward(tokens.data(), 1, 65);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("max_position_embeddings"), std::string_view::npos) << s;
  tokens[3] = 301;
  s = (*m)->Forward(tokens.data(), 2, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token id 301"), std::string_view::npos) << s;
  runtime::ModelConfig bad = TinyConfig(runtime::Architecture::kLlama, false);
  bad.num_kv_heads = 3;
  EXPECT_EQ(TrainModel::Create(bad, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

// LCD's block-wise stage runs one block from its kept input: the same
// values and gradients as the forward from the tokens, nothing below it, and
// code re-assignment of that block alone.
TEST_F(TrainOpsTest, ForwardBlocksFromAKeptResidualMatchesTheForwardFromTokens) {
  SCOPED_TRACE(SeedMessage(seed_));
  runtime::ModelConfig config = TinyConfig(runtime::Architecture::kQwen2, false);
  config.num_layers = 3;
  auto made = TrainModel::Create(config, 2);
  ASSERT_TRUE(made.ok()) << made.status();
  TrainModel& m = **made;
  m.InitRandom(seed_, 0.2f);
  std::vector<std::pair<std::string, CodebookSpec>> specs;
  for (int l = 0; l < 3; ++l) {
    specs.emplace_back(absl::StrCat("model.layers.", l, ".mlp.up_proj.weight"), CodebookSpec{32, 4});
  }
  ASSERT_TRUE(m.EnableCodebook(specs).ok());
  for (const auto& [name, spec] : specs) {
    const ParamTensor* c = m.Find(name.substr(0, name.size() - 7) + ".centroids").value();
    const std::vector<float> v = Randn(rng_, static_cast<size_t>(c->size), 0.2f);
    std::copy(v.begin(), v.end(), m.params() + c->offset);
  }
  EXPECT_GT(m.ReassignCodes(), 0);
  m.FreezeDense(true);
  const int64_t B = 2, L = 11, n = B * L * config.hidden_size;
  std::uniform_int_distribution<int32_t> tok(0, 300);
  std::vector<int32_t> tokens(B * L);
  for (int32_t& t : tokens) t = tok(rng_);
  const std::vector<float> dout = Randn(rng_, static_cast<size_t>(n));

  // From the tokens through blocks 0..1, back to block 1.
  m.ZeroGrad();
  ASSERT_TRUE(m.Forward(tokens.data(), B, L, 2).ok());
  const std::vector<float> x1(m.residual(1), m.residual(1) + n), y(m.residual(2), m.residual(2) + n);
  m.BackwardBlocks(dout.data(), 1);
  const std::vector<float> g(m.grads(), m.grads() + m.num_params());
  // Block 1 alone from its kept input: the same output and gradients; first
  // 0 reaches no lower block.
  m.ZeroGrad();
  ASSERT_TRUE(m.ForwardBlocks(x1.data(), B, L, 1, 2).ok());
  EXPECT_EQ(std::vector<float>(m.residual(2), m.residual(2) + n), y);
  m.BackwardBlocks(dout.data(), 0);
  EXPECT_EQ(std::vector<float>(m.grads(), m.grads() + m.num_params()), g);
  const ParamTensor* w0 = m.Find("model.layers.0.mlp.up_proj.weight").value();
  const ParamTensor* w1 = m.Find("model.layers.1.mlp.up_proj.weight").value();
  EXPECT_TRUE(std::all_of(g.begin() + w0->offset, g.begin() + w0->offset + w0->size, [](float v) { return v == 0; }));
  EXPECT_TRUE(std::any_of(g.begin() + w1->offset, g.begin() + w1->offset + w1->size, [](float v) { return v != 0; }));
  m.Backward();  // No logits after ForwardBlocks: a no-op.
  EXPECT_EQ(std::vector<float>(m.grads(), m.grads() + m.num_params()), g);

  for (auto [first, end] : {std::pair<int64_t, int64_t>{-1, 1}, {1, 1}, {2, 4}}) {
    const absl::Status s = m.ForwardBlocks(x1.data(), B, L, first, end);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << first << " " << end;
  }
  EXPECT_EQ(m.ForwardBlocks(x1.data(), 1, 65, 0, 1).code(), absl::StatusCode::kInvalidArgument);

  // Re-assignment by prefix touches that block's codes only.
  for (const ParamTensor* w : {w0, w1}) {
    const std::vector<float> noise = Randn(rng_, static_cast<size_t>(w->size), 0.3f);
    for (int64_t i = 0; i < w->size; ++i) m.params()[w->offset + i] += noise[static_cast<size_t>(i)];
  }
  const std::vector<uint8_t> c0 = m.quantizer("model.layers.0.mlp.up_proj.weight").value()->codes();
  EXPECT_GT(m.ReassignCodes("model.layers.1."), 0);
  EXPECT_EQ(m.quantizer("model.layers.0.mlp.up_proj.weight").value()->codes(), c0);
  EXPECT_EQ(m.ReassignCodes("model.layers.1."), 0);
  EXPECT_GT(m.ReassignCodes(), 0);  // Block 0's, left until now.
}

TEST_F(TrainOpsTest, EnableCodebookKeepsValuesAndRejectsBadSpecs) {
  auto m = TrainModel::Create(TinyConfig(runtime::Architecture::kQwen2, false), 1);
  ASSERT_TRUE(m.ok());
  (*m)->InitRandom(seed_, 0.2f);
  TrainModel& model = **m;
  const ParamTensor bias_before = *model.Find("model.layers.1.self_attn.k_proj.bias").value();
  const std::vector<float> bias(model.params() + bias_before.offset,
                                model.params() + bias_before.offset + bias_before.size);
  auto expect_invalid = [&](const std::string& name, CodebookSpec spec, const std::string& what) {
    absl::Status s = model.EnableCodebook({{name, spec}});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name << ": " << s;
    EXPECT_NE(std::string(s.message()).find(what), std::string::npos) << s;
  };
  expect_invalid("model.layers.0.input_layernorm.weight", {8, 4}, "not a linear weight");
  expect_invalid("model.embed_tokens.weight", {8, 4}, "not a linear weight");
  expect_invalid("model.layers.0.mlp.up_proj.weight", {0, 4}, "group size must be >= 1");
  expect_invalid("model.layers.0.mlp.up_proj.weight", {8, 257}, "k in [1, 256]");
  EXPECT_EQ(model.EnableCodebook({{"model.layers.9.mlp.up_proj.weight", {8, 4}}}).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(model.EnableCodebook({{"model.layers.0.mlp.up_proj.weight", {48, 4}}, {"lm_head.weight", {64, 2}}}).ok());
  expect_invalid("model.layers.0.mlp.up_proj.weight", {8, 4}, "already quantized");
  {  // A quantizer must have its weight's shape.
    std::vector<std::pair<std::string, std::unique_ptr<LoopQuantizer>>> wrong;
    wrong.emplace_back("model.layers.0.mlp.gate_proj.weight",
                       std::make_unique<CodebookLoopQuantizer>(CodebookShape{64, 160, 8, 4}));
    absl::Status s = model.EnableQuantized(std::move(wrong));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(std::string(s.message()).find("shape [160, 64]"), std::string::npos) << s;
    wrong.clear();
    wrong.emplace_back("model.layers.0.mlp.gate_proj.weight", nullptr);
    EXPECT_EQ(model.EnableQuantized(std::move(wrong)).code(), absl::StatusCode::kInvalidArgument);
  }
  // Values survive the re-layout; the centroids tensor is [rows][groups][k], no decay.
  const ParamTensor* b = model.Find("model.layers.1.self_attn.k_proj.bias").value();
  EXPECT_EQ(std::vector<float>(model.params() + b->offset, model.params() + b->offset + b->size), bias);
  const ParamTensor* c = model.Find("model.layers.0.mlp.up_proj.centroids").value();
  EXPECT_EQ(c->shape, (std::vector<int64_t>{160, 2, 4}));  // 64 columns in groups of 48: 48 + 16.
  EXPECT_FALSE(c->decay);
  EXPECT_EQ(model.QuantizedWeights(), (std::vector<std::string>{"model.layers.0.mlp.up_proj.weight", "lm_head.weight"}));
  EXPECT_EQ(model.codes("model.layers.0.mlp.gate_proj.weight").status().code(), absl::StatusCode::kNotFound);
  // FreezeDense: only the two latent weights and their centroids train, and no dense gradient is computed.
  model.FreezeDense(true);
  std::vector<std::string> names;
  for (const ParamTensor& t : model.TrainableTensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.centroids",
                                             "lm_head.weight", "lm_head.centroids"}));
  float* cent = model.params() + c->offset;
  for (int64_t i = 0; i < c->size; ++i) cent[i] = 0.05f * static_cast<float>(i % 4) - 0.075f;
  const ParamTensor* hc = model.Find("lm_head.centroids").value();
  for (int64_t i = 0; i < hc->size; ++i) model.params()[hc->offset + i] = i % 2 ? 0.1f : -0.1f;
  EXPECT_GT(model.ReassignCodes(), 0);
  EXPECT_EQ(model.ReassignCodes(), 0);  // Idempotent.
  std::vector<int32_t> tokens(2 * 9);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i * 37 % 301);
  double loss = 0;
  const std::vector<float> g = StepGrads(model, tokens, 2, 9, &loss);
  double trained = 0, other = 0;
  for (const ParamTensor& t : model.tensors()) {
    double n = 0;
    for (int64_t i = 0; i < t.size; ++i) n += std::abs(g[t.offset + i]);
    (std::find(names.begin(), names.end(), t.name) != names.end() ? trained : other) += n;
  }
  EXPECT_GT(trained, 0.0);
  EXPECT_EQ(other, 0.0);
}

TEST(TrainOptimizerTest, AdamWStepsMatchTheFormula) {
  // Two tensors, one decayed; three steps against the formula in double.
  std::vector<ParamTensor> ts(2);
  ts[0].name = "w";
  ts[0].offset = 0;
  ts[0].size = 2;
  ts[0].decay = true;
  ts[1].name = "b";
  ts[1].offset = 2;
  ts[1].size = 1;
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt(3, o);
  std::vector<float> p = {1.0f, -2.0f, 0.5f};
  std::vector<double> pd(p.begin(), p.end()), m(3, 0.0), v(3, 0.0);
  const std::vector<std::vector<float>> grads = {{0.1f, -0.3f, 2.0f}, {0.2f, 0.1f, -1.0f}, {-0.05f, 0.0f, 0.5f}};
  const double lr = 0.01;
  for (int t = 1; t <= 3; ++t) {
    const std::vector<float>& g = grads[t - 1];
    opt.Step(p.data(), g.data(), ts, lr, nullptr);
    for (int i = 0; i < 3; ++i) {
      if (i < 2) pd[i] *= 1.0 - lr * o.weight_decay;
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.999, t));
      pd[i] -= lr * mh / (std::sqrt(vh) + o.eps);
    }
  }
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[i], pd[i], 1e-6) << i;
  EXPECT_EQ(opt.steps_taken(), 3);
}

TEST(TrainOptimizerTest, ScheduleAndClipping) {
  LrSchedule s;
  s.max_lr = 1.0;
  s.min_lr = 0.1;
  s.warmup_steps = 4;
  s.total_steps = 14;
  EXPECT_DOUBLE_EQ(s.At(0), 0.25);
  EXPECT_DOUBLE_EQ(s.At(3), 1.0);
  EXPECT_DOUBLE_EQ(s.At(4), 1.0);
  EXPECT_NEAR(s.At(9), 0.55, 1e-12);  // Half way: (max + min) / 2.
  EXPECT_NEAR(s.At(14), 0.1, 1e-12);
  EXPECT_NEAR(s.At(100), 0.1, 1e-12);
  s.kind = LrSchedule::Kind::kLinear;
  EXPECT_NEAR(s.At(6), 1.0 - 0.9 * 0.2, 1e-12);
  s.kind = LrSchedule::Kind::kConstant;
  EXPECT_DOUBLE_EQ(s.At(13), 1.0);
  EXPECT_FALSE(ParseLrScheduleKind("cosine-ish").ok());

  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(ClipGradNorm(g.data(), 2, 10.0), 5.0);
  EXPECT_EQ(g, (std::vector<float>{3.0f, 4.0f}));
  EXPECT_DOUBLE_EQ(ClipGradNorm(g.data(), 2, 1.0), 5.0);
  EXPECT_NEAR(g[0], 0.6, 1e-6);
  EXPECT_NEAR(g[1], 0.8, 1e-6);
}

}  // namespace
}  // namespace lcd::quantizer::train
