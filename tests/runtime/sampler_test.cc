#include "lcd/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lcd::runtime {
namespace {

using ::testing::HasSubstr;

SamplingParams Seeded(double temperature, uint64_t seed = 1234) {
  SamplingParams p;
  p.temperature = temperature;
  p.seed = seed;
  return p;
}

// Draws `n` samples from fresh copies of `logits`; returns counts per id.
std::vector<int> Histogram(Sampler& s, const std::vector<float>& logits, int n) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = logits;
    ++counts[s.Sample(l.data(), static_cast<int64_t>(l.size()), {}, {})];
  }
  return counts;
}

std::vector<double> SoftmaxD(const std::vector<float>& logits, double temperature) {
  double mx = -1e300;
  for (float l : logits) mx = std::max(mx, l / temperature);
  std::vector<double> p(logits.size());
  double z = 0;
  for (size_t i = 0; i < logits.size(); ++i) z += p[i] = std::exp(logits[i] / temperature - mx);
  for (double& v : p) v /= z;
  return p;
}

// Pearson chi-square statistic of observed counts against expected
// probabilities restricted to `support` (which must hold all the mass).
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& expected, int n) {
  double chi = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (expected[i] == 0) continue;
    const double e = expected[i] * n;
    chi += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi;
}

const std::vector<float> kLogits = {1.0f, 2.0f, 0.5f, 3.0f, -1.0f, 2.5f};

TEST(SamplerTest, GreedyPicksArgmaxAndLowestIdOnTies) {
  Sampler s(Seeded(0.0));
  std::vector<float> l = {0.1f, 5.0f, -2.0f, 5.0f, 4.9f};
  EXPECT_EQ(s.Sample(l.data(), 5, {}, {}), 1);
  SamplingParams p = Seeded(0.7);
  p.top_k = 1;  // top_k == 1 is greedy too.
  Sampler s2(p);
  std::vector<float> l2 = {3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s2.Sample(l2.data(), 3, {}, {}), 0);
}

TEST(SamplerTest, UnrestrictedMatchesSoftmaxWithTemperature) {
  constexpr int kN = 20000;
  Sampler s(Seeded(0.7));
  std::vector<int> counts = Histogram(s, kLogits, kN);
  // 5 degrees of freedom; p = 0.001 critical value is 20.5.
  EXPECT_LT(ChiSquare(counts, SoftmaxD(kLogits, 0.7), kN), 20.5);
}

TEST(SamplerTest, TopKRestrictsSupportAndRenormalises) {
  constexpr int kN = 20000;
  SamplingParams p = Seeded(1.0);
  p.top_k = 3;  // ids 3 (3.0), 5 (2.5), 1 (2.0)
  Sampler s(p);
  std::vector<int> counts = Histogram(s, kLogits, kN);
  std::vector<double> expected(kLogits.size(), 0.0);
  double z = std::exp(3.0) + std::exp(2.5) + std::exp(2.0);
  expected[3] = std::exp(3.0) / z;
  expected[5] = std::exp(2.5) / z;
  expected[1] = std::exp(2.0) / z;
  for (int id : {0, 2, 4}) EXPECT_EQ(counts[id], 0) << id;
  EXPECT_LT(ChiSquare(counts, expected, kN), 13.8);  // 2 dof, p = 0.001.
}

TEST(SamplerTest, TopPKeepsSmallestSetReachingMass) {
  // Probabilities 0.5, 0.3, 0.15, 0.05: top_p = 0.8 keeps {0, 1} exactly
  // (0.5 + 0.3 >= 0.8); top_p = 0.81 also needs id 2.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  constexpr int kN = 10000;
  for (auto [top_p, support] : std::vector<std::pair<double, std::set<int>>>{{0.79, {0, 1}}, {0.81, {0, 1, 2}}}) {
    SamplingParams p = Seeded(1.0, 7);
    p.top_p = top_p;
    Sampler s(p);
    std::vector<int> counts = Histogram(s, logits, kN);
    std::vector<double> expected(4, 0.0);
    double z = 0;
    for (int id : support) z += std::exp(logits[id]);
    for (int id : support) expected[id] = std::exp(logits[id]) / z;
    for (int id = 0; id < 4; ++id) {
      if (!support.count(id)) EXPECT_EQ(counts[id], 0) << "top_p=" << top_p << " id=" << id;
      else EXPECT_GT(counts[id], 0);
    }
    EXPECT_LT(ChiSquare(counts, expected, kN), 13.8) << top_p;
  }
}

TEST(SamplerTest, MinPDropsTokensBelowFractionOfMax) {
  // p = 0.5, 0.3, 0.15, 0.05; min_p = 0.25 -> threshold 0.125 keeps {0,1,2}.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p = Seeded(1.0, 99);
  p.min_p = 0.25;
  Sampler s(p);
  constexpr int kN = 10000;
  std::vector<int> counts = Histogram(s, logits, kN);
  EXPECT_EQ(counts[3], 0);
  std::vector<double> expected = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0};
  EXPECT_LT(ChiSquare(counts, expected, kN), 13.8);
}

TEST(SamplerTest, SameSeedSameDraws) {
  Sampler a(Seeded(1.0, 42)), b(Seeded(1.0, 42)), c(Seeded(1.0, 43));
  std::vector<int32_t> da, db, dc;
  for (int i = 0; i < 200; ++i) {
    std::vector<float> l1 = kLogits, l2 = kLogits, l3 = kLogits;
    da.push_back(a.Sample(l1.data(), 6, {}, {}));
    db.push_back(b.Sample(l2.data(), 6, {}, {}));
    dc.push_back(c.Sample(l3.data(), 6, {}, {}));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(SamplerTest, RepetitionPenaltyHfRule) {
  SamplingParams p = Seeded(0.0);
  p.repetition_penalty = 2.0;
  Sampler s(p);
  std::vector<float> l = {4.0f, -1.0f, 3.0f, 0.5f};
  // Seen: 0 (prompt, twice), 1 (output). Positive logits divided, negative multiplied, once each.
  int32_t id = s.Sample(l.data(), 4, {0, 0}, {1});
  EXPECT_FLOAT_EQ(l[0], 2.0f);
  EXPECT_FLOAT_EQ(l[1], -2.0f);
  EXPECT_FLOAT_EQ(l[2], 3.0f);
  EXPECT_FLOAT_EQ(l[3], 0.5f);
  EXPECT_EQ(id, 2);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesOnOutputOnly) {
  SamplingParams p = Seeded(0.0);
  p.presence_penalty = 0.5;
  p.frequency_penalty = 0.25;
  Sampler s(p);
  std::vector<float> l = {1.0f, 1.0f, 1.0f, 1.0f};
  s.Sample(l.data(), 4, /*prompt=*/{3, 3, 3}, /*output=*/{0, 0, 0, 1});
  EXPECT_FLOAT_EQ(l[0], 1.0f - 0.5f - 0.75f);
  EXPECT_FLOAT_EQ(l[1], 1.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(l[2], 1.0f);
  EXPECT_FLOAT_EQ(l[3], 1.0f);  // Prompt tokens are not penalised.
}

TEST(SamplerTest, LogprobsAreLogSoftmaxOfScaledLogits) {
  SamplingParams p = Seeded(0.5, 3);
  Sampler s(p);
  s.set_num_logprobs(2);
  std::vector<float> l = kLogits;
  int32_t id = s.Sample(l.data(), 6, {}, {});
  std::vector<double> probs = SoftmaxD(kLogits, 0.5);
  EXPECT_NEAR(s.last_logprob(), std::log(probs[id]), 1e-5);
  ASSERT_EQ(s.last_top_logprobs().size(), 2u);
  EXPECT_EQ(s.last_top_logprobs()[0].id, 3);
  EXPECT_EQ(s.last_top_logprobs()[1].id, 5);
  EXPECT_NEAR(s.last_top_logprobs()[1].logprob, std::log(probs[5]), 1e-5);
}

TEST(SamplingParamsTest, DefaultsValid) { EXPECT_TRUE(SamplingParams().Validate().ok()); }

TEST(SamplingParamsTest, EachBadFieldIsNamed) {
  struct Case {
    const char* field;
    void (*set)(SamplingParams&);
  };
  const Case cases[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = -0.1; }},
      {"temperature", [](SamplingParams& p) { p.temperature = 101; }},
      {"temperature", [](SamplingParams& p) { p.temperature = std::nan(""); }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.0; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.01; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.5; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.5; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 10.5; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 2.5; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -2.5; }},
      {"max_new_tokens", [](SamplingParams& p) { p.max_new_tokens = 0; }},
      {"stop_strings", [](SamplingParams& p) { p.stop_strings = {"ok", ""}; }},
      {"stop_token_ids", [](SamplingParams& p) { p.stop_token_ids = {-3}; }},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.set(p);
    absl::Status st = p.Validate();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.field));
  }
}

TEST(SamplerTest, TopPOverALargeNucleusKeepsExactlyItsPrefix) {
  // 300 equally likely tokens hold all the mass of a 5000-token vocabulary
  // (the rest sit 30 nats below). top_p = 0.895 keeps the first 269 of them
  // (268/300 < 0.895 <= 269/300; ties by lower id), a nucleus longer than
  // the sorter's first chunk, so
  // the sorted prefix has to grow several times to reach it.
  std::vector<float> logits(5000, -30.0f);
  std::vector<int32_t> top;
  for (int i = 0; i < 300; ++i) {
    const int32_t id = (i * 7919) % 5000;  // scattered over the vocabulary
    logits[id] = 0.0f;
    top.push_back(id);
  }
  std::sort(top.begin(), top.end());
  const std::set<int32_t> nucleus(top.begin(), top.begin() + 269);
  SamplingParams p = Seeded(1.0, 77);
  p.top_p = 0.895;
  Sampler s(p);
  const std::vector<int> counts = Histogram(s, logits, 3000);
  int outside = 0, beyond_first_chunks = 0;
  for (int32_t id = 0; id < 5000; ++id) {
    if (counts[id] == 0) continue;
    if (!nucleus.count(id)) outside += counts[id];
    if (id >= top[200]) beyond_first_chunks += counts[id];
  }
  EXPECT_EQ(outside, 0) << "a token outside the 0.895 nucleus was drawn";
  EXPECT_GT(beyond_first_chunks, 0) << "the nucleus was cut short";
}

TEST(SamplerTest, LogprobsOnlyWhenAsked) {
  // Greedy without logprobs reports none; with them, the full log-softmax.
  Sampler s(Seeded(0.0));
  std::vector<float> l = kLogits;
  EXPECT_EQ(s.Sample(l.data(), 6, {}, {}), 3);
  EXPECT_TRUE(s.last_top_logprobs().empty());
  s.set_num_logprobs(1);
  l = kLogits;
  EXPECT_EQ(s.Sample(l.data(), 6, {}, {}), 3);
  EXPECT_NEAR(s.last_logprob(), std::log(SoftmaxD(kLogits, 1.0)[3]), 1e-6);
  ASSERT_EQ(s.last_top_logprobs().size(), 1u);
  EXPECT_EQ(s.last_top_logprobs()[0].id, 3);
}

}  // namespace
}  // namespace lcd::runtime
