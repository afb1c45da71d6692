// Debian's libsentencepiece bundles its own protobuf-lite (3.14) and exports
// it; a binary that also links libprotobuf 3.21 (every lcd_server binary)
// used to crash at start, or have SentencePiece refuse the 3.21 runtime.
// lcd_runtime now reaches libsentencepiece only through liblcd_spm_shim.so,
// dlopen()ed with RTLD_LOCAL | RTLD_DEEPBIND, so this binary (which links
// gRPC and protobuf) can both use protobuf and load a tokenizer.model.
#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "lcd/runtime/tokenizer.h"
#include "lcd/v1/generate.pb.h"
#include "lcd_skip.h"

namespace lcd::server {
namespace {

TEST(SentencePieceInServer, ProtobufWorksInAProcessThatLinksSentencePiece) {
  lcd::v1::GenerateRequest r;  // Exercises libprotobuf in this process.
  r.set_model("m");
  r.set_text("hello");
  std::string bytes;
  ASSERT_TRUE(r.SerializeToString(&bytes));
  lcd::v1::GenerateRequest back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  EXPECT_EQ(back.text(), "hello");
}

// Sanitizer runtimes refuse libraries opened with RTLD_DEEPBIND, which is
// what keeps the two protobufs apart, so sanitizer builds open the shim
// without it and SentencePiece then meets protobuf 3.21 in this process.
// The release build runs this test; sanitizer builds skip it.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LCD_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LCD_SANITIZER_BUILD 1
#endif
#endif

TEST(SentencePieceInServer, SentencePieceTokenizesInAProcessThatLinksProtobuf) {
#ifdef LCD_SANITIZER_BUILD
  LCD_SKIP(kBuild) << "needs RTLD_DEEPBIND, which sanitizer runtimes refuse";
#endif
  const char* src = std::getenv("LCD_SOURCE_DIR");
  const std::filesystem::path model = std::filesystem::path(src ? src : ".") / ".." / "shared" /
                                      "data" / "tokenizers" / "llama2-sentencepiece" /
                                      "tokenizer.model";
  if (!std::filesystem::exists(model)) LCD_SKIP(kMissing) << "no " << model;
  auto tok = runtime::LoadSentencePieceTokenizer(model.string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("Hello world", /*add_bos=*/true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  // Llama-2's tokenizer: <s> ▁Hello ▁world.
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 15043, 3186}));
  EXPECT_EQ((*tok)->Decode(*ids, /*skip_special=*/true), "Hello world");
}

}  // namespace
}  // namespace lcd::server
