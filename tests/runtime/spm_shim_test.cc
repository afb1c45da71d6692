// liblcd_spm_shim.so: its plain-C API (range checks, error reporting, buffer
// ownership) and how lcd_runtime finds it. The loader caches the shim per
// process, so the lookup tests run in a fresh child process each
// (threadsafe death-test style re-executes this binary).
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd/runtime/tokenizer.h"
#include "lcd_skip.h"
#include "../../runtime/spm_shim/spm_shim.h"

namespace lcd::runtime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

fs::path SourceDir() {
  const char* src = std::getenv("LCD_SOURCE_DIR");
  return src ? fs::path(src) : fs::path(".");
}

fs::path LlamaModel() {
  return SourceDir() / ".." / "shared" / "data" / "tokenizers" / "llama2-sentencepiece" / "tokenizer.model";
}

fs::path ShimPath() {
  const char* build = std::getenv("LCD_BUILD_DIR");
  return fs::path(build ? build : ".") / "lib" / "liblcd_spm_shim.so";
}

// Exit code 0 when Load fails with FailedPrecondition naming the bad path.
int LoadWithMissingShim() {
  setenv("LCD_SPM_SHIM", "/nonexistent/dir/liblcd_spm_shim.so", 1);
  auto tok = LoadSentencePieceTokenizer("/also/nonexistent.model");
  if (tok.ok() || tok.status().code() != absl::StatusCode::kFailedPrecondition) return 1;
  const std::string msg(tok.status().message());
  return msg.find("/nonexistent/dir/liblcd_spm_shim.so") != std::string::npos ? 0 : 2;
}

TEST(SpmShimLookupTest, MissingShimIsFailedPreconditionNamingThePath) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::exit(LoadWithMissingShim()), ::testing::ExitedWithCode(0), "");
}

// Exit code 0 when the shim named by LCD_SPM_SHIM loads and tokenizes.
int LoadWithExplicitShim(const std::string& shim, const std::string& model) {
  setenv("LCD_SPM_SHIM", shim.c_str(), 1);
  auto tok = LoadSentencePieceTokenizer(model);
  if (!tok.ok()) return 1;
  auto ids = (*tok)->Encode("Hello world", /*add_bos=*/true);
  return ids.ok() && *ids == std::vector<int32_t>{1, 15043, 3186} ? 0 : 2;
}

TEST(SpmShimLookupTest, EnvironmentOverrideIsUsed) {
  if (!fs::exists(LlamaModel())) LCD_SKIP(kMissing) << "shared data absent: " << LlamaModel();
  if (!fs::exists(ShimPath())) LCD_SKIP(kMissing) << "no shim at " << ShimPath();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::exit(LoadWithExplicitShim(ShimPath().string(), LlamaModel().string())),
              ::testing::ExitedWithCode(0), "");
}

// The C API used directly, as lcd_runtime uses it. RTLD_LOCAL without
// DEEPBIND: this binary links no protobuf, and sanitizers reject DEEPBIND.
class SpmShimApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(ShimPath())) LCD_SKIP(kMissing) << "no shim at " << ShimPath();
    lib_ = dlopen(ShimPath().c_str(), RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(lib_, nullptr) << dlerror();
  }
  template <typename Fn>
  Fn Sym(const char* name) {
    void* f = dlsym(lib_, name);
    EXPECT_NE(f, nullptr) << name;
    return reinterpret_cast<Fn>(f);
  }
  void* lib_ = nullptr;  // Never dlclose'd (as in production).
};

// decltype only: the shim's functions are declared here, never linked.
#define LCD_SPM_SYM(name) Sym<decltype(&name)>(#name)

TEST_F(SpmShimApiTest, LoadErrorsAreReported) {
  auto load = LCD_SPM_SYM(lcd_spm_load);
  auto free_buffer = LCD_SPM_SYM(lcd_spm_free_buffer);
  ASSERT_EQ(LCD_SPM_SYM(lcd_spm_abi_version)(), LCD_SPM_SHIM_ABI_VERSION);
  char* error = nullptr;
  int not_found = 0;
  EXPECT_EQ(load("/nonexistent.model", &error, &not_found), nullptr);
  EXPECT_EQ(not_found, 1);
  ASSERT_NE(error, nullptr);
  EXPECT_THAT(std::string(error), HasSubstr("nonexistent"));
  free_buffer(error);

  const fs::path bad = fs::temp_directory_path() / ("spm_shim_test_bad_" + std::to_string(getpid()));
  { FILE* f = fopen(bad.c_str(), "wb"); ASSERT_NE(f, nullptr); fputs("not a model", f); fclose(f); }
  error = nullptr;
  EXPECT_EQ(load(bad.c_str(), &error, &not_found), nullptr);
  EXPECT_EQ(not_found, 0);
  EXPECT_NE(error, nullptr);
  free_buffer(error);
  fs::remove(bad);
}

TEST_F(SpmShimApiTest, LlamaModelThroughTheCApi) {
  if (!fs::exists(LlamaModel())) LCD_SKIP(kMissing) << "shared data absent: " << LlamaModel();
  char* error = nullptr;
  int not_found = 0;
  LcdSpm* spm = LCD_SPM_SYM(lcd_spm_load)(LlamaModel().c_str(), &error, &not_found);
  ASSERT_NE(spm, nullptr) << (error ? error : "");
  auto free_buffer = LCD_SPM_SYM(lcd_spm_free_buffer);

  const std::string text = "Hello world";
  int* ids = nullptr;
  size_t n = 0;
  ASSERT_EQ(LCD_SPM_SYM(lcd_spm_encode)(spm, text.data(), text.size(), &ids, &n, &error), 1);
  EXPECT_EQ(std::vector<int>(ids, ids + n), (std::vector<int>{15043, 3186}));
  free_buffer(ids);
  ASSERT_EQ(LCD_SPM_SYM(lcd_spm_encode)(spm, "", 0, &ids, &n, &error), 1);
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(ids, nullptr);

  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_piece_size)(spm), 32000);
  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_bos_id)(spm), 1);
  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_eos_id)(spm), 2);
  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_unk_id)(spm), 0);
  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_pad_id)(spm), -1);
  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_piece_to_id)(spm, "\xE2\x96\x81Hello", 8), 15043);
  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_is_control)(spm, 1), 1);
  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_is_unknown)(spm, 0), 1);
  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_is_byte)(spm, 3), 1);  // <0x00>
  EXPECT_EQ(LCD_SPM_SYM(lcd_spm_is_byte)(spm, 15043), 0);

  size_t len = 0;
  char* piece = LCD_SPM_SYM(lcd_spm_id_to_piece)(spm, 3186, &len);
  EXPECT_EQ(std::string(piece, len), "\xE2\x96\x81world");
  free_buffer(piece);
  // Out-of-range ids are answered, not undefined behaviour.
  for (int id : {-1, 32000, 1 << 30}) {
    piece = LCD_SPM_SYM(lcd_spm_id_to_piece)(spm, id, &len);
    ASSERT_NE(piece, nullptr);
    EXPECT_EQ(len, 0u);
    free_buffer(piece);
    EXPECT_EQ(LCD_SPM_SYM(lcd_spm_is_control)(spm, id), 0);
    EXPECT_EQ(LCD_SPM_SYM(lcd_spm_is_byte)(spm, id), 0);
    EXPECT_EQ(LCD_SPM_SYM(lcd_spm_is_unknown)(spm, id), 0);
  }
  const std::vector<int> to_decode = {1, 15043, -5, 3186, 99999};
  char* decoded = LCD_SPM_SYM(lcd_spm_decode_ids)(spm, to_decode.data(), to_decode.size(), &len);
  EXPECT_EQ(std::string(decoded, len), "Hello world");
  free_buffer(decoded);
  LCD_SPM_SYM(lcd_spm_free)(spm);
}

}  // namespace
}  // namespace lcd::runtime
