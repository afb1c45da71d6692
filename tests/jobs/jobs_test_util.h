// Helpers the lcd-jobs tests share.
#ifndef LCD_TESTS_JOBS_JOBS_TEST_UTIL_H_
#define LCD_TESTS_JOBS_JOBS_TEST_UTIL_H_

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "lcd/server/jobs/job_store.h"
#include "lcd_test_dir.h"

namespace lcd::server::jobs::testing {

// An empty directory of its own for the running test (lcd_test_dir.h: removed
// when the test process exits).
inline std::filesystem::path FreshTestDir(const std::string& prefix) {
  return lcd::testing::TestDir(prefix + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
}

inline std::filesystem::path SourceDir() {
  const char* d = std::getenv("LCD_SOURCE_DIR");
  return d != nullptr ? std::filesystem::path(d)
                      : std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

inline std::string TinyModelDir() { return (SourceDir() / "models" / "tiny-shakespeare").string(); }

// rtn 4-bit g32 of the repository's tiny model, published as "tiny".
inline JobSpec TinySpec() {
  JobSpec s;
  s.source_model = "tiny-shakespeare";
  s.target_model = "tiny";
  s.method = "rtn";
  s.bits = 4;
  s.group_size = 32;
  return s;
}

}  // namespace lcd::server::jobs::testing

#endif  // LCD_TESTS_JOBS_JOBS_TEST_UTIL_H_
