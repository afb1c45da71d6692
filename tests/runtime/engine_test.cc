// Engine tests against a REAL small model: a random Llama (hidden 64, 2
// layers, 4 heads / 2 KV heads, vocab 256) written with WriteSafetensors,
// and a byte-level BPE tokenizer.json with the 256 byte tokens and no merges.
// No mocks: every token below comes out of Model::Forward and the Sampler.
#include "lcd/runtime/engine.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/safetensors.h"
#include "lcd/runtime/tokenizer.h"

namespace lcd::runtime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kVocab = 256, kHidden = 64, kInter = 128, kLayers = 2, kHeads = 4, kKvHeads = 2;
constexpr int kHeadDim = kHidden / kHeads;
constexpr int kMaxPos = 4096;
// Long enough that a test thread, even descheduled for a while, acts before
// it could finish (these requests are always cancelled early).
constexpr int kLongRun = kMaxPos - 64;
constexpr int kEos = 0;

// GPT-2's bytes_to_unicode: the printable byte -> itself, the rest -> 256+n.
std::string ByteLevelChar(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    }
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

std::string JsonEscape(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o;
}

// extra_config: more config.json members, e.g. ", \"sliding_window\": 40".
void WriteTinyModel(const fs::path& dir, const std::string& model_type = "llama",
                    const std::string& extra_config = "") {
  std::ofstream(dir / "config.json")
      << "{\"model_type\": \"" << model_type << "\", \"vocab_size\": " << kVocab << ", \"hidden_size\": " << kHidden
      << ", \"intermediate_size\": " << kInter << ", \"num_hidden_layers\": " << kLayers
      << ", \"num_attention_heads\": " << kHeads << ", \"num_key_value_heads\": " << kKvHeads
      << ", \"max_position_embeddings\": " << kMaxPos
      << ", \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"tie_word_embeddings\": false"
      << ", \"eos_token_id\": " << kEos << extra_config << "}";
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"model.embed_tokens.weight", {kVocab, kHidden}},
      {"model.norm.weight", {kHidden}},
      {"lm_head.weight", {kVocab, kHidden}}};
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    shapes.push_back({p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}});
    shapes.push_back({p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}});
    shapes.push_back({p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}});
    shapes.push_back({p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}});
    shapes.push_back({p + "mlp.gate_proj.weight", {kInter, kHidden}});
    shapes.push_back({p + "mlp.up_proj.weight", {kInter, kHidden}});
    shapes.push_back({p + "mlp.down_proj.weight", {kHidden, kInter}});
    shapes.push_back({p + "input_layernorm.weight", {kHidden}});
    shapes.push_back({p + "post_attention_layernorm.weight", {kHidden}});
  }
  std::mt19937 rng(2024);
  std::vector<std::string> storage;
  storage.reserve(shapes.size());
  std::vector<TensorToWrite> tensors;
  for (auto& [name, shape] : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const bool is_norm = name.find("norm") != std::string::npos;
    // Weights scaled by 1/sqrt(fan_in) keep activations O(1); the embedding
    // and head are larger so the logits have clear margins (greedy argmax
    // must not hinge on float rounding between batched and solo runs).
    const float fan_in = shape.size() == 2 ? float(shape[1]) : 1.0f;
    const float scale = name.find("embed") != std::string::npos ? 1.0f
                        : name == "lm_head.weight"              ? 2.0f / std::sqrt(fan_in)
                                                                : 1.0f / std::sqrt(fan_in);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::string bytes;
    for (int64_t i = 0; i < n; ++i) {
      const float f = is_norm ? 1.0f + 0.1f * normal(rng) : scale * normal(rng);
      bytes.append(reinterpret_cast<const char*>(&f), 4);
    }
    storage.push_back(std::move(bytes));
    tensors.push_back({name, StDType::kF32, shape, storage.back()});
  }
  ASSERT_TRUE(WriteSafetensors((dir / "model.safetensors").string(), tensors).ok());

  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    if (b) vocab += ", ";
    vocab += "\"" + JsonEscape(ByteLevelChar(b)) + "\": " + std::to_string(b);
  }
  std::ofstream(dir / "tokenizer.json")
      << "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": null,"
      << " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true,"
      << " \"use_regex\": true}, \"post_processor\": null,"
      << " \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true,"
      << " \"use_regex\": true},"
      << " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"fuse_unk\": false,"
      << " \"byte_fallback\": false, \"vocab\": {" << vocab << "}, \"merges\": []}}";
}

// Records what the engine reports through its observer hooks.
class CountingObserver : public EngineObserver {
 public:
  void OnIteration(int64_t num_seqs, int64_t num_tokens, absl::Duration) override {
    ++iterations;
    int64_t prev = max_seqs.load();
    while (num_seqs > prev && !max_seqs.compare_exchange_weak(prev, num_seqs)) {
    }
  }
  void OnFirstToken(absl::Duration) override { ++first_tokens; }
  void OnRequestFinished(FinishReason, int64_t, int64_t, absl::Duration, absl::Duration) override { ++finished; }
  void OnPreemption() override { ++preemptions; }
  std::atomic<int64_t> iterations{0}, max_seqs{0}, first_tokens{0}, finished{0}, preemptions{0};
};

struct Result {
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<TokenLogprobs> logprobs;
  GenerationEvent final_event;
  int num_events = 0;
};

Result Collect(RequestHandle& h) {
  Result r;
  GenerationEvent ev;
  bool timed_out = false;
  while (h.Next(&ev, absl::Seconds(60), &timed_out)) {
    ++r.num_events;
    r.tokens.insert(r.tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
    r.text += ev.text;
    r.logprobs.insert(r.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
    if (ev.finish != FinishReason::kNone) r.final_event = ev;
  }
  EXPECT_FALSE(timed_out) << "request " << h.request_id() << " stalled";
  return r;
}

GenerationRequest Greedy(std::vector<int32_t> prompt, int64_t max_new) {
  GenerationRequest r;
  r.prompt_tokens = std::move(prompt);
  r.sampling.temperature = 0.0;
  r.sampling.max_new_tokens = max_new;
  r.sampling.ignore_eos = true;
  return r;
}

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("lcd_engine_test_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    WriteTinyModel(*dir_);
    auto model = Model::Load(dir_->string(), ModelOptions{2});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = new std::shared_ptr<Model>(std::move(*model));
    auto tok = LoadTokenizer(dir_->string());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = new std::shared_ptr<const Tokenizer>(std::move(*tok));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    fs::remove_all(*dir_);
    delete dir_;
  }

  std::unique_ptr<Engine> MakeEngine(EngineOptions o) {
    // The default 256 MiB cache costs more to zero than these tests run.
    if (o.kv_cache_bytes == EngineOptions{}.kv_cache_bytes) o.kv_cache_bytes = 512 * BlockBytes(o.block_size);
    auto e = Engine::Create(*model_, *tokenizer_, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? std::move(*e) : nullptr;
  }

  // Stats are published after each iteration, so they may trail the final
  // event a request's consumer sees by one iteration: poll.
  static EngineStats WaitForIdle(Engine& engine) {
    const absl::Time until = absl::Now() + absl::Seconds(10);
    EngineStats s = engine.Stats();
    while ((s.kv_blocks_used != 0 || s.running != 0 || s.waiting != 0) && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(1));
      s = engine.Stats();
    }
    return s;
  }

  // Bytes per KV block for this model.
  // One KV block of every layer in the engine's default cache dtype.
  static uint64_t BlockBytes(int64_t block_size) {
    return 2ull * kLayers * block_size * kKvHeads * kHeadDim * kernels::DTypeSize(EngineOptions{}.kv_dtype);
  }

  static std::vector<std::vector<int32_t>> Prompts(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<std::vector<int32_t>> out;
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> p(5 + rng() % 36);
      for (auto& t : p) t = 1 + static_cast<int32_t>(rng() % 255);
      out.push_back(p);
    }
    return out;
  }

  // Each prompt run alone (max_num_seqs = 1: never batched with another).
  std::vector<std::vector<int32_t>> SoloGreedy(const std::vector<std::vector<int32_t>>& prompts, int64_t max_new) {
    EngineOptions o;
    o.max_num_seqs = 1;
    auto engine = MakeEngine(o);
    std::vector<std::vector<int32_t>> out;
    for (const auto& p : prompts) {
      auto h = engine->Submit(Greedy(p, max_new));
      EXPECT_TRUE(h.ok()) << h.status();
      out.push_back(Collect(**h).tokens);
    }
    return out;
  }

  static fs::path* dir_;
  static std::shared_ptr<Model>* model_;
  static std::shared_ptr<const Tokenizer>* tokenizer_;
};

fs::path* EngineTest::dir_ = nullptr;
std::shared_ptr<Model>* EngineTest::model_ = nullptr;
std::shared_ptr<const Tokenizer>* EngineTest::tokenizer_ = nullptr;

TEST_F(EngineTest, BatchingDoesNotChangeGreedyOutputs) {
  const auto prompts = Prompts(8, 1);
  const auto solo = SoloGreedy(prompts, 24);
  CountingObserver obs;
  EngineOptions o;
  o.max_num_seqs = 8;
  o.max_tokens_per_iteration = 16;  // Prompts of up to 40 tokens: chunked prefill mixed with decodes.
  o.observer = &obs;
  auto engine = MakeEngine(o);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto req = Greedy(prompts[i], 24);
    req.request_id = "r" + std::to_string(i);
    auto h = engine->Submit(std::move(req));
    ASSERT_TRUE(h.ok()) << h.status();
    handles.push_back(*h);
  }
  for (size_t i = 0; i < handles.size(); ++i) {
    Result r = Collect(*handles[i]);
    EXPECT_EQ(r.tokens, solo[i]) << "prompt " << i;
    EXPECT_EQ(r.final_event.finish, FinishReason::kLength);
    EXPECT_EQ(r.final_event.completion_tokens, 24);
    EXPECT_EQ(r.final_event.prompt_tokens, static_cast<int64_t>(prompts[i].size()));
    EXPECT_EQ(r.text, (*tokenizer_)->Decode(r.tokens, true));
  }
  EXPECT_GT(obs.max_seqs.load(), 1) << "no iteration batched more than one sequence";
  EXPECT_EQ(obs.finished.load(), 8);
  EXPECT_EQ(obs.first_tokens.load(), 8);
  EngineStats s = WaitForIdle(*engine);
  EXPECT_GT(s.iterations, 24);
  EXPECT_EQ(s.kv_blocks_used, 0);
}

TEST_F(EngineTest, KvDtypeSetsCacheCapacity) {
  // The serving default is fp16: the same bytes hold twice the fp32 blocks.
  EXPECT_EQ(EngineOptions{}.kv_dtype, kernels::DType::kF16);
  const uint64_t fp32_block = 2ull * kLayers * 4 * kKvHeads * kHeadDim * sizeof(float);
  for (auto [dtype, blocks] : {std::pair{kernels::DType::kF32, 10}, std::pair{kernels::DType::kF16, 20},
                               std::pair{kernels::DType::kBF16, 20}}) {
    EngineOptions o;
    o.block_size = 4;
    o.kv_cache_bytes = 10 * fp32_block;
    o.kv_dtype = dtype;
    auto engine = MakeEngine(o);
    ASSERT_NE(engine, nullptr);
    EXPECT_EQ(engine->Stats().kv_blocks_total, blocks) << kernels::DTypeName(dtype);
    // And it generates: a full prompt + decode through that cache.
    auto h = engine->Submit(Greedy({1, 2, 3, 4, 5}, 6));
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(Collect(**h).tokens.size(), 6u) << kernels::DTypeName(dtype);
  }
}

TEST_F(EngineTest, ModelsSharingOneBackendServeConcurrently) {
  // lcd-server's layout: two models on one CPU backend (one thread pool),
  // each driven by its own engine thread at the same time. Their kernel calls
  // interleave on the shared pool; outputs must equal each model run alone.
  const auto prompts = Prompts(4, 3);
  const auto solo = SoloGreedy(prompts, 20);
  std::shared_ptr<Backend> backend = NewCpuBackend(2);
  std::vector<std::unique_ptr<Engine>> engines;
  for (int i = 0; i < 2; ++i) {
    ModelOptions mo;
    mo.backend = backend;
    auto model = Model::Load(dir_->string(), mo);
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_EQ(&(*model)->backend(), backend.get());
    EngineOptions o;
    o.kv_cache_bytes = 512 * BlockBytes(o.block_size);
    auto e = Engine::Create(std::shared_ptr<Model>(std::move(*model)), *tokenizer_, o);
    ASSERT_TRUE(e.ok()) << e.status();
    engines.push_back(std::move(*e));
  }
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int round = 0; round < 2; ++round) {
    for (auto& engine : engines) {
      for (const auto& p : prompts) handles.push_back(*engine->Submit(Greedy(p, 20)));
    }
  }
  for (size_t i = 0; i < handles.size(); ++i) {
    EXPECT_EQ(Collect(*handles[i]).tokens, solo[i % prompts.size()]) << "request " << i;
  }
}

// Fails Forward for any batch holding a sequence whose first prompt token is
// kPoison (a fault that only shows in the forward pass), otherwise forwards
// to the real model: injects a per-sequence fault into real batches.
class PoisonedModel : public Model {
 public:
  static constexpr int32_t kPoison = 7;
  explicit PoisonedModel(std::shared_ptr<Model> inner) : inner_(std::move(inner)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  kernels::KvLayout KvLayoutFor(int64_t b, kernels::DType d) const override { return inner_->KvLayoutFor(b, d); }
  Backend& backend() const override { return inner_->backend(); }
  uint64_t WeightBytes() const override { return inner_->WeightBytes(); }
  absl::StatusOr<ForwardOutput> Forward(const std::vector<SeqBatchEntry>& batch, KvCache& cache) override {
    for (const SeqBatchEntry& e : batch) {
      if (e.start_pos == 0 && e.tokens.at(0) == kPoison) return absl::InternalError("poisoned sequence");
    }
    return inner_->Forward(batch, cache);
  }

 private:
  std::shared_ptr<Model> inner_;
};

TEST_F(EngineTest, OneFailingSequenceDoesNotFailItsBatch) {
  auto prompts = Prompts(5, 4);
  const auto solo = SoloGreedy(prompts, 12);
  prompts.insert(prompts.begin() + 2, {PoisonedModel::kPoison, 3, 4, 5});
  EngineOptions o;
  o.kv_cache_bytes = 512 * BlockBytes(o.block_size);
  CountingObserver obs;
  o.observer = &obs;
  auto engine = Engine::Create(std::make_shared<PoisonedModel>(*model_), *tokenizer_, o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (const auto& p : prompts) handles.push_back(*(*engine)->Submit(Greedy(p, 12)));
  for (size_t i = 0, s = 0; i < handles.size(); ++i) {
    Result r = Collect(*handles[i]);
    if (i == 2) {
      EXPECT_EQ(r.final_event.finish, FinishReason::kError);
      EXPECT_THAT(r.final_event.error.ToString(), HasSubstr("poisoned"));
    } else {
      EXPECT_EQ(r.final_event.finish, FinishReason::kLength) << "request " << i << ": " << r.final_event.error;
      EXPECT_EQ(r.tokens, solo[s++]) << "request " << i;
    }
  }
  EXPECT_GT(obs.max_seqs.load(), 1) << "the poisoned sequence was never batched with others";
}

TEST(EngineSlidingWindowTest, AdmissionRefusesContextsBeyondTheWindow) {
  // A Mistral model with a 40-token window: Forward refuses longer contexts,
  // so the engine must refuse such requests at Submit, one by one, and keep
  // serving the others (before, they were admitted and failed whole batches).
  const fs::path dir = fs::temp_directory_path() / ("lcd_engine_window_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  WriteTinyModel(dir, "mistral", ", \"sliding_window\": 40");
  auto model = Model::Load(dir.string(), ModelOptions{2});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().ServableContext(), 40);
  EngineOptions o;
  o.kv_cache_bytes = 64 << 20;
  EngineOptions too_long = o;
  too_long.max_context = 41;
  auto refused = Engine::Create(std::shared_ptr<Model>(std::move(*model)), nullptr, too_long);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("sliding window"));
  model = Model::Load(dir.string(), ModelOptions{2});
  ASSERT_TRUE(model.ok()) << model.status();
  auto engine = Engine::Create(std::shared_ptr<Model>(std::move(*model)), nullptr, o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<int32_t> prompt(30);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = 1 + static_cast<int32_t>(i);
  auto ok1 = (*engine)->Submit(Greedy(prompt, 10));  // 40 tokens: fits exactly
  auto bad = (*engine)->Submit(Greedy(prompt, 11));  // 41: beyond the window
  auto ok2 = (*engine)->Submit(Greedy({5, 6, 7}, 20));
  ASSERT_TRUE(ok1.ok()) << ok1.status();
  ASSERT_TRUE(ok2.ok()) << ok2.status();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("exceeds the context of 40"));
  EXPECT_EQ(Collect(**ok1).final_event.finish, FinishReason::kLength);
  EXPECT_EQ(Collect(**ok2).final_event.finish, FinishReason::kLength);
  engine->reset();
  fs::remove_all(dir);
}

TEST_F(EngineTest, PreemptionUnderATinyKvBudgetKeepsGreedyOutputs) {
  const auto prompts = Prompts(6, 2);
  const auto solo = SoloGreedy(prompts, 24);
  CountingObserver obs;
  EngineOptions o;
  o.block_size = 4;
  o.kv_cache_bytes = 17 * BlockBytes(4);  // One 64-token sequence at a time, barely.
  o.max_num_seqs = 6;
  o.observer = &obs;
  auto engine = MakeEngine(o);
  ASSERT_EQ(engine->Stats().kv_blocks_total, 17);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (const auto& p : prompts) handles.push_back(*engine->Submit(Greedy(p, 24)));
  for (size_t i = 0; i < handles.size(); ++i) EXPECT_EQ(Collect(*handles[i]).tokens, solo[i]) << "prompt " << i;
  const EngineStats s = WaitForIdle(*engine);
  EXPECT_GT(s.preemptions, 0);
  EXPECT_EQ(obs.preemptions.load(), s.preemptions);
  EXPECT_EQ(s.kv_blocks_used, 0);
}

TEST_F(EngineTest, CancelMidGenerationFreesBlocks) {
  auto engine = MakeEngine({});
  auto h = engine->Submit(Greedy(Prompts(1, 3)[0], kLongRun));
  ASSERT_TRUE(h.ok());
  GenerationEvent ev;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*h)->Next(&ev, absl::Seconds(30)));
  EXPECT_GT(engine->Stats().kv_blocks_used, 0);
  (*h)->Cancel();
  Result r = Collect(**h);
  EXPECT_EQ(r.final_event.finish, FinishReason::kCancelled);
  EXPECT_TRUE(r.final_event.error.ok());
  EXPECT_LT(r.final_event.completion_tokens, kLongRun);
  EXPECT_TRUE((*h)->finished());
  const EngineStats s = WaitForIdle(*engine);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.running, 0);
}

TEST_F(EngineTest, QueueFullIsResourceExhausted) {
  EngineOptions o;
  o.max_num_seqs = 1;
  o.max_waiting = 2;
  auto engine = MakeEngine(o);
  auto a = engine->Submit(Greedy({5, 6, 7}, kLongRun));
  ASSERT_TRUE(a.ok());
  GenerationEvent ev;
  ASSERT_TRUE((*a)->Next(&ev, absl::Seconds(30)));  // a is running now.
  auto b = engine->Submit(Greedy({8, 9}, 4));
  auto c = engine->Submit(Greedy({10, 11}, 4));
  ASSERT_TRUE(b.ok() && c.ok());
  auto d = engine->Submit(Greedy({12}, 4));
  EXPECT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
  (*a)->Cancel();
  EXPECT_EQ(Collect(**b).final_event.finish, FinishReason::kLength);
  EXPECT_EQ(Collect(**c).final_event.finish, FinishReason::kLength);
}

TEST_F(EngineTest, SubmitValidatesRequests) {
  EngineOptions o;
  o.block_size = 4;
  o.kv_cache_bytes = 8 * BlockBytes(4);  // 32 tokens of KV.
  auto engine = MakeEngine(o);
  auto code = [&](GenerationRequest r) { return engine->Submit(std::move(r)).status().code(); };
  EXPECT_EQ(code(Greedy({}, 4)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, kVocab}, 4)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, -1}, 4)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, 2}, 0)), absl::StatusCode::kInvalidArgument);
  auto bad_temp = Greedy({1}, 4);
  bad_temp.sampling.temperature = -1;
  EXPECT_EQ(code(bad_temp), absl::StatusCode::kInvalidArgument);
  auto bad_lp = Greedy({1}, 4);
  bad_lp.num_logprobs = 21;
  EXPECT_EQ(code(bad_lp), absl::StatusCode::kInvalidArgument);
  auto st = engine->Submit(Greedy({1, 2, 3}, kMaxPos)).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("context"));
  st = engine->Submit(Greedy({1, 2, 3}, 30)).status();  // 33 tokens > 32 in the cache.
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("blocks"));
  EXPECT_TRUE(engine->Submit(Greedy({1, 2, 3}, 29)).ok());

  EngineOptions bad;
  bad.max_context = kMaxPos + 1;
  EXPECT_EQ(Engine::Create(*model_, *tokenizer_, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = {};
  bad.kv_cache_bytes = 10;
  EXPECT_EQ(Engine::Create(*model_, *tokenizer_, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, ShutdownDrainsRunningRequestsAndRejectsNewOnes) {
  auto engine = MakeEngine({});
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (const auto& p : Prompts(3, 4)) handles.push_back(*engine->Submit(Greedy(p, 16)));
  std::thread stopper([&] { engine->Shutdown(absl::Seconds(60)); });
  for (auto& h : handles) {
    Result r = Collect(*h);
    EXPECT_EQ(r.final_event.finish, FinishReason::kLength);
    EXPECT_EQ(r.tokens.size(), 16u);
  }
  stopper.join();
  EXPECT_EQ(engine->Submit(Greedy({1, 2}, 4)).status().code(), absl::StatusCode::kUnavailable);
  engine->Shutdown(absl::ZeroDuration());  // Idempotent.
}

TEST_F(EngineTest, ShutdownPastTheDrainCancelsTheRest) {
  auto engine = MakeEngine({});
  auto h = engine->Submit(Greedy({3, 4, 5}, kLongRun));
  ASSERT_TRUE(h.ok());
  GenerationEvent ev;
  ASSERT_TRUE((*h)->Next(&ev, absl::Seconds(30)));
  engine->Shutdown(absl::ZeroDuration());
  Result r = Collect(**h);
  EXPECT_EQ(r.final_event.finish, FinishReason::kCancelled);
  EXPECT_LT(r.final_event.completion_tokens, kLongRun);
  EXPECT_EQ(engine->Stats().kv_blocks_used, 0);
}

TEST_F(EngineTest, DeadlineEndsTheRequest) {
  auto engine = MakeEngine({});
  auto req = Greedy({3, 4, 5}, 100);
  req.deadline = absl::Now() - absl::Milliseconds(1);
  auto h = engine->Submit(std::move(req));
  ASSERT_TRUE(h.ok());
  Result r = Collect(**h);
  EXPECT_EQ(r.final_event.finish, FinishReason::kCancelled);
  EXPECT_EQ(r.final_event.error.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(r.final_event.completion_tokens, 0);
  // A deadline that passes mid-generation: 2 ms allow ~50 tokens on the
  // development machine, far from the whole context.
  req = Greedy({3, 4, 5}, kMaxPos - 3);
  req.deadline = absl::Now() + absl::Milliseconds(2);
  r = Collect(**engine->Submit(std::move(req)));
  EXPECT_EQ(r.final_event.finish, FinishReason::kCancelled);
  EXPECT_EQ(r.final_event.error.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(r.final_event.completion_tokens, kMaxPos - 3);
  // A deadline far enough away does not interfere.
  req = Greedy({3, 4, 5}, 8);
  req.deadline = absl::Now() + absl::Seconds(60);
  EXPECT_EQ(Collect(**engine->Submit(std::move(req))).final_event.finish, FinishReason::kLength);
}

TEST_F(EngineTest, StopTokenAndStopStringEndGeneration) {
  auto engine = MakeEngine({});
  const std::vector<int32_t> prompt = Prompts(1, 5)[0];
  Result full = Collect(**engine->Submit(Greedy(prompt, 40)));
  ASSERT_EQ(full.tokens.size(), 40u);

  // Stop token: generation ends at its first occurrence; its id is reported,
  // its text is not.
  const int32_t stop_tok = full.tokens[10];
  const size_t first = std::find(full.tokens.begin(), full.tokens.end(), stop_tok) - full.tokens.begin();
  auto req = Greedy(prompt, 40);
  req.sampling.stop_token_ids = {stop_tok};
  Result r = Collect(**engine->Submit(req));
  EXPECT_EQ(r.final_event.finish, FinishReason::kStop);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + first + 1));
  EXPECT_EQ(r.text, (*tokenizer_)->Decode(std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + first), true));

  // Stop string: two ASCII characters from the middle of the output. The
  // text ends right before its first occurrence and never contains it.
  size_t k = 4;
  while (k + 1 < full.text.size() && !(std::isalnum(static_cast<unsigned char>(full.text[k])) &&
                                       std::isalnum(static_cast<unsigned char>(full.text[k + 1])))) {
    ++k;
  }
  if (k + 1 >= full.text.size()) GTEST_SKIP() << "no ASCII pair in the random model's output";
  const std::string stop = full.text.substr(k, 2);
  req = Greedy(prompt, 40);
  req.sampling.stop_strings = {"never-appears", stop};
  r = Collect(**engine->Submit(req));
  EXPECT_EQ(r.final_event.finish, FinishReason::kStop);
  EXPECT_EQ(r.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_LT(r.tokens.size(), full.tokens.size());
}

TEST_F(EngineTest, EosEndsGenerationUnlessIgnored) {
  auto engine = MakeEngine({});
  // The model's EOS is id 0: look for a prompt whose greedy continuation
  // produces it (the random model does for some prompts).
  for (uint32_t seed = 100; seed < 300; ++seed) {
    const std::vector<int32_t> prompt = Prompts(1, seed)[0];
    Result full = Collect(**engine->Submit(Greedy(prompt, 30)));  // ignore_eos
    auto at = std::find(full.tokens.begin(), full.tokens.end(), kEos);
    if (at == full.tokens.end()) continue;
    ASSERT_EQ(full.tokens.size(), 30u);
    auto req = Greedy(prompt, 30);
    req.sampling.ignore_eos = false;
    Result r = Collect(**engine->Submit(req));
    EXPECT_EQ(r.final_event.finish, FinishReason::kEos);
    EXPECT_EQ(r.tokens, std::vector<int32_t>(full.tokens.begin(), at + 1));
    EXPECT_EQ(r.text, (*tokenizer_)->Decode(std::vector<int32_t>(full.tokens.begin(), at), true));
    return;
  }
  GTEST_SKIP() << "the random model never produced EOS";
}

TEST_F(EngineTest, LogprobsAndSeededSampling) {
  auto engine = MakeEngine({});
  auto req = Greedy(Prompts(1, 7)[0], 10);
  req.num_logprobs = 3;
  Result r = Collect(**engine->Submit(req));
  ASSERT_EQ(r.logprobs.size(), 10u);
  for (size_t i = 0; i < r.logprobs.size(); ++i) {
    const TokenLogprobs& lp = r.logprobs[i];
    EXPECT_EQ(lp.token_id, r.tokens[i]);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].id, lp.token_id);  // Greedy picks the most likely.
    EXPECT_FLOAT_EQ(lp.top[0].logprob, lp.logprob);
    EXPECT_LE(lp.logprob, 0.0f);
    EXPECT_GE(lp.top[0].logprob, lp.top[1].logprob);
  }
  // Same seed, same tokens, whether run alone or beside other requests.
  auto sampled = Greedy(Prompts(1, 8)[0], 20);
  sampled.sampling.temperature = 1.0;
  sampled.sampling.seed = 99;
  const std::vector<int32_t> alone = Collect(**engine->Submit(sampled)).tokens;
  std::vector<std::shared_ptr<RequestHandle>> others;
  for (const auto& p : Prompts(3, 9)) others.push_back(*engine->Submit(Greedy(p, 20)));
  auto again = engine->Submit(sampled);
  EXPECT_EQ(Collect(**again).tokens, alone);
  for (auto& h : others) Collect(*h);
}

TEST_F(EngineTest, NotifyCallbackAndTryNext) {
  auto engine = MakeEngine({});
  auto h = *engine->Submit(Greedy({1, 2, 3}, 5));
  std::atomic<int> notified{0};
  h->SetNotify([&] { ++notified; });
  Result r = Collect(*h);
  EXPECT_EQ(r.tokens.size(), 5u);
  EXPECT_GE(notified.load(), 1);
  GenerationEvent ev;
  EXPECT_FALSE(h->TryNext(&ev));
  EXPECT_FALSE(h->Next(&ev, absl::Milliseconds(1)));  // After the final event: false, no wait.
}


// The same batching invariance on the trained tiny model, when it is in the
// tree (models/tiny-shakespeare: real weights, real BPE tokenizer).
TEST(EngineTinyShakespeareTest, BatchedGreedyMatchesSolo) {
  const char* src = std::getenv("LCD_SOURCE_DIR");
  const fs::path dir = fs::path(src != nullptr ? src : ".") / "models" / "tiny-shakespeare";
  if (!fs::exists(dir / "config.json") || !fs::exists(dir / "tokenizer.json")) {
    GTEST_SKIP() << dir << " not present";
  }
  auto model = Model::Load(dir.string(), ModelOptions{2});
  ASSERT_TRUE(model.ok()) << model.status();
  auto tok = LoadTokenizer(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::shared_ptr<Model> m = std::move(*model);
  std::shared_ptr<const Tokenizer> t = std::move(*tok);
  const std::vector<std::string> texts = {"ROMEO:", "First Citizen:\nBefore we proceed", "KING HENRY",
                                          "O, what a rogue and", "JULIET:\nWherefore art thou"};
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& text : texts) {
    auto ids = t->Encode(text, /*add_bos=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    prompts.push_back(*ids);
  }
  auto run = [&](int64_t max_num_seqs) {
    EngineOptions o;
    o.max_num_seqs = max_num_seqs;
    o.max_tokens_per_iteration = 16;
    o.kv_cache_bytes = 64ull << 20;
    auto engine = Engine::Create(m, t, o);
    EXPECT_TRUE(engine.ok()) << engine.status();
    std::vector<std::shared_ptr<RequestHandle>> hs;
    std::vector<std::vector<int32_t>> out;
    for (const auto& p : prompts) {
      auto h = (*engine)->Submit(Greedy(p, 20));
      EXPECT_TRUE(h.ok()) << h.status();
      if (max_num_seqs == 1) {
        out.push_back(Collect(**h).tokens);
      } else {
        hs.push_back(*h);
      }
    }
    for (auto& h : hs) out.push_back(Collect(*h).tokens);
    return out;
  };
  EXPECT_EQ(run(8), run(1));
}

}  // namespace
}  // namespace lcd::runtime
