// Boundary checks of GenerationService requests, one bad input at a time.
#include "lcd/server/request_validation.h"

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lcd::server {
namespace {

using ::testing::HasSubstr;

lcd::v1::GenerateRequest Good() {
  lcd::v1::GenerateRequest r;
  r.set_model("tiny");
  r.set_text("Hello, wörld ✓ 😀");
  return r;
}

void ExpectInvalid(const absl::Status& st, const std::string& what) {
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr(what));
}

TEST(RequestValidation, GoodRequestPasses) { EXPECT_TRUE(ValidateGenerateRequest(Good()).ok()); }

TEST(RequestValidation, BadRequests) {
  auto r = Good();
  r.clear_model();
  ExpectInvalid(ValidateGenerateRequest(r), "model");
  r = Good();
  r.set_text("");
  ExpectInvalid(ValidateGenerateRequest(r), "empty");
  r = Good();
  r.clear_prompt();
  ExpectInvalid(ValidateGenerateRequest(r), "text, text_bytes or token_ids");
  r = Good();
  r.set_text_bytes(std::string("\xC3\x28", 2));
  ExpectInvalid(ValidateGenerateRequest(r), "text_bytes: invalid UTF-8 at byte 0");
  r.set_text_bytes("");
  ExpectInvalid(ValidateGenerateRequest(r), "empty");
  r = Good();
  r.mutable_token_ids();  // Selected but empty.
  ExpectInvalid(ValidateGenerateRequest(r), "empty");
  r = Good();
  r.set_num_logprobs(21);
  ExpectInvalid(ValidateGenerateRequest(r), "num_logprobs");
  r.set_num_logprobs(-1);
  ExpectInvalid(ValidateGenerateRequest(r), "num_logprobs");
  r = Good();
  r.set_request_id(std::string(200, 'x'));
  ExpectInvalid(ValidateGenerateRequest(r), "request_id");
  r = Good();
  r.set_text(std::string("ok\xff\xfe", 4));
  ExpectInvalid(ValidateGenerateRequest(r), "UTF-8");
}

// One prompt cap for every RPC that tokenizes (Tokenize uses
// ValidatePromptBytes too): exactly kMaxPromptBytes passes, one more byte
// is refused with the limit in the message, for text and text_bytes.
TEST(RequestValidation, PromptByteCap) {
  auto r = Good();
  r.set_text(std::string(kMaxPromptBytes, 'x'));
  EXPECT_TRUE(ValidateGenerateRequest(r).ok());
  r.set_text(std::string(kMaxPromptBytes + 1, 'x'));
  ExpectInvalid(ValidateGenerateRequest(r), "text: is 1048577 bytes; prompts are at most 1048576 bytes");
  r.set_text_bytes(std::string(kMaxPromptBytes + 1, 'x'));
  ExpectInvalid(ValidateGenerateRequest(r), "text_bytes: is 1048577 bytes");
  r.set_text_bytes(std::string(kMaxPromptBytes, 'x'));
  EXPECT_TRUE(ValidateGenerateRequest(r).ok());
  EXPECT_TRUE(ValidatePromptBytes(std::string(kMaxPromptBytes, 'y'), "text").ok());
  ExpectInvalid(ValidatePromptBytes(std::string(kMaxPromptBytes + 1, 'y'), "text"), "text: is 1048577 bytes");
}

TEST(RequestValidation, Utf8) {
  EXPECT_TRUE(ValidateUtf8("plain ascii", "f").ok());
  EXPECT_TRUE(ValidateUtf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", "f").ok());  // é € 😀
  EXPECT_FALSE(ValidateUtf8("\xC0\xAF", "f").ok());                             // Overlong '/'.
  EXPECT_FALSE(ValidateUtf8("\xED\xA0\x80", "f").ok());                         // Surrogate U+D800.
  EXPECT_FALSE(ValidateUtf8("\xF4\x90\x80\x80", "f").ok());                     // Above U+10FFFF.
  EXPECT_FALSE(ValidateUtf8("\xE2\x82", "f").ok());                             // Truncated.
  EXPECT_FALSE(ValidateUtf8("\x80", "f").ok());  // Lone continuation.
  ExpectInvalid(ValidateUtf8("ab\xff", "text"), "byte 2");
}

TEST(RequestValidation, TokenIds) {
  EXPECT_TRUE(ValidateTokenIds({0, 5, 9}, 10, "p").ok());
  ExpectInvalid(ValidateTokenIds({0, 10}, 10, "p"), "token id 10 at index 1");
  ExpectInvalid(ValidateTokenIds({-1}, 10, "p"), "token id -1");
}

TEST(RequestValidation, SamplingDefaultsAndClamp) {
  lcd::v1::SamplingParams p;
  auto s = ToSamplingParams(p, /*prompt_tokens=*/10, /*max_context=*/100, /*vocab_size=*/50);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->max_new_tokens, 90);  // Default 256 clamped to the room left.
  EXPECT_EQ(s->temperature, 1.0);
  p.set_temperature(0);
  p.set_max_new_tokens(5);
  p.set_seed(7);
  p.add_stop_strings("\n\n");
  p.add_stop_token_ids(3);
  p.set_ignore_eos(true);
  s = ToSamplingParams(p, 10, 100, 50);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->temperature, 0.0);
  EXPECT_EQ(s->max_new_tokens, 5);
  EXPECT_EQ(s->seed, 7u);
  EXPECT_EQ(s->stop_strings.size(), 1u);
  EXPECT_EQ(s->stop_token_ids, std::vector<int32_t>{3});
  EXPECT_TRUE(s->ignore_eos);
}

TEST(RequestValidation, AbsurdSamplingValues) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    std::function<void(lcd::v1::SamplingParams*)> set;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[&](auto* p) { p->set_temperature(nan); }, "temperature"},
      {[&](auto* p) { p->set_temperature(-1); }, "temperature"},
      {[&](auto* p) { p->set_temperature(1e9); }, "temperature"},
      {[&](auto* p) { p->set_top_p(inf); }, "top_p"},
      {[&](auto* p) { p->set_top_p(0); }, "top_p"},
      {[&](auto* p) { p->set_top_k(-5); }, "top_k"},
      {[&](auto* p) { p->set_min_p(2); }, "min_p"},
      {[&](auto* p) { p->set_repetition_penalty(0); }, "repetition_penalty"},
      {[&](auto* p) { p->set_presence_penalty(5); }, "presence_penalty"},
      {[&](auto* p) { p->set_frequency_penalty(-inf); }, "frequency_penalty"},
      {[&](auto* p) { p->set_max_new_tokens(0); }, "max_new_tokens"},
      {[&](auto* p) { p->set_max_new_tokens(1000000); }, "exceed the context"},
      {[&](auto* p) { p->add_stop_token_ids(50); }, "stop_token_ids"},
      {[&](auto* p) { p->add_stop_strings(""); }, "stop_strings"},
      {[&](auto* p) { p->add_stop_strings(std::string(300, 'a')); }, "stop_strings"},
      {[&](auto* p) { p->add_stop_strings("\xff"); }, "UTF-8"},
      {[&](auto* p) {
         for (int i = 0; i < 17; ++i) p->add_stop_strings("s");
       },
       "at most"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    lcd::v1::SamplingParams p;
    cases[i].set(&p);
    auto s = ToSamplingParams(p, 10, 100, 50);
    ASSERT_FALSE(s.ok()) << "case " << i;
    ExpectInvalid(s.status(), cases[i].field);
  }
}

TEST(RequestValidation, PromptLongerThanContext) {
  lcd::v1::SamplingParams p;
  ExpectInvalid(ToSamplingParams(p, 100, 100, 50).status(), "context");
  ExpectInvalid(ToSamplingParams(p, 5000, 100, 50).status(), "5000 tokens");
}

// ----------------------------------------------------------- UTF-8 sanitizing

TEST(SanitizeUtf8, KeepsValidTextAndReplacesBadBytes) {
  EXPECT_EQ(SanitizeUtf8("Hello, wörld ✓ 😀", 100), "Hello, wörld ✓ 😀");
  EXPECT_EQ(SanitizeUtf8(std::string("a\xff" "b\xc3", 4), 100), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  // Overlong '/', a surrogate, and a code point above U+10FFFF.
  EXPECT_EQ(SanitizeUtf8("\xc0\xaf", 100), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(ValidateUtf8(SanitizeUtf8("\xed\xa0\x80 \xf4\x90\x80\x80", 100), "x").ok());
}

TEST(SanitizeUtf8, CutsAtCharacterBoundaryWithEllipsis) {
  const std::string s = SanitizeUtf8(std::string(100, 'n'), 16);
  EXPECT_LE(s.size(), 16u);
  EXPECT_EQ(s, std::string(13, 'n') + "\xE2\x80\xA6");
  // Multi-byte characters are never split.
  const std::string e = SanitizeUtf8("ééééééééééé", 9);
  EXPECT_TRUE(ValidateUtf8(e, "e").ok()) << e;
  EXPECT_LE(e.size(), 9u);
  EXPECT_EQ(SanitizeUtf8("exact", 5), "exact");
  EXPECT_EQ(Echo(std::string(20000, 'x')).size(), kMaxEchoBytes);
}

TEST(SanitizeUtf8, RandomBytesAlwaysComeOutValidAndBounded) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> byte(0, 255), len(0, 300), cap(3, 200);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string in(static_cast<size_t>(len(rng)), '\0');
    for (char& c : in) c = static_cast<char>(byte(rng));
    const size_t max = static_cast<size_t>(cap(rng));
    const std::string out = SanitizeUtf8(in, max);
    ASSERT_TRUE(ValidateUtf8(out, "out").ok()) << trial;
    ASSERT_LE(out.size(), max) << trial;
    if (ValidateUtf8(in, "in").ok() && in.size() <= max) {
      ASSERT_EQ(out, in) << trial;
    }
  }
}

// ----------------------------------------------------------- ModelService

lcd::v1::LoadModelRequest GoodLoad() {
  lcd::v1::LoadModelRequest r;
  r.set_name("llama-7b.q4_v2");
  r.set_path("/models/llama-7b");
  r.set_version("2026-11-29 ✓");
  return r;
}

TEST(ModelRequestValidation, GoodRequestsPass) {
  EXPECT_TRUE(ValidateLoadModelRequest(GoodLoad()).ok());
  auto r = GoodLoad();
  r.set_path("relative/dir");
  r.clear_version();
  EXPECT_TRUE(ValidateLoadModelRequest(r).ok());
  lcd::v1::UnloadModelRequest u;
  u.set_name("m");
  EXPECT_TRUE(ValidateUnloadModelRequest(u).ok());
  lcd::v1::GetModelStatusRequest g;
  g.set_name(std::string(kMaxModelNameBytes, 'a'));
  EXPECT_TRUE(ValidateGetModelStatusRequest(g).ok());
}

TEST(ModelRequestValidation, BadLoadRequests) {
  struct Case {
    std::function<void(lcd::v1::LoadModelRequest*)> set;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {[](auto* r) { r->clear_name(); }, "name"},
      {[](auto* r) { r->set_name("a b"); }, "name"},
      {[](auto* r) { r->set_name("a/b"); }, "name"},
      {[](auto* r) { r->set_name(std::string(kMaxModelNameBytes + 1, 'a')); }, "at most 128"},
      {[](auto* r) { r->clear_path(); }, "path"},
      {[](auto* r) { r->set_path(std::string("/m\0x", 4)); }, "NUL"},
      {[](auto* r) { r->set_path("/m/\xff"); }, "UTF-8"},
      {[](auto* r) { r->set_path("/m/../etc"); }, ".."},
      {[](auto* r) { r->set_path(".."); }, ".."},
      {[](auto* r) { r->set_path("/m/" + std::string(256, 'a')); }, "component"},
      {[](auto* r) { r->set_path("/" + std::string(kMaxModelPathBytes, 'a')); }, "path"},
      {[](auto* r) { r->set_version(std::string(kMaxVersionBytes + 1, 'v')); }, "version"},
      {[](auto* r) { r->set_version("a\nb"); }, "control"},
      {[](auto* r) { r->set_version("\xc3"); }, "UTF-8"},
      // From the artifact store: one selector, no path or version label.
      {[](auto* r) { r->set_artifact_version(3); }, "path"},
      {[](auto* r) { r->set_follow_latest(true); }, "path"},
      {[](auto* r) { r->set_artifact_version(-1); }, "artifact_version"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    auto r = GoodLoad();
    cases[i].set(&r);
    ExpectInvalid(ValidateLoadModelRequest(r), cases[i].fragment);
  }
}

TEST(ModelRequestValidation, StoreLoadsAndRollbacks) {
  lcd::v1::LoadModelRequest r;
  r.set_name("m");
  r.set_artifact_version(7);
  EXPECT_TRUE(ValidateLoadModelRequest(r).ok());
  r.set_follow_latest(true);
  ExpectInvalid(ValidateLoadModelRequest(r), "exclude each other");
  r.set_artifact_version(0);
  EXPECT_TRUE(ValidateLoadModelRequest(r).ok());
  r.set_version("label");
  ExpectInvalid(ValidateLoadModelRequest(r), "empty when loading from the artifact store");
  lcd::v1::RollbackModelRequest b;
  b.set_name("m");
  EXPECT_TRUE(ValidateRollbackModelRequest(b).ok());
  b.set_name("../x");
  ExpectInvalid(ValidateRollbackModelRequest(b), "name");
}

TEST(ModelRequestValidation, NamesAreCappedInMessages) {
  lcd::v1::UnloadModelRequest u;
  u.set_name(std::string(20000, '!'));
  absl::Status st = ValidateUnloadModelRequest(u);
  ExpectInvalid(st, "at most");
  EXPECT_LT(st.message().size(), 200u);
  u.set_name(std::string(100, '!'));
  st = ValidateUnloadModelRequest(u);
  ExpectInvalid(st, "[A-Za-z0-9._-]");
  EXPECT_LT(st.message().size(), 200u);
  lcd::v1::GetModelStatusRequest g;
  ExpectInvalid(ValidateGetModelStatusRequest(g), "name");
  auto r = Good();
  r.set_model(std::string(20000, 'm'));
  ExpectInvalid(ValidateGenerateRequest(r), "model");
}

}  // namespace
}  // namespace lcd::server
