// Fixtures under tests/testdata/model_config/ were written by transformers
// 5.x (see make_fixtures.py there): config.json from save_pretrained and
// inv_freq.json, the rotary inverse frequencies transformers computes.
#include "lcd/runtime/model_config.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace lcd::runtime {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string FixtureDir(const std::string& name) {
  const char* d = std::getenv("LCD_SOURCE_DIR");
  const std::string root =
      d != nullptr ? std::string(d)
                   : fs::path(__FILE__).parent_path().parent_path().parent_path().string();
  return root + "/tests/testdata/model_config/" + name;
}

std::vector<double> ExpectedInvFreq(const std::string& name) {
  std::ifstream in(FixtureDir(name) + "/inv_freq.json");
  return nlohmann::json::parse(in).get<std::vector<double>>();
}

// transformers computes inv_freq in float32, we in float64 rounded once:
// they agree to a few float32 ulps.
void ExpectInvFreqMatches(const ModelConfig& c, const std::string& fixture) {
  const std::vector<double> expected = ExpectedInvFreq(fixture);
  const std::vector<float> got = c.RopeInvFreq();
  ASSERT_EQ(got.size(), expected.size());
  ASSERT_EQ(static_cast<int64_t>(got.size()), c.head_dim / 2);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], expected[i], 1e-6 * expected[i]) << fixture << " i=" << i;
  }
}

TEST(ModelConfigTest, Llama3FromTransformers) {
  auto c = LoadModelConfig(FixtureDir("llama3"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kLlama);
  EXPECT_EQ(ArchitectureName(c->arch), "llama");
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->intermediate_size, 512);
  EXPECT_EQ(c->num_layers, 2);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->sliding_window.has_value());
  EXPECT_THAT(c->bos_token_ids, ElementsAre(128000));
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128001, 128008, 128009));
  ExpectInvFreqMatches(*c, "llama3");
}

TEST(ModelConfigTest, MistralFromTransformers) {
  auto c = LoadModelConfig(FixtureDir("mistral"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kMistral);
  EXPECT_EQ(c->num_heads, 5);
  EXPECT_EQ(c->num_kv_heads, 1);
  EXPECT_EQ(c->head_dim, 48);  // Explicit, not hidden_size / num_heads = 32.
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_THAT(c->bos_token_ids, ElementsAre(1));
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
  ExpectInvFreqMatches(*c, "mistral");
}

TEST(ModelConfigTest, Qwen2FromTransformers) {
  auto c = LoadModelConfig(FixtureDir("qwen2"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kQwen2);
  EXPECT_EQ(c->vocab_size, 151936);
  EXPECT_EQ(c->num_layers, 3);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->sliding_window.has_value());  // use_sliding_window is false.
  EXPECT_THAT(c->bos_token_ids, ElementsAre(151643));
  EXPECT_THAT(c->eos_token_ids, ElementsAre(151645));
  ExpectInvFreqMatches(*c, "qwen2");
}

TEST(ModelConfigTest, LegacyTransformers4LinearScaling) {
  auto c = LoadModelConfig(FixtureDir("llama_legacy_linear"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kLlama);  // From architectures[0].
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->num_kv_heads, 3);
  EXPECT_DOUBLE_EQ(c->rope_theta, 20000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_THAT(c->bos_token_ids, ElementsAre(1));  // LlamaConfig defaults.
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
  ExpectInvFreqMatches(*c, "llama_legacy_linear");
}

// A float64 evaluation of transformers' _compute_llama3_parameters on
// random parameters, independent of the fixtures.
TEST(ModelConfigTest, Llama3InvFreqMatchesFloat64FormulaOnRandomParameters) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 20; ++trial) {
    ModelConfig c;
    c.head_dim = 2 * (8 + static_cast<int64_t>(u(rng) * 60));
    c.rope_theta = 1000.0 + u(rng) * 1e6;
    c.rope_scaling.type = RopeScaling::Type::kLlama3;
    c.rope_scaling.factor = 1.0 + u(rng) * 31.0;
    c.rope_scaling.low_freq_factor = 0.5 + u(rng);
    c.rope_scaling.high_freq_factor = c.rope_scaling.low_freq_factor + 0.5 + 4 * u(rng);
    c.rope_scaling.original_max_position_embeddings = 1024 + static_cast<int64_t>(u(rng) * 8192);
    const auto& rs = c.rope_scaling;
    const std::vector<float> got = c.RopeInvFreq();
    ASSERT_EQ(static_cast<int64_t>(got.size()), c.head_dim / 2);
    for (int64_t i = 0; i < c.head_dim / 2; ++i) {
      const double base = 1.0 / std::pow(c.rope_theta, 2.0 * i / c.head_dim);
      const double wavelen = 2 * std::numbers::pi / base;
      const double ctx = rs.original_max_position_embeddings;
      double want;
      if (wavelen < ctx / rs.high_freq_factor) {
        want = base;
      } else if (wavelen > ctx / rs.low_freq_factor) {
        want = base / rs.factor;
      } else {
        const double s =
            (ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        want = (1 - s) * base / rs.factor + s * base;
      }
      EXPECT_NEAR(got[i], want, 1e-7 * want) << "trial " << trial << " i " << i;
    }
  }
}

// A valid llama config with the fields of the JSON object `overrides` set
// (explicit nulls included).
std::string Base(const std::string& overrides = "{}") {
  nlohmann::json j = nlohmann::json::parse(
      R"({"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":128,)"
      R"("num_hidden_layers":2,"num_attention_heads":4})");
  j.update(nlohmann::json::parse(overrides));
  return j.dump();
}

TEST(ModelConfigTest, DefaultsFollowTransformers) {
  auto c = ParseModelConfig(Base());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_FALSE(c->tie_word_embeddings);
  // Explicit nulls select defaults too.
  c = ParseModelConfig(
      Base(R"({"num_key_value_heads":null,"head_dim":null,"rope_parameters":null})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 16);
  // Class defaults for an absent num_key_value_heads differ per model.
  const std::string m = R"({"model_type":"mistral","vocab_size":10,"hidden_size":256,)"
                        R"("intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":32)";
  c = ParseModelConfig(m + "}");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  c = ParseModelConfig(m + R"(,"sliding_window":null})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->sliding_window.has_value());
  const std::string q = R"({"model_type":"qwen2","vocab_size":10,"hidden_size":256,)"
                        R"("intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":32)";
  c = ParseModelConfig(
      q + R"(,"attention_bias":false,"use_sliding_window":true,"sliding_window":512})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 32);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_EQ(c->sliding_window, 512);
  EXPECT_TRUE(c->bos_token_ids.empty());
  EXPECT_EQ(c->max_position_embeddings, 32768);
}

TEST(ModelConfigTest, RopeKeyPrecedence) {
  // rope_theta inside the rope dict wins over the top level.
  auto c = ParseModelConfig(
      Base(R"({"rope_theta":5.0,"rope_parameters":{"rope_type":"default","rope_theta":7.0}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 7.0);
  // Legacy rope_scaling wins over rope_parameters; "rope_type" works there too.
  c = ParseModelConfig(Base(R"({"rope_scaling":{"rope_type":"linear","factor":2},)"
                            R"("rope_parameters":{"rope_type":"default"}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 2.0);
  // llama3 without original_max_position_embeddings takes max_position_embeddings.
  c = ParseModelConfig(
      Base(R"({"max_position_embeddings":1000,"rope_parameters":{"rope_type":"llama3",)"
           R"("factor":8,"low_freq_factor":1,"high_freq_factor":4}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 1000);
  // Linear scaling divides every default frequency by the factor.
  c = ParseModelConfig(Base(R"({"rope_theta":300,"rope_scaling":{"type":"linear","factor":3.5}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<float> f = c->RopeInvFreq();
  ASSERT_EQ(f.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    const double want = 1.0 / std::pow(300.0, 2.0 * i / 16) / 3.5;
    EXPECT_NEAR(f[i], want, 1e-7 * want) << i;
  }
}

TEST(ModelConfigTest, TokenIdForms) {
  auto c = ParseModelConfig(Base(R"({"bos_token_id":null,"eos_token_id":[5,6]})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->bos_token_ids.empty());
  EXPECT_THAT(c->eos_token_ids, ElementsAre(5, 6));
  EXPECT_EQ(ParseModelConfig(Base(R"({"eos_token_id":"x"})")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig(Base(R"({"eos_token_id":[-1]})")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

struct BadConfig {
  std::string json;
  absl::StatusCode code;
  const char* message;
};

TEST(ModelConfigTest, BadConfigsNameTheProblem) {
  using C = absl::StatusCode;
  const std::string no_hidden =
      R"({"model_type":"llama","vocab_size":100,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4})";
  const std::vector<BadConfig> cases = {
      {"not json", C::kInvalidArgument, "invalid JSON"},
      {"[]", C::kInvalidArgument, "must be a JSON object"},
      {R"({"model_type":"gpt2"})", C::kUnimplemented, "\"gpt2\""},
      {R"({"architectures":["GPT2LMHeadModel"]})", C::kUnimplemented, "GPT2LMHeadModel"},
      {R"({"architectures":[]})", C::kInvalidArgument, "architectures"},
      {R"({"vocab_size":1})", C::kInvalidArgument, "model_type"},
      {no_hidden, C::kInvalidArgument, "\"hidden_size\" is missing"},
      {Base(R"({"num_hidden_layers":null})"), C::kInvalidArgument,
       "\"num_hidden_layers\" is missing"},
      {Base(R"({"vocab_size":"100"})"), C::kInvalidArgument, "\"vocab_size\" must be an integer"},
      {Base(R"({"vocab_size":100.5})"), C::kInvalidArgument, "\"vocab_size\" must be an integer"},
      {Base(R"({"vocab_size":-3})"), C::kInvalidArgument, "\"vocab_size\" must be positive"},
      {Base(R"({"head_dim":4611686018427387904})"), C::kInvalidArgument,
       "\"head_dim\" = 4611686018427387904 exceeds"},
      {Base(R"({"max_position_embeddings":9223372036854775807})"), C::kInvalidArgument,
       "max_position_embeddings"},
      {Base(R"({"num_attention_heads":0})"), C::kInvalidArgument, "num_attention_heads"},
      {Base(R"({"num_key_value_heads":3})"), C::kInvalidArgument, "num_key_value_heads"},
      {Base(R"({"head_dim":15})"), C::kInvalidArgument, "\"head_dim\" must be even"},
      {Base(R"({"num_attention_heads":5})"), C::kInvalidArgument,
       "multiple of num_attention_heads"},
      {Base(R"({"rms_norm_eps":0})"), C::kInvalidArgument, "rms_norm_eps"},
      {Base(R"({"rope_theta":-1})"), C::kInvalidArgument, "rope_theta"},
      {Base(R"({"tie_word_embeddings":1})"), C::kInvalidArgument, "tie_word_embeddings"},
      {Base(R"({"hidden_act":"gelu"})"), C::kUnimplemented, "gelu"},
      {Base(R"({"mlp_bias":true})"), C::kUnimplemented, "mlp_bias"},
      {Base(R"({"rope_scaling":{"type":"yarn","factor":4}})"), C::kUnimplemented, "\"yarn\""},
      {Base(R"({"rope_parameters":{"rope_type":"dynamic","factor":4}})"), C::kUnimplemented,
       "\"dynamic\""},
      {Base(R"({"rope_parameters":{"rope_type":"linear"}})"), C::kInvalidArgument,
       "rope_parameters.factor"},
      {Base(R"({"rope_parameters":{"rope_type":"llama3","factor":8,"high_freq_factor":4}})"),
       C::kInvalidArgument, "low_freq_factor"},
      {Base(
           R"({"rope_parameters":{"rope_type":"llama3","factor":8,"low_freq_factor":4,"high_freq_factor":1}})"),
       C::kInvalidArgument, "low_freq_factor < high_freq_factor"},
      {Base(R"({"rope_parameters":{"rope_type":"linear","factor":-2}})"), C::kInvalidArgument,
       "factor"},
      {Base(R"({"rope_parameters":{"full_attention":{"rope_type":"default"}}})"), C::kUnimplemented,
       "per-layer"},
      {Base(R"({"rope_parameters":{"partial_rotary_factor":0.5}})"), C::kUnimplemented,
       "partial_rotary_factor"},
      {Base(R"({"rope_parameters":[1]})"), C::kInvalidArgument, "rope_parameters"},
      {R"({"model_type":"llama","vocab_size":1,"vocab_size":2})", C::kInvalidArgument,
       "duplicate key \"vocab_size\""},
      {std::string(10000, '[') + std::string(10000, ']'), C::kInvalidArgument, "nests deeper"},
  };
  for (const BadConfig& c : cases) {
    SCOPED_TRACE(c.json.substr(0, 200));
    auto r = ParseModelConfig(c.json);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message));
  }
}

TEST(ModelConfigTest, LoadErrors) {
  auto r = LoadModelConfig(FixtureDir("does_not_exist"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("config.json"));
}

// A config.json that is a directory opens but cannot be read: that is the
// caller's mistake (FailedPrecondition), not corruption (it was DataLoss).
TEST(ModelConfigTest, ConfigThatIsADirectoryIsFailedPrecondition) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("lcd_cfgdir_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "config.json");
  auto r = LoadModelConfig(dir.string());
  std::filesystem::remove_all(dir);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not a regular file"));
}

TEST(ModelConfigTest, GenerationConfig) {
  auto g = LoadGenerationConfig(FixtureDir("llama3"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->bos_token_id, 128000);
  EXPECT_THAT(g->eos_token_ids, ElementsAre(128001, 128009));
  EXPECT_EQ(g->do_sample, true);
  EXPECT_DOUBLE_EQ(*g->temperature, 0.6);
  EXPECT_DOUBLE_EQ(*g->top_p, 0.9);
  EXPECT_FALSE(g->top_k.has_value());
  EXPECT_FALSE(g->max_new_tokens.has_value());

  auto none = LoadGenerationConfig(FixtureDir("mistral"));  // Has no generation_config.json.
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->eos_token_ids.empty());
  EXPECT_FALSE(none->temperature.has_value());

  auto p = ParseGenerationConfig(
      R"({"eos_token_id":7,"top_k":20,"repetition_penalty":1.1,"max_new_tokens":64})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->eos_token_ids, ElementsAre(7));
  EXPECT_EQ(p->top_k, 20);
  EXPECT_DOUBLE_EQ(*p->repetition_penalty, 1.1);
  EXPECT_EQ(p->max_new_tokens, 64);
  EXPECT_EQ(ParseGenerationConfig(R"({"top_p":1.5})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseGenerationConfig(R"({"temperature":"hot"})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseGenerationConfig("[").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lcd::runtime
