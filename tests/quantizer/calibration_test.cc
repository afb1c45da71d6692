// CollectCalibrationStats on the shipped tiny-shakespeare checkpoint: shapes
// and counts, and layer 0's q/k/v statistics against an oracle computed here
// in double from the checkpoint (input RMSNorm of the token embeddings).
// The text is a random slice of val.txt (seed printed; LCD_TEST_SEED).
#include "lcd/quantizer/calibration.h"

#include <cmath>
#include <cstdlib>
#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd/kernels/dtype.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/model_config.h"
#include "quantizer_test_util.h"

namespace lcd::quantizer {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A model that forwards everything but never reports linear inputs (the
// default SetLinearInputObserver): calibration must refuse it.
class DeafModel : public runtime::Model {
 public:
  explicit DeafModel(runtime::Model& inner) : inner_(inner) {}
  const runtime::ModelConfig& config() const override { return inner_.config(); }
  kernels::KvLayout KvLayoutFor(int64_t b, kernels::DType d) const override { return inner_.KvLayoutFor(b, d); }
  runtime::Backend& backend() const override { return inner_.backend(); }
  uint64_t WeightBytes() const override { return inner_.WeightBytes(); }
  absl::StatusOr<runtime::ForwardOutput> Forward(const std::vector<runtime::SeqBatchEntry>& batch,
                                                 runtime::KvCache& cache) override {
    return inner_.Forward(batch, cache);
  }

 private:
  runtime::Model& inner_;
};

class CalibrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test_util::TinyModelDir();
    absl::StatusOr<std::unique_ptr<runtime::Tokenizer>> tok = runtime::LoadTokenizer(dir_);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(*tok);
    absl::StatusOr<std::unique_ptr<runtime::Model>> model = runtime::Model::Load(dir_, {2});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }
  std::string dir_;
  std::unique_ptr<runtime::Tokenizer> tokenizer_;
  std::unique_ptr<runtime::Model> model_;
};

TEST_F(CalibrationTest, MatchesAnEmbeddingOracleAndCountsEverySample) {
  const uint64_t seed = test_util::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  absl::StatusOr<std::vector<int32_t>> all = TokenizeTextFile(dir_ + "/val.txt", *tokenizer_, 0);
  ASSERT_TRUE(all.ok()) << all.status();
  std::mt19937_64 rng(seed);
  const size_t count = 300;
  ASSERT_GT(all->size(), count);
  const size_t off = std::uniform_int_distribution<size_t>(0, all->size() - count)(rng);
  const std::vector<int32_t> tokens(all->begin() + off, all->begin() + off + count);

  CalibrationOptions options;
  options.window = 128;
  // The tokenizer adds no BOS (GPT-2 style); the config's bos_token_id,
  // <|endoftext|>, still exercises the BOS path.
  ASSERT_FALSE(model_->config().bos_token_ids.empty());
  options.bos = model_->config().bos_token_ids[0];
  int64_t progress_calls = 0;
  options.progress = [&](int64_t done, int64_t total) {
    ++progress_calls;
    EXPECT_EQ(done, progress_calls);
    EXPECT_EQ(total, 3);
  };
  absl::StatusOr<CalibrationStats> stats = CollectCalibrationStats(*model_, tokens, options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  // 300 text tokens in windows of 127 + BOS: 127, 127, 46.
  EXPECT_EQ(stats->windows, 3);
  EXPECT_EQ(progress_calls, 3);
  EXPECT_EQ(stats->text_tokens, 300);
  EXPECT_EQ(stats->samples, 303);

  const runtime::ModelConfig& c = model_->config();
  ASSERT_EQ(stats->mean_sq.size(), static_cast<size_t>(7 * c.num_layers + 1));
  ASSERT_NE(stats->Find("lm_head.weight"), nullptr);
  EXPECT_EQ(static_cast<int64_t>(stats->Find("lm_head.weight")->size()), c.hidden_size);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::pair<const char*, int64_t> expected[] = {
        {"self_attn.q_proj", c.hidden_size}, {"self_attn.k_proj", c.hidden_size},
        {"self_attn.v_proj", c.hidden_size}, {"self_attn.o_proj", c.num_heads * c.head_dim},
        {"mlp.gate_proj", c.hidden_size},    {"mlp.up_proj", c.hidden_size},
        {"mlp.down_proj", c.intermediate_size}};
    for (const auto& [name, cols] : expected) {
      const std::vector<float>* s = stats->Find(p + name + ".weight");
      ASSERT_NE(s, nullptr) << p << name;
      ASSERT_EQ(static_cast<int64_t>(s->size()), cols) << p << name;
      for (float v : *s) ASSERT_TRUE(std::isfinite(v) && v >= 0.0f) << p << name;
    }
    // q/k/v (and gate/up) read the same input.
    EXPECT_EQ(*stats->Find(p + "self_attn.q_proj.weight"), *stats->Find(p + "self_attn.v_proj.weight"));
    EXPECT_EQ(*stats->Find(p + "mlp.gate_proj.weight"), *stats->Find(p + "mlp.up_proj.weight"));
  }

  // Oracle: layer 0's attention input is RMSNorm(embedding) * input_layernorm.
  absl::StatusOr<std::unique_ptr<runtime::Checkpoint>> ckpt = runtime::Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<runtime::TensorView> emb_t = (*ckpt)->Get("model.embed_tokens.weight");
  absl::StatusOr<runtime::TensorView> norm_t = (*ckpt)->Get("model.layers.0.input_layernorm.weight");
  ASSERT_TRUE(emb_t.ok() && norm_t.ok());
  const std::vector<float> emb_f = test_util::TensorF32(*emb_t), norm_f = test_util::TensorF32(*norm_t);
  const std::vector<double> emb(emb_f.begin(), emb_f.end()), norm(norm_f.begin(), norm_f.end());
  const int64_t h = c.hidden_size;
  std::vector<double> want(h, 0.0), want_max(h, 0.0);
  std::vector<int32_t> samples;
  for (size_t b = 0; b < tokens.size(); b += 127) {
    samples.push_back(*options.bos);
    for (size_t i = b; i < std::min(tokens.size(), b + 127); ++i) samples.push_back(tokens[i]);
  }
  for (int32_t t : samples) {
    const double* e = emb.data() + static_cast<int64_t>(t) * h;
    double ms = 0.0;
    for (int64_t j = 0; j < h; ++j) ms += e[j] * e[j];
    const double inv = 1.0 / std::sqrt(ms / h + c.rms_norm_eps);
    for (int64_t j = 0; j < h; ++j) {
      want[j] += std::pow(e[j] * inv * norm[j], 2);
      want_max[j] = std::max(want_max[j], std::abs(e[j] * inv * norm[j]));
    }
  }
  // max |x_j| (activation smoothing) against the same oracle.
  const std::vector<float>* got_max = stats->FindMaxAbs("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(got_max, nullptr);
  ASSERT_EQ(static_cast<int64_t>(got_max->size()), h);
  for (int64_t j = 0; j < h; ++j) EXPECT_NEAR((*got_max)[j], want_max[j], want_max[j] * 1e-5 + 1e-12) << "column " << j;
  EXPECT_EQ(stats->max_abs.size(), stats->mean_sq.size());
  const std::vector<float>& got = *stats->Find("model.layers.0.self_attn.k_proj.weight");
  for (int64_t j = 0; j < h; ++j) {
    want[j] /= static_cast<double>(samples.size());
    // fp32 forward against a double oracle: a few float roundings per value.
    EXPECT_NEAR(got[j], want[j], want[j] * 1e-4 + 1e-12) << "column " << j;
  }
}

// E[x x^T]: layer 0's q/k/v input against the embedding oracle (every
// entry, not only the diagonal), shared matrices for inputs read by several
// weights, the diagonal equal to E[x_j^2], and gram_for honoured.
TEST_F(CalibrationTest, GramMatchesTheEmbeddingOracleAndIsSharedPerInput) {
  const uint64_t seed = test_util::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  absl::StatusOr<std::vector<int32_t>> all = TokenizeTextFile(dir_ + "/val.txt", *tokenizer_, 0);
  ASSERT_TRUE(all.ok()) << all.status();
  std::mt19937_64 rng(seed);
  const size_t count = 200;
  ASSERT_GT(all->size(), count);
  const size_t off = std::uniform_int_distribution<size_t>(0, all->size() - count)(rng);
  const std::vector<int32_t> tokens(all->begin() + off, all->begin() + off + count);

  CalibrationOptions options;
  options.window = 64;  // No BOS: windows of 64, 64, 64, 8 text tokens.
  options.gram_for = [](std::string_view name) { return name.find("embed") == std::string_view::npos &&
                                                        name != "lm_head.weight"; };
  absl::StatusOr<CalibrationStats> stats = CollectCalibrationStats(*model_, tokens, options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  const runtime::ModelConfig& c = model_->config();
  EXPECT_EQ(stats->FindGram("lm_head.weight"), nullptr);  // Refused by gram_for.
  ASSERT_EQ(stats->gram.size(), static_cast<size_t>(7 * c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const InputGram* q = stats->FindGram(p + "self_attn.q_proj.weight");
    const InputGram* o = stats->FindGram(p + "self_attn.o_proj.weight");
    const InputGram* gate = stats->FindGram(p + "mlp.gate_proj.weight");
    const InputGram* down = stats->FindGram(p + "mlp.down_proj.weight");
    ASSERT_TRUE(q && o && gate && down);
    EXPECT_EQ(q, stats->FindGram(p + "self_attn.k_proj.weight"));
    EXPECT_EQ(q, stats->FindGram(p + "self_attn.v_proj.weight"));
    EXPECT_EQ(gate, stats->FindGram(p + "mlp.up_proj.weight"));
    EXPECT_NE(q, gate);  // The same buffer may hold both norms' outputs; they are different inputs.
    EXPECT_NE(q, o);
    for (const auto& [name, g] : {std::pair{"self_attn.q_proj.weight", q}, std::pair{"self_attn.o_proj.weight", o},
                                  std::pair{"mlp.gate_proj.weight", gate}, std::pair{"mlp.down_proj.weight", down}}) {
      const std::vector<float>& diag = *stats->Find(p + name);
      ASSERT_EQ(g->cols, static_cast<int64_t>(diag.size())) << p << name;
      EXPECT_EQ(g->samples, 200) << p << name;
      for (int64_t j = 0; j < g->cols; ++j) {
        ASSERT_NEAR(g->xtx[j * g->cols + j], diag[j], 1e-4 * diag[j] + 1e-12) << p << name << " column " << j;
        const int64_t k = (j * 7 + 3) % g->cols;
        ASSERT_EQ(g->xtx[j * g->cols + k], g->xtx[k * g->cols + j]) << p << name;
      }
    }
  }

  absl::StatusOr<std::unique_ptr<runtime::Checkpoint>> ckpt = runtime::Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<runtime::TensorView> emb_t = (*ckpt)->Get("model.embed_tokens.weight");
  absl::StatusOr<runtime::TensorView> norm_t = (*ckpt)->Get("model.layers.0.input_layernorm.weight");
  ASSERT_TRUE(emb_t.ok() && norm_t.ok());
  const std::vector<float> emb = test_util::TensorF32(*emb_t), norm = test_util::TensorF32(*norm_t);
  const int64_t h = c.hidden_size;
  std::vector<double> want(static_cast<size_t>(h * h), 0.0), x(static_cast<size_t>(h));
  for (int32_t t : tokens) {
    const float* e = emb.data() + static_cast<int64_t>(t) * h;
    double ms = 0.0;
    for (int64_t j = 0; j < h; ++j) ms += static_cast<double>(e[j]) * e[j];
    const double inv = 1.0 / std::sqrt(ms / h + c.rms_norm_eps);
    for (int64_t j = 0; j < h; ++j) x[j] = e[j] * inv * norm[j];
    for (int64_t i = 0; i < h; ++i) {
      for (int64_t j = 0; j < h; ++j) want[i * h + j] += x[i] * x[j];
    }
  }
  const InputGram& got = *stats->FindGram("model.layers.0.self_attn.v_proj.weight");
  double scale = 0.0;
  for (int64_t j = 0; j < h; ++j) scale = std::max(scale, want[j * h + j] / 200.0);
  for (int64_t i = 0; i < h * h; ++i) {
    // fp32 forward and fp32 per-call products against a double oracle,
    // relative to the largest diagonal entry (off-diagonals can cancel).
    ASSERT_NEAR(got.xtx[i], want[i] / 200.0, 1e-5 * scale) << "entry " << i / h << "," << i % h;
  }
}

TEST_F(CalibrationTest, RejectsBadInput) {
  CalibrationOptions options;
  options.bos = tokenizer_->bos_id();
  absl::StatusOr<CalibrationStats> s = CollectCalibrationStats(*model_, {}, options);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  s = CollectCalibrationStats(*model_, {1, 2, static_cast<int32_t>(model_->config().vocab_size)}, options);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("token 2"));
  options.window = model_->config().max_position_embeddings + 1;
  s = CollectCalibrationStats(*model_, {1, 2, 3}, options);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("window"));
  options.window = 1;
  s = CollectCalibrationStats(*model_, {1, 2, 3}, options);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);

  DeafModel deaf(*model_);
  options.window = 16;
  s = CollectCalibrationStats(deaf, {1, 2, 3, 4}, options);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("observer"));

  EXPECT_EQ(TokenizeTextFile(dir_ + "/no_such_file.txt", *tokenizer_, 0).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace lcd::quantizer
