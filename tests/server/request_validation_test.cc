// Boundary checks of GenerationService requests, one bad input at a time.
#include "lcd/server/request_validation.h"

#include <cmath>
#include <limits>
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

}  // namespace
}  // namespace lcd::server
