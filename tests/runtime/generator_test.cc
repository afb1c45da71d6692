// Generate() against a scripted fake model and a tiny fake tokenizer, so the
// loop's control flow (chunked prefill, stop conditions, text hold-back) is
// tested without weights or kernels.
#include "lcd/runtime/generator.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lcd::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

constexpr int32_t kEos = 9;
const char* const kPieces[] = {"a", "b", "c", " ", "ST", "OP", "\xC3", "\xA9", "x", "</s>"};

class FakeTokenizer : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view, bool, bool) const override {
    return absl::UnimplementedError("fake");
  }
  std::string TokenBytes(int32_t id, bool skip_special) const override {
    if (id < 0 || id >= 10 || (skip_special && id == kEos)) return "";
    return kPieces[id];
  }
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string s;
    for (int32_t id : ids) s += TokenBytes(id, skip_special);
    return s;
  }
  int32_t vocab_size() const override { return 10; }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
  std::optional<int32_t> eos_id() const override { return kEos; }
  bool IsSpecial(int32_t id) const override { return id == kEos; }
  std::optional<int32_t> TokenToId(std::string_view) const override { return std::nullopt; }
};

// Emits script[i] as the i-th generated token (then 8 forever), by putting a
// large logit on it. Records each Forward call's (start_pos, num_tokens).
class ScriptedModel : public Model {
 public:
  ScriptedModel(int64_t prompt_len, std::vector<int32_t> script) : prompt_len_(prompt_len), script_(script) {
    config_.vocab_size = 10;
    config_.num_layers = 1;
    config_.num_heads = 1;
    config_.num_kv_heads = 1;
    config_.head_dim = 2;
    config_.hidden_size = 2;
    config_.max_position_embeddings = 64;
    config_.eos_token_ids = {kEos};
  }
  const ModelConfig& config() const override { return config_; }
  kernels::KvLayout KvLayoutFor(int64_t block_size, kernels::DType dtype) const override {
    return {block_size, 1, 2, dtype};
  }
  Backend& backend() const override { return *backend_; }
  uint64_t WeightBytes() const override { return 0; }
  absl::StatusOr<ForwardOutput> Forward(const std::vector<SeqBatchEntry>& batch, KvCache& cache) override {
    const SeqBatchEntry& e = batch.at(0);
    calls.push_back({e.start_pos, static_cast<int64_t>(e.tokens.size())});
    const int64_t end = e.start_pos + static_cast<int64_t>(e.tokens.size());
    if (static_cast<int64_t>(e.block_table->size()) * cache.layout().block_size < end) {
      return absl::InternalError("block table too short");
    }
    const int64_t index = end - prompt_len_;  // Index of the token to emit next.
    const int32_t next = index >= 0 && index < static_cast<int64_t>(script_.size()) ? script_[index] : 8;
    ForwardOutput out;
    out.num_rows = 1;
    out.logits.assign(10, 0.0f);
    out.logits[next] = 50.0f;
    return out;
  }
  std::vector<std::pair<int64_t, int64_t>> calls;
  std::shared_ptr<Backend> backend_ = NewCpuBackend(1);

 private:
  ModelConfig config_;
  int64_t prompt_len_;
  std::vector<int32_t> script_;
};

SamplingParams Greedy(int64_t max_new) {
  SamplingParams p;
  p.temperature = 0.0;
  p.max_new_tokens = max_new;
  return p;
}

struct GenRun {
  absl::StatusOr<GenerationResult> result;
  std::vector<int32_t> ids;
  std::string streamed;
};

GenRun DoGenerate(ScriptedModel& model, const std::vector<int32_t>& prompt, const SamplingParams& params,
               int64_t chunk = 256, int cancel_after = -1) {
  static FakeTokenizer tokenizer;
  GenRun run;
  GenerateOptions options;
  options.prefill_chunk = chunk;
  options.block_size = 4;
  run.result = Generate(
      model, &tokenizer, prompt, params,
      [&](int32_t id, std::string_view text) {
        run.ids.push_back(id);
        run.streamed += text;
        return cancel_after < 0 || static_cast<int>(run.ids.size()) < cancel_after;
      },
      options);
  return run;
}

TEST(GeneratorTest, StopsAtMaxNewTokens) {
  ScriptedModel model(3, {0, 1, 2, 3, 0, 1});
  GenRun run = DoGenerate(model, {1, 2, 3}, Greedy(5));
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_EQ(run.result->finish_reason, FinishReason::kLength);
  EXPECT_THAT(run.result->output_ids, ElementsAre(0, 1, 2, 3, 0));
  EXPECT_EQ(run.result->text, "abc a");
  EXPECT_EQ(run.streamed, "abc a");
  EXPECT_EQ(run.result->prompt_tokens, 3);
  EXPECT_EQ(run.result->generated_tokens, 5);
  EXPECT_GE(run.result->prefill_seconds, 0.0);
}

TEST(GeneratorTest, StopsAtEosUnlessIgnored) {
  ScriptedModel model(2, {0, 1, kEos, 2});
  GenRun run = DoGenerate(model, {1, 2}, Greedy(10));
  ASSERT_TRUE(run.result.ok());
  EXPECT_EQ(run.result->finish_reason, FinishReason::kEos);
  EXPECT_THAT(run.result->output_ids, ElementsAre(0, 1, kEos));
  EXPECT_EQ(run.result->text, "ab");

  ScriptedModel model2(2, {0, 1, kEos, 2});
  SamplingParams p = Greedy(5);
  p.ignore_eos = true;
  GenRun run2 = DoGenerate(model2, {1, 2}, p);
  ASSERT_TRUE(run2.result.ok());
  EXPECT_EQ(run2.result->finish_reason, FinishReason::kLength);
  EXPECT_THAT(run2.result->output_ids, ElementsAre(0, 1, kEos, 2, 8));
  EXPECT_EQ(run2.result->text, "abcx");
}

TEST(GeneratorTest, StopsAtStopTokenWithoutItsText) {
  ScriptedModel model(1, {0, 2, 1});
  SamplingParams p = Greedy(10);
  p.stop_token_ids = {2};
  GenRun run = DoGenerate(model, {5}, p);
  ASSERT_TRUE(run.result.ok());
  EXPECT_EQ(run.result->finish_reason, FinishReason::kStop);
  EXPECT_THAT(run.result->output_ids, ElementsAre(0, 2));
  EXPECT_EQ(run.result->text, "a");
}

TEST(GeneratorTest, StopStringAcrossTokensIsCutAndNeverStreamed) {
  ScriptedModel model(1, {0, 4, 5, 1});  // "a" "ST" "OP" "b"
  SamplingParams p = Greedy(10);
  p.stop_strings = {"STOP"};
  GenRun run = DoGenerate(model, {5}, p);
  ASSERT_TRUE(run.result.ok());
  EXPECT_EQ(run.result->finish_reason, FinishReason::kStop);
  EXPECT_THAT(run.result->output_ids, ElementsAre(0, 4, 5));
  EXPECT_EQ(run.result->text, "a");
  EXPECT_EQ(run.streamed, "a");
}

TEST(GeneratorTest, HeldBackPrefixIsReleasedWhenItDoesNotComplete) {
  ScriptedModel model(1, {4, 0, 4});  // "ST" "a" "ST" then length
  SamplingParams p = Greedy(3);
  p.stop_strings = {"STOP", "zz"};
  std::vector<std::string> pieces;
  static FakeTokenizer tokenizer;
  auto result = Generate(model, &tokenizer, {5}, p, [&](int32_t, std::string_view t) {
    pieces.emplace_back(t);
    return true;
  });
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->finish_reason, FinishReason::kLength);
  // "ST" is held until "a" shows it is not "STOP"; the final "ST" is flushed at the end.
  EXPECT_THAT(pieces, ElementsAre("", "STa", "ST"));
  EXPECT_EQ(result->text, "STaST");
}

TEST(GeneratorTest, SplitUtf8CharacterIsEmittedWhole) {
  ScriptedModel model(1, {6, 7, 0});
  GenRun run = DoGenerate(model, {5}, Greedy(3));
  ASSERT_TRUE(run.result.ok());
  EXPECT_EQ(run.result->text, "\xC3\xA9"
                              "a");
  EXPECT_EQ(run.streamed, run.result->text);
}

TEST(GeneratorTest, PrefillRunsInChunksThenOneTokenSteps) {
  ScriptedModel model(10, {0, 1, 2});
  std::vector<int32_t> prompt(10, 3);
  GenRun run = DoGenerate(model, prompt, Greedy(3), /*chunk=*/4);
  ASSERT_TRUE(run.result.ok());
  EXPECT_THAT(model.calls, ElementsAreArray(std::vector<std::pair<int64_t, int64_t>>{
                               {0, 4}, {4, 4}, {8, 2}, {10, 1}, {11, 1}}));
  EXPECT_THAT(run.result->output_ids, ElementsAre(0, 1, 2));
}

TEST(GeneratorTest, CallbackCanCancel) {
  ScriptedModel model(1, {0, 1, 2, 3});
  GenRun run = DoGenerate(model, {5}, Greedy(10), 256, /*cancel_after=*/2);
  ASSERT_TRUE(run.result.ok());
  EXPECT_EQ(run.result->finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(run.result->generated_tokens, 2);
}

TEST(GeneratorTest, ContextLengthCapsGeneration) {
  ScriptedModel model(60, {});
  GenRun run = DoGenerate(model, std::vector<int32_t>(60, 1), Greedy(100));
  ASSERT_TRUE(run.result.ok());
  EXPECT_EQ(run.result->finish_reason, FinishReason::kLength);
  EXPECT_EQ(run.result->generated_tokens, 4);
}

TEST(GeneratorTest, RejectsBadInput) {
  ScriptedModel model(1, {});
  EXPECT_EQ(DoGenerate(model, {}, Greedy(3)).result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DoGenerate(model, std::vector<int32_t>(64, 1), Greedy(3)).result.status().code(),
            absl::StatusCode::kInvalidArgument);
  SamplingParams bad = Greedy(3);
  bad.top_p = 0;
  EXPECT_EQ(DoGenerate(model, {1}, bad).result.status().code(), absl::StatusCode::kInvalidArgument);
  SamplingParams stops = Greedy(3);
  stops.stop_strings = {"x"};
  auto no_tok = Generate(model, nullptr, {1}, stops, [](int32_t, std::string_view) { return true; });
  EXPECT_EQ(no_tok.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lcd::runtime
