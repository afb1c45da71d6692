// Unit tests of the tokenizers on small fixtures made with the Hugging Face
// `tokenizers` library (tests/testdata/tokenizer/, see its README), plus
// error handling. Wide parity runs live in tests/python/test_tokenizer_parity.py.
#include "lcd/runtime/tokenizer.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd_skip.h"
#include "nlohmann/json.hpp"

namespace lcd::runtime {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

fs::path SourceDir() {
  const char* env = std::getenv("LCD_SOURCE_DIR");
  return env != nullptr ? fs::path(env) : fs::path(__FILE__).parent_path().parent_path().parent_path();
}

fs::path FixtureDir() { return SourceDir() / "tests" / "testdata" / "tokenizer"; }

std::unique_ptr<Tokenizer> LoadFixture(const std::string& name) {
  auto tok = LoadBpeTokenizerJson((FixtureDir() / name).string());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// A scratch directory removed at the end of the test.
class ScratchDir {
 public:
  ScratchDir() {
    path_ = fs::temp_directory_path() /
            ("lcd_tokenizer_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~ScratchDir() { fs::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ / name, std::ios::binary) << content;
    return (path_ / name).string();
  }
  std::string path() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadJsonText(const std::string& json) {
  ScratchDir dir;
  return LoadBpeTokenizerJson(dir.Write("tokenizer.json", json));
}

bool IsValidUtf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

std::string StreamDecode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  IncrementalDetokenizer detok(&tok, skip_special);
  std::string out;
  for (int32_t id : ids) {
    const std::string chunk = detok.Push(id);
    EXPECT_TRUE(IsValidUtf8(chunk)) << "chunk for id " << id;
    out += chunk;
  }
  return out + detok.Flush();
}

TEST(BpeTokenizerTest, MatchesReferenceIdsAndDecoding) {
  std::ifstream in(FixtureDir() / "expected.jsonl");
  ASSERT_TRUE(in) << "missing " << (FixtureDir() / "expected.jsonl");
  std::map<std::string, std::unique_ptr<Tokenizer>> tokenizers;
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    const auto e = nlohmann::json::parse(line);
    const std::string file = e.at("file");
    if (!tokenizers.count(file)) tokenizers[file] = LoadFixture(file);
    const Tokenizer& tok = *tokenizers[file];
    const std::string text = e.at("text");
    const bool add_bos = e.at("add_bos");
    auto ids = tok.Encode(text, add_bos);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, e.at("ids").get<std::vector<int32_t>>()) << file << ": " << text;
    // The Llama-style reference text was decoded without its special ids.
    const bool skip = add_bos;
    EXPECT_EQ(tok.Decode(*ids, skip), e.at("decoded").get<std::string>()) << file << ": " << text;
    EXPECT_EQ(StreamDecode(tok, *ids, skip), tok.Decode(*ids, skip)) << file << ": " << text;
    ++cases;
  }
  EXPECT_EQ(cases, 6 * 12);  // Six fixtures, twelve texts each.
}

TEST(BpeTokenizerTest, SpecialTokensAndIds) {
  auto llama = LoadFixture("llama_style.json");
  auto bytes = LoadFixture("byte_level.json");
  ASSERT_TRUE(llama && bytes);
  EXPECT_EQ(llama->bos_id(), 1);  // From the <s> post-processor template.
  EXPECT_EQ(llama->eos_id(), 2);
  EXPECT_TRUE(llama->IsSpecial(1));
  EXPECT_FALSE(llama->IsSpecial(300));
  EXPECT_EQ(llama->TokenToId("<0x41>"), 3 + 0x41);
  EXPECT_EQ(llama->TokenBytes(3 + 0x41, false), "A");
  EXPECT_EQ(llama->TokenBytes(1, false), "<s>");
  EXPECT_EQ(llama->TokenBytes(1, true), "");
  EXPECT_EQ(llama->TokenBytes(999999, false), "");
  EXPECT_EQ(llama->vocab_size(), 600);

  EXPECT_FALSE(bytes->bos_id().has_value());  // GPT-2 style adds no BOS.
  EXPECT_EQ(bytes->eos_id(), 0);
  ASSERT_TRUE(bytes->TokenToId("Ġ").has_value());
  EXPECT_EQ(bytes->TokenBytes(*bytes->TokenToId("Ġ"), false), " ");
  auto with_bos = bytes->Encode("hi", /*add_bos=*/true);
  ASSERT_TRUE(with_bos.ok());
  EXPECT_EQ(*with_bos, *bytes->Encode("hi", false));

  auto parsed = bytes->Encode("a<|endoftext|>b", false, /*parse_special=*/true);
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(*parsed, ::testing::Contains(0));
  auto literal = bytes->Encode("a<|endoftext|>b", false, /*parse_special=*/false);
  ASSERT_TRUE(literal.ok());
  EXPECT_THAT(*literal, ::testing::Not(::testing::Contains(0)));
  EXPECT_EQ(bytes->Decode(*literal, false), "a<|endoftext|>b");
}

TEST(BpeTokenizerTest, InvalidUtf8IsRejected) {
  auto tok = LoadFixture("byte_level.json");
  ASSERT_TRUE(tok);
  for (const std::string bad : {"\xff", "ab\xc3", "\xc0\xaf", "\xed\xa0\x80", "x\xf4\x90\x80\x80"}) {
    auto ids = tok->Encode(bad, false);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(ids.status().message()), HasSubstr("UTF-8"));
  }
}

TEST(IncrementalDetokenizerTest, EmojiSplitAcrossByteFallbackTokens) {
  auto tok = LoadFixture("llama_style.json");
  ASSERT_TRUE(tok);
  auto ids = tok->Encode("😀", false);
  ASSERT_TRUE(ids.ok());
  // "▁" then the four UTF-8 bytes of U+1F600 as <0xNN> tokens.
  ASSERT_EQ(ids->size(), 5u);
  IncrementalDetokenizer detok(tok.get(), true);
  EXPECT_EQ(detok.Push((*ids)[0]), "");  // The leading "▁" is stripped, as in Decode.
  EXPECT_EQ(detok.Push((*ids)[1]), "");
  EXPECT_EQ(detok.Push((*ids)[2]), "");
  EXPECT_EQ(detok.Push((*ids)[3]), "");
  EXPECT_EQ(detok.Push((*ids)[4]), "😀");
  EXPECT_EQ(detok.Flush(), "");
  EXPECT_EQ(tok->Decode(*ids, true), "😀");

  // An unfinished character is held, then flushed as U+FFFD; Decode agrees.
  IncrementalDetokenizer partial(tok.get(), true);
  const std::vector<int32_t> cut = {*tok->TokenToId("<0x41>"), (*ids)[1], (*ids)[2]};
  EXPECT_EQ(partial.Push(cut[0]), "A");
  EXPECT_EQ(partial.Push(cut[1]), "");
  EXPECT_EQ(partial.Push(cut[2]), "");
  EXPECT_EQ(partial.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(tok->Decode(cut, true), "A\xEF\xBF\xBD");

  // An impossible byte in the middle becomes U+FFFD at once.
  const std::vector<int32_t> bad = {*tok->TokenToId("<0xFF>"), *tok->TokenToId("<0x42>")};
  EXPECT_EQ(StreamDecode(*tok, bad, true), tok->Decode(bad, true));
  EXPECT_EQ(tok->Decode(bad, true), "\xEF\xBF\xBD" "B");
}

TEST(IncrementalDetokenizerTest, LongMixedTextStreamsLikeDecode) {
  for (const char* name : {"llama_style.json", "byte_level.json"}) {
    auto tok = LoadFixture(name);
    ASSERT_TRUE(tok);
    const std::string text = "  Ωmega 👨‍👩‍👧 café\n\tdone 日本 <s> </s> <|endoftext|> 😀😀 end ";
    auto ids = tok->Encode(text, true);
    ASSERT_TRUE(ids.ok());
    for (bool skip : {false, true}) {
      EXPECT_EQ(StreamDecode(*tok, *ids, skip), tok->Decode(*ids, skip)) << name << " skip=" << skip;
    }
  }
}

TEST(IncrementalDetokenizerTest, RandomIdSequencesStreamLikeDecode) {
  // Arbitrary ids (including invalid byte sequences and unknown ids) must
  // still stream to exactly Decode's text, in valid UTF-8 chunks.
  std::mt19937 rng(7);
  for (const char* name : {"llama_style.json", "byte_level.json"}) {
    auto tok = LoadFixture(name);
    ASSERT_TRUE(tok);
    std::uniform_int_distribution<int32_t> any_id(-3, tok->vocab_size() + 3);
    std::uniform_int_distribution<int32_t> byte_id(3, 3 + 255);  // <0xNN> in llama_style.
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<int32_t> ids(1 + trial % 17);
      for (int32_t& id : ids) id = (trial % 2 == 0) ? any_id(rng) : byte_id(rng);
      for (bool skip : {false, true}) {
        const std::string decoded = tok->Decode(ids, skip);
        EXPECT_TRUE(IsValidUtf8(decoded));
        EXPECT_EQ(StreamDecode(*tok, ids, skip), decoded) << name << " trial " << trial;
      }
    }
  }
}

TEST(BpeTokenizerTest, MalformedFilesAreErrors) {
  EXPECT_EQ(LoadBpeTokenizerJson("/nonexistent/tokenizer.json").status().code(), absl::StatusCode::kNotFound);
  auto not_json = LoadJsonText("{ this is not json");
  EXPECT_EQ(not_json.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(not_json.status().message()), HasSubstr("parse"));

  auto no_model = LoadJsonText(R"({"added_tokens": []})");
  EXPECT_EQ(no_model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(no_model.status().message()), HasSubstr("model"));

  auto wordpiece = LoadJsonText(R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})");
  EXPECT_EQ(wordpiece.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(wordpiece.status().message()), HasSubstr("WordPiece"));

  auto bad_merge = LoadJsonText(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
                                   "merges": ["a b", "a zz"]}})");
  EXPECT_EQ(bad_merge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_merge.status().message()), HasSubstr("zz"));

  auto bad_type = LoadJsonText(R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})");
  EXPECT_EQ(bad_type.status().code(), absl::StatusCode::kInvalidArgument);

  auto unsupported = LoadJsonText(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                     "pre_tokenizer": {"type": "Whitespace"}})");
  EXPECT_EQ(unsupported.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(unsupported.status().message()), HasSubstr("Whitespace"));

  auto bad_regex = LoadJsonText(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
      "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}})");
  EXPECT_EQ(bad_regex.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_regex.status().message()), HasSubstr("regex"));

  auto bad_unk = LoadJsonText(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}})");
  EXPECT_EQ(bad_unk.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BpeTokenizerTest, MergeFormatsAndIgnoreMerges) {
  // Merges as "a b" strings and as [a, b] arrays must mean the same; "abc"
  // is in the vocab but unreachable by merges unless ignore_merges is set.
  const std::string vocab = R"("vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4})";
  for (const std::string merges : {R"("merges": ["a b"])", R"("merges": [["a", "b"]])"}) {
    for (bool ignore : {false, true}) {
      auto tok = LoadJsonText(std::string(R"({"model": {"type": "BPE", )") + vocab + ", " + merges +
                              R"(, "ignore_merges": )" + (ignore ? "true" : "false") + "}}");
      ASSERT_TRUE(tok.ok()) << tok.status();
      auto ids = (*tok)->Encode("abc", false);
      ASSERT_TRUE(ids.ok());
      if (ignore) {
        EXPECT_THAT(*ids, ElementsAre(4));
      } else {
        EXPECT_THAT(*ids, ElementsAre(3, 2));
      }
      // With no unk_token, unknown characters are dropped, as in the reference.
      EXPECT_THAT(*(*tok)->Encode("xab", false), ElementsAre(3));
    }
  }
}

TEST(BpeTokenizerTest, MergesFollowRankOrder) {
  // "b c" outranks "a b", so "abc" -> a + bc even though "ab" comes first.
  auto tok = LoadJsonText(R"({"model": {"type": "BPE",
      "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5},
      "merges": ["b c", "a b", "a bc"]}})");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(*(*tok)->Encode("abc", false), ElementsAre(5));
  EXPECT_THAT(*(*tok)->Encode("abab", false), ElementsAre(3, 3));
  EXPECT_THAT(*(*tok)->Encode("bcab", false), ElementsAre(4, 3));
}

TEST(BpeTokenizerTest, ConcurrentEncodeIsConsistent) {
  auto tok = LoadFixture("byte_level.json");
  ASSERT_TRUE(tok);
  std::vector<std::string> lines;
  for (int i = 0; i < 200; ++i) lines.push_back("line " + std::to_string(i * 7919) + " the quick brown fox café 😀");
  std::vector<std::vector<int32_t>> expected;
  for (const auto& l : lines) expected.push_back(*tok->Encode(l, false));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (size_t i = 0; i < lines.size(); ++i) {
        if (*tok->Encode(lines[i], false) != expected[i]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(LoadTokenizerTest, DirectoryAndConfig) {
  ScratchDir empty;
  EXPECT_EQ(LoadTokenizer(empty.path()).status().code(), absl::StatusCode::kNotFound);

  ScratchDir dir;
  std::ifstream in(FixtureDir() / "llama_style.json", std::ios::binary);
  std::stringstream json;
  json << in.rdbuf();
  dir.Write("tokenizer.json", json.str());
  auto tok = LoadTokenizer(dir.path());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), 1);

  dir.Write("tokenizer_config.json", R"({"add_bos_token": false, "eos_token": {"content": "<unk>"}})");
  tok = LoadTokenizer(dir.path());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_FALSE((*tok)->bos_id().has_value());
  EXPECT_EQ((*tok)->eos_id(), 0);
  EXPECT_EQ((*(*tok)->Encode("", true)).size(), 0u);

  dir.Write("tokenizer_config.json", R"({"add_bos_token": true, "bos_token": "</s>"})");
  tok = LoadTokenizer(dir.path());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), 2);

  dir.Write("tokenizer_config.json", R"({"bos_token": "<nope>"})");
  EXPECT_EQ(LoadTokenizer(dir.path()).status().code(), absl::StatusCode::kInvalidArgument);
  dir.Write("tokenizer_config.json", "[1,");
  EXPECT_EQ(LoadTokenizer(dir.path()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SentencePieceTokenizerTest, LlamaModel) {
  const fs::path model = SourceDir() / ".." / "shared" / "data" / "tokenizers" / "llama2-sentencepiece" / "tokenizer.model";
  if (!fs::exists(model)) LCD_SKIP(kMissing) << "shared data absent: " << model;
  auto tok = LoadSentencePieceTokenizer(model.string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 32000);
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  EXPECT_TRUE((*tok)->IsSpecial(1));
  EXPECT_EQ((*tok)->TokenBytes(3 + 0x41, false), "A");
  EXPECT_EQ((*tok)->TokenToId("<0x41>"), 3 + 0x41);
  EXPECT_FALSE((*tok)->TokenToId("definitely-not-a-piece").has_value());
  auto ids = (*tok)->Encode("Hello 😀 world", true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*ids)[0], 1);
  EXPECT_EQ((*tok)->Decode(*ids, true), "Hello 😀 world");
  EXPECT_EQ(StreamDecode(**tok, *ids, true), "Hello 😀 world");
  EXPECT_EQ(StreamDecode(**tok, *ids, false), (*tok)->Decode(*ids, false));
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> any_id(-2, 32001);
  std::uniform_int_distribution<int32_t> low_id(0, 300);  // Control, unk and byte pieces.
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> random_ids(1 + trial % 13);
    for (int32_t& id : random_ids) id = (trial % 2 == 0) ? any_id(rng) : low_id(rng);
    for (bool skip : {false, true}) {
      EXPECT_EQ(StreamDecode(**tok, random_ids, skip), (*tok)->Decode(random_ids, skip)) << trial;
    }
  }
  EXPECT_EQ((*tok)->Encode("\xff", false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadSentencePieceTokenizer("/nonexistent.model").status().code(), absl::StatusCode::kNotFound);
  ScratchDir dir;
  EXPECT_FALSE(LoadSentencePieceTokenizer(dir.Write("bad.model", "not a model")).ok());
}

}  // namespace
}  // namespace lcd::runtime
