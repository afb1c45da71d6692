// Scratch directories for C++ tests, removed when the test process exits.
//
//   std::filesystem::path d = lcd::testing::TestDir("writer");
//
// gives <tmp>/lcd_test_<pid>/<name>, empty (a crashed earlier run's leftovers
// are removed first); the whole lcd_test_<pid> folder is removed at normal
// exit, so passing runs leave nothing in /tmp. A test that fails keeps
// nothing either: its assertions carry what went wrong.
#ifndef LCD_TESTS_LCD_TEST_DIR_H_
#define LCD_TESTS_LCD_TEST_DIR_H_

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace lcd::testing {

inline std::filesystem::path TestDir(std::string name) {
  struct Root {
    std::filesystem::path path;
    ~Root() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Root root{std::filesystem::temp_directory_path() / ("lcd_test_" + std::to_string(::getpid()))};
  for (char& c : name) {
    if (c == '/') c = '_';  // Parameterised test names hold a '/'.
  }
  const std::filesystem::path dir = root.path / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace lcd::testing

#endif  // LCD_TESTS_LCD_TEST_DIR_H_
