// Model::Load validation on tiny checkpoints written in the test, and the
// internal consistency of Forward: one-shot prefill, chunked prefill, decode
// steps and a mixed batch must give the same logits. (Numerical parity with
// transformers is tests/python/test_hf_parity.py.)
#include "lcd/runtime/model.h"

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd/kernels/dtype.h"
#include "lcd/runtime/safetensors.h"
#include "lcd_test_dir.h"

namespace lcd::runtime {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr int kVocab = 32, kHidden = 16, kInter = 24, kLayers = 2, kHeads = 4, kKvHeads = 2, kHeadDim = 4;

struct TinyModelSpec {
  std::string model_type = "llama";
  bool tied = false;
  bool bf16 = false;
  std::string drop;                       // Tensor to leave out.
  std::map<std::string, std::vector<int64_t>> reshape;  // Tensor -> wrong shape.
  bool int_dtype_norm = false;            // model.norm.weight stored as I32.
};

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = lcd::testing::TestDir(std::string("model_") +
                                 ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes config.json + model.safetensors with random weights.
  void WriteModel(const TinyModelSpec& spec) {
    std::ofstream(dir_ / "config.json")
        << "{\"model_type\": \"" << spec.model_type << "\", \"vocab_size\": " << kVocab
        << ", \"hidden_size\": " << kHidden << ", \"intermediate_size\": " << kInter
        << ", \"num_hidden_layers\": " << kLayers << ", \"num_attention_heads\": " << kHeads
        << ", \"num_key_value_heads\": " << kKvHeads << ", \"max_position_embeddings\": 64"
        << ", \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"tie_word_embeddings\": "
        << (spec.tied ? "true" : "false") << ", \"eos_token_id\": 2, \"bos_token_id\": 1}";
    std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
        {"model.embed_tokens.weight", {kVocab, kHidden}}, {"model.norm.weight", {kHidden}}};
    if (!spec.tied) shapes.push_back({"lm_head.weight", {kVocab, kHidden}});
    for (int l = 0; l < kLayers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      shapes.push_back({p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}});
      shapes.push_back({p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}});
      shapes.push_back({p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}});
      shapes.push_back({p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}});
      if (spec.model_type == "qwen2") {
        shapes.push_back({p + "self_attn.q_proj.bias", {kHeads * kHeadDim}});
        shapes.push_back({p + "self_attn.k_proj.bias", {kKvHeads * kHeadDim}});
        shapes.push_back({p + "self_attn.v_proj.bias", {kKvHeads * kHeadDim}});
      }
      shapes.push_back({p + "mlp.gate_proj.weight", {kInter, kHidden}});
      shapes.push_back({p + "mlp.up_proj.weight", {kInter, kHidden}});
      shapes.push_back({p + "mlp.down_proj.weight", {kHidden, kInter}});
      shapes.push_back({p + "input_layernorm.weight", {kHidden}});
      shapes.push_back({p + "post_attention_layernorm.weight", {kHidden}});
    }
    std::mt19937 rng(17);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    std::vector<std::string> storage;
    storage.reserve(shapes.size());
    std::vector<TensorToWrite> tensors;
    for (auto& [name, shape] : shapes) {
      if (name == spec.drop) continue;
      if (spec.reshape.count(name)) shape = spec.reshape.at(name);
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      const bool is_norm = name.find("norm") != std::string::npos;
      TensorToWrite t;
      t.name = name;
      t.shape = shape;
      std::string bytes;
      if (is_norm && spec.int_dtype_norm && name == "model.norm.weight") {
        t.dtype = StDType::kI32;
        bytes.assign(n * 4, '\0');
      } else if (spec.bf16) {
        t.dtype = StDType::kBF16;
        for (int64_t i = 0; i < n; ++i) {
          uint16_t b = kernels::FloatToBf16(is_norm ? 1.0f + 0.1f * normal(rng) : normal(rng));
          bytes.append(reinterpret_cast<const char*>(&b), 2);
        }
      } else {
        t.dtype = StDType::kF32;
        for (int64_t i = 0; i < n; ++i) {
          float f = is_norm ? 1.0f + 0.1f * normal(rng) : normal(rng);
          bytes.append(reinterpret_cast<const char*>(&f), 4);
        }
      }
      storage.push_back(std::move(bytes));
      t.bytes = storage.back();
      tensors.push_back(t);
    }
    ASSERT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(), tensors).ok());
  }

  absl::StatusOr<std::unique_ptr<Model>> Load() { return Model::Load(dir_.string(), ModelOptions{2}); }

  fs::path dir_;
};

TEST_F(ModelTest, LoadsLlamaAndReportsShape) {
  WriteModel({});
  auto model = Load();
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().vocab_size, kVocab);
  kernels::KvLayout layout = (*model)->KvLayoutFor(8, kernels::DType::kF32);
  EXPECT_EQ(layout.block_size, 8);
  EXPECT_EQ(layout.num_kv_heads, kKvHeads);
  EXPECT_EQ(layout.head_dim, kHeadDim);
  const uint64_t per_layer = 4ull * (2 * kHeads * kHeadDim * kHidden + 2 * kKvHeads * kHeadDim * kHidden +
                                     3 * kInter * kHidden);
  EXPECT_EQ((*model)->WeightBytes(), kLayers * per_layer + 4ull * kVocab * kHidden);
}

TEST_F(ModelTest, LoadStopsWhenCancelled) {
  WriteModel({});
  ModelOptions o{2};
  std::atomic<int> polls{0};
  // Cancelled on the n-th poll, for each phase boundary in turn.
  for (int cancel_at = 1;; ++cancel_at) {
    polls = 0;
    o.cancelled = [&] { return ++polls >= cancel_at; };
    auto model = Model::Load(dir_.string(), o);
    if (model.ok()) {
      EXPECT_GT(cancel_at, 2);  // At least config and binding are checkpoints.
      break;
    }
    EXPECT_EQ(model.status().code(), absl::StatusCode::kCancelled) << model.status();
    ASSERT_LT(cancel_at, 3 + kLayers + 1);
  }
  o.cancelled = [] { return false; };
  EXPECT_TRUE(Model::Load(dir_.string(), o).ok());
}

TEST_F(ModelTest, MissingTensorIsNotFoundAndNamed) {
  WriteModel({.drop = "model.layers.1.mlp.up_proj.weight"});
  auto model = Load();
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("model.layers.1.mlp.up_proj.weight"));
}

TEST_F(ModelTest, MissingLmHeadWhenUntied) {
  WriteModel({.tied = true});  // Writes no lm_head.weight ...
  std::string cfg;
  {
    std::ifstream in(dir_ / "config.json");
    std::getline(in, cfg);
  }
  cfg.replace(cfg.find("\"tie_word_embeddings\": true"), 27, "\"tie_word_embeddings\": false");
  std::ofstream(dir_ / "config.json") << cfg;  // ... but claims an untied head.
  auto model = Load();
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("lm_head.weight"));
}

TEST_F(ModelTest, MissingQwen2BiasIsNamed) {
  WriteModel({.model_type = "qwen2", .drop = "model.layers.0.self_attn.k_proj.bias"});
  auto model = Load();
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("model.layers.0.self_attn.k_proj.bias"));
}

TEST_F(ModelTest, WrongShapeIsInvalidArgumentAndNamed) {
  WriteModel({.reshape = {{"model.layers.0.self_attn.k_proj.weight", {kHeads * kHeadDim, kHidden}}}});
  auto model = Load();
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("model.layers.0.self_attn.k_proj.weight"));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("[8, 16]"));
}

TEST_F(ModelTest, NonFloatDtypeIsRejected) {
  WriteModel({.int_dtype_norm = true});
  auto model = Load();
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("model.norm.weight"));
}

TEST_F(ModelTest, UnsupportedArchitectureIsNamed) {
  WriteModel({.model_type = "gpt2"});
  auto model = Load();
  EXPECT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("gpt2"));
}

// Runs `batch` and returns its logits rows.
std::vector<float> RunBatch(Model& m, KvCache& cache, const std::vector<SeqBatchEntry>& batch) {
  auto out = m.Forward(batch, cache);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->logits : std::vector<float>{};
}

void ExpectClose(const float* a, const float* b, int64_t n, float tol) {
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(a[i], b[i], tol * (1.0f + std::fabs(b[i]))) << "at " << i;
  }
}

class ForwardConsistencyTest : public ModelTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(ForwardConsistencyTest, PrefillChunksDecodeAndBatchAgree) {
  const std::string variant = GetParam();
  TinyModelSpec spec;
  spec.model_type = variant == "qwen2" ? "qwen2" : "llama";
  spec.tied = variant == "tied";
  spec.bf16 = variant == "bf16";
  WriteModel(spec);
  auto loaded = Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  Model& m = **loaded;
  auto cache_or = KvCache::Create(kLayers, m.KvLayoutFor(4, kernels::DType::kF32), 32);
  ASSERT_TRUE(cache_or.ok());
  KvCache& cache = *cache_or;

  const std::vector<int32_t> prompt = {1, 5, 9, 30, 7, 7, 12, 3, 25, 0, 17};
  const int64_t n = static_cast<int64_t>(prompt.size());
  std::vector<int32_t> table_a = {0, 1, 2}, table_b = {7, 3, 11}, table_c = {20, 21, 22};

  SeqBatchEntry full{prompt, 0, &table_a, true};
  std::vector<float> ref = RunBatch(m, cache, {full});
  ASSERT_EQ(ref.size(), static_cast<size_t>(n * kVocab));
  for (float v : ref) ASSERT_TRUE(std::isfinite(v));

  // Prefill in chunks 5 + 4, then two decode steps, in other blocks.
  std::vector<float> chunked = RunBatch(m, cache, {{{prompt.begin(), prompt.begin() + 5}, 0, &table_b, true}});
  std::vector<float> part2 = RunBatch(m, cache, {{{prompt.begin() + 5, prompt.begin() + 9}, 5, &table_b, true}});
  chunked.insert(chunked.end(), part2.begin(), part2.end());
  for (int64_t i = 9; i < n; ++i) {
    std::vector<float> step = RunBatch(m, cache, {{{prompt[i]}, i, &table_b, false}});
    ASSERT_EQ(step.size(), static_cast<size_t>(kVocab));
    chunked.insert(chunked.end(), step.begin(), step.end());
  }
  ExpectClose(chunked.data(), ref.data(), n * kVocab, 1e-4f);

  // A batch mixing a fresh prefill (last row only) and a decode step of the
  // sequence in table_b.
  std::vector<int32_t> other = {4, 4, 8};
  std::vector<float> solo_other = RunBatch(m, cache, {{other, 0, &table_c, false}});
  std::vector<float> batched =
      RunBatch(m, cache, {{other, 0, &table_c, false}, {{prompt[n - 1]}, n - 1, &table_b, false}});
  ASSERT_EQ(batched.size(), 2u * kVocab);
  ExpectClose(batched.data(), solo_other.data(), kVocab, 1e-4f);
  ExpectClose(batched.data() + kVocab, ref.data() + (n - 1) * kVocab, kVocab, 1e-4f);
}

INSTANTIATE_TEST_SUITE_P(Variants, ForwardConsistencyTest, ::testing::Values("llama", "tied", "bf16", "qwen2"));

TEST_F(ModelTest, ForwardRejectsBadBatches) {
  WriteModel({});
  auto loaded = Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  Model& m = **loaded;
  auto cache = KvCache::Create(kLayers, m.KvLayoutFor(4, kernels::DType::kF32), 8);
  ASSERT_TRUE(cache.ok());
  std::vector<int32_t> table = {0, 1};
  std::vector<int32_t> bad_table = {0, 99};
  auto code = [&](const SeqBatchEntry& e) { return m.Forward({e}, *cache).status().code(); };
  EXPECT_EQ(code({{1, kVocab}, 0, &table, false}), absl::StatusCode::kInvalidArgument);   // id out of range
  EXPECT_EQ(code({{1, -1}, 0, &table, false}), absl::StatusCode::kInvalidArgument);       // negative id
  EXPECT_EQ(code({{1, 2, 3}, 6, &table, false}), absl::StatusCode::kInvalidArgument);     // table too short
  EXPECT_EQ(code({{1, 2}, 5, &bad_table, false}), absl::StatusCode::kInvalidArgument);    // block id range
  EXPECT_EQ(code({{1}, 64, &table, false}), absl::StatusCode::kInvalidArgument);          // beyond max pos
  EXPECT_EQ(code({{}, 0, &table, false}), absl::StatusCode::kInvalidArgument);            // empty entry
  EXPECT_EQ(code({{1}, 0, nullptr, false}), absl::StatusCode::kInvalidArgument);          // no table
  EXPECT_EQ(m.Forward({}, *cache).status().code(), absl::StatusCode::kInvalidArgument);  // empty batch
  auto wrong = KvCache::Create(kLayers, {4, kKvHeads + 1, kHeadDim}, 8);
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(m.Forward({{{1}, 0, &table, false}}, *wrong).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lcd::runtime
