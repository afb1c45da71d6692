#include "lcd/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"

namespace lcd::runtime {
namespace {

// NaN fails every comparison, so `!InRange` also rejects NaN.
bool InRange(double v, double lo, double hi) { return v >= lo && v <= hi; }

absl::Status OutOfRange(const char* field, double value, const char* valid) {
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, " is out of range (valid: ", valid, ")"));
}

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// xoshiro256** (Blackman & Vigna): fixed algorithm, so draws are identical
// on every platform for a given seed.
uint64_t NextU64(uint64_t s[4]) {
  const uint64_t result = Rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = Rotl(s[3], 45);
  return result;
}

// Uniform in [0, 1) with 53 random bits.
double NextDouble(uint64_t s[4]) { return static_cast<double>(NextU64(s) >> 11) * 0x1.0p-53; }

int32_t Argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;  // Strict: ties keep the lowest id.
  }
  return static_cast<int32_t>(best);
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  if (!InRange(temperature, 0.0, 100.0)) return OutOfRange("temperature", temperature, "[0, 100]");
  if (top_k < 0) return OutOfRange("top_k", static_cast<double>(top_k), ">= 0");
  if (!(top_p > 0.0 && top_p <= 1.0)) return OutOfRange("top_p", top_p, "(0, 1]");
  if (!InRange(min_p, 0.0, 1.0)) return OutOfRange("min_p", min_p, "[0, 1]");
  if (!(repetition_penalty > 0.0 && repetition_penalty <= 10.0)) {
    return OutOfRange("repetition_penalty", repetition_penalty, "(0, 10]");
  }
  if (!InRange(presence_penalty, -2.0, 2.0)) return OutOfRange("presence_penalty", presence_penalty, "[-2, 2]");
  if (!InRange(frequency_penalty, -2.0, 2.0)) {
    return OutOfRange("frequency_penalty", frequency_penalty, "[-2, 2]");
  }
  if (max_new_tokens < 1) return OutOfRange("max_new_tokens", static_cast<double>(max_new_tokens), ">= 1");
  for (const std::string& s : stop_strings) {
    if (s.empty()) return absl::InvalidArgumentError("stop_strings contains an empty string");
  }
  for (int32_t id : stop_token_ids) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("stop_token_ids contains negative id ", id));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  uint64_t seed = 0;
  if (params.seed.has_value()) {
    seed = *params.seed;
  } else {
    std::random_device rd;
    seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  for (uint64_t& word : rng_state_) word = SplitMix64(seed);
}

int32_t Sampler::Sample(float* logits, int64_t vocab_size, const std::vector<int32_t>& prompt_tokens,
                        const std::vector<int32_t>& output_tokens) {
  // 1. Penalties. Ids outside the vocabulary cannot have logits; skip them.
  if (params_.repetition_penalty != 1.0) {
    const float p = static_cast<float>(params_.repetition_penalty);
    std::unordered_set<int32_t> seen;
    auto penalise = [&](int32_t id) {
      if (id < 0 || id >= vocab_size || !seen.insert(id).second) return;
      float& l = logits[id];
      l = l > 0 ? l / p : l * p;
    };
    for (int32_t id : prompt_tokens) penalise(id);
    for (int32_t id : output_tokens) penalise(id);
  }
  if (params_.presence_penalty != 0.0 || params_.frequency_penalty != 0.0) {
    std::unordered_map<int32_t, int64_t> counts;
    for (int32_t id : output_tokens) {
      if (id >= 0 && id < vocab_size) ++counts[id];
    }
    for (const auto& [id, count] : counts) {
      logits[id] -= static_cast<float>(params_.presence_penalty +
                                       params_.frequency_penalty * static_cast<double>(count));
    }
  }

  const bool greedy = params_.temperature == 0.0 || params_.top_k == 1;
  if (!greedy && params_.temperature != 1.0) {
    const float inv_t = static_cast<float>(1.0 / params_.temperature);
    for (int64_t i = 0; i < vocab_size; ++i) logits[i] *= inv_t;
  }
  const float max_logit = logits[Argmax(logits, vocab_size)];
  const int32_t chosen = greedy ? Argmax(logits, vocab_size) : Draw(logits, vocab_size, max_logit);

  last_top_.clear();
  if (num_logprobs_ > 0) {
    // Full-vocabulary log-softmax in double, only when logprobs are asked
    // for: reported before truncation, as vLLM reports them.
    double total = 0.0;
    for (int64_t i = 0; i < vocab_size; ++i) total += std::exp(static_cast<double>(logits[i]) - max_logit);
    const double log_total = std::log(total);
    auto logprob = [&](int32_t id) {
      return static_cast<float>(static_cast<double>(logits[id]) - max_logit - log_total);
    };
    last_logprob_ = logprob(chosen);
    const int64_t n = std::min<int64_t>(num_logprobs_, vocab_size);
    std::vector<int32_t>& ids = ids_;
    ids.resize(static_cast<size_t>(vocab_size));
    for (int64_t i = 0; i < vocab_size; ++i) ids[i] = static_cast<int32_t>(i);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < n; ++i) last_top_.push_back({ids[i], logprob(ids[i])});
  }
  return chosen;
}

int32_t Sampler::Draw(const float* logits, int64_t vocab_size, float max_logit) {
  // Unnormalised probabilities in double; every step below costs what its
  // option asks for: top-k a partial sort of k, top-p a sorted prefix grown
  // only until it holds the requested mass, min-p one filtering pass.
  auto prob = [&](int32_t id) { return std::exp(static_cast<double>(logits[id]) - max_logit); };
  // Candidate order: by probability (= by logit), descending; ties by lower
  // id, so the result does not depend on the sort implementation.
  auto by_prob = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::vector<int32_t>& ids = ids_;
  ids.resize(static_cast<size_t>(vocab_size));
  for (int64_t i = 0; i < vocab_size; ++i) ids[i] = static_cast<int32_t>(i);
  int64_t keep = vocab_size;
  int64_t sorted = 0;  // ids[0, sorted) are the top `sorted` candidates, in order
  if (params_.top_k > 0 && params_.top_k < vocab_size) {
    keep = sorted = params_.top_k;
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), by_prob);
  }
  if (params_.top_p < 1.0) {
    // HF TopP: mass measured on the distribution renormalised after top-k.
    double kept_mass = 0.0;
    for (int64_t i = 0; i < keep; ++i) kept_mass += prob(ids[i]);
    double cum = 0.0;
    int64_t n = 0;
    while (n < keep) {
      if (n == sorted) {  // extend the sorted prefix, doubling its length
        const int64_t grow = std::min(keep - sorted, std::max<int64_t>(64, sorted));
        std::partial_sort(ids.begin() + sorted, ids.begin() + sorted + grow, ids.begin() + keep, by_prob);
        sorted += grow;
      }
      cum += prob(ids[n]) / kept_mass;
      ++n;
      if (cum >= params_.top_p) break;
    }
    keep = n;
  }
  if (params_.min_p > 0.0) {
    const double threshold = params_.min_p;  // p_max is prob(argmax) = exp(0) = 1
    int64_t out = 0;
    for (int64_t i = 0; i < keep; ++i) {
      if (prob(ids[i]) >= threshold) ids[out++] = ids[i];
    }
    keep = out;  // >= 1: the max itself always survives.
  }
  double mass = 0.0;
  for (int64_t i = 0; i < keep; ++i) mass += prob(ids[i]);
  const double u = NextDouble(rng_state_) * mass;
  double cum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += prob(ids[i]);
    if (u < cum) return ids[i];
  }
  return ids[keep - 1];  // rounding left u >= cum
}

}  // namespace lcd::runtime
