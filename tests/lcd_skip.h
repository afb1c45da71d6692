// The one way a C++ test skips (Python tests: tests/python/lcd_skip.py).
//
//   LCD_SKIP(kMissing) << "no " << path;   data, a tool or a CPU feature is
//                                          missing: skips locally, FAILS under
//                                          CI=true (a skip would hide an
//                                          untested feature behind green CI)
//   LCD_SKIP(kNoGpu) << "no CUDA device";  the GPU tests on a machine without
//                                          a GPU: skips, in CI too
//   LCD_SKIP(kBuild) << "...";             this build cannot run the test by
//                                          construction (a sanitizer refuses
//                                          what it needs); the release build
//                                          in the same CI run covers it: skips
//
// Like GTEST_SKIP it returns from the current function (a TEST body, SetUp,
// or a void helper) and takes a streamed message.
// tests/python/test_skip_policy.py refuses a bare GTEST_SKIP / pytest.skip
// anywhere in tests/ and checks that CI=true turns kMissing into a failure.
#ifndef LCD_TESTS_LCD_SKIP_H_
#define LCD_TESTS_LCD_SKIP_H_

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace lcd::test_skip {

enum class Kind { kMissing, kNoGpu, kBuild };

inline bool InCi() {
  const char* ci = std::getenv("CI");
  if (ci == nullptr) return false;
  const std::string v = ci;
  return v == "true" || v == "TRUE" || v == "True" || v == "1" || v == "yes";
}

inline ::testing::TestPartResult::Type ResultType(Kind kind) {
  return kind == Kind::kMissing && InCi() ? ::testing::TestPartResult::kFatalFailure
                                          : ::testing::TestPartResult::kSkip;
}

inline const char* Prefix(Kind kind) {
  switch (kind) {
    case Kind::kMissing:
      return InCi() ? "CI=true turns this skip into a failure: " : "skipped (missing): ";
    case Kind::kNoGpu:
      return "skipped (no GPU): ";
    case Kind::kBuild:
      return "skipped (this build cannot run it): ";
  }
  return "";
}

}  // namespace lcd::test_skip

// gtest's own GTEST_SKIP / GTEST_FAIL expand to this same AssertHelper form.
#define LCD_SKIP(kind)                                                                    \
  return ::testing::internal::AssertHelper(                                               \
             ::lcd::test_skip::ResultType(::lcd::test_skip::Kind::kind), __FILE__, __LINE__, \
             ::lcd::test_skip::Prefix(::lcd::test_skip::Kind::kind)) = ::testing::Message()

#endif  // LCD_TESTS_LCD_SKIP_H_
