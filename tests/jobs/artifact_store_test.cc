// ArtifactStore on real artifacts (the tiny model quantized by the real
// quantizer into a partial directory): publish renames only a verified
// artifact, a flipped byte or a missing file is refused and leaves no
// version, versions list in order, partial leftovers are cleaned, names that
// could escape the root are refused.
#include "lcd/server/jobs/artifact_store.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobs_test_util.h"
#include "lcd/quantizer/quantize_model.h"
#include "lcd/runtime/artifact.h"

namespace lcd::server::jobs {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ArtifactStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::FreshTestDir("artifact_store");
  }
  void TearDown() override { fs::remove_all(root_); }

  // Quantizes the tiny model into the partial directory of (model, version).
  void WritePartial(const ArtifactStore& store, const std::string& model, int64_t version) {
    auto partial = store.PreparePartial(model, version);
    ASSERT_TRUE(partial.ok()) << partial.status();
    quantizer::QuantizeModelOptions o;
    o.model_dir = testing::TinyModelDir();
    o.out_dir = *partial;
    o.method = "rtn";
    o.bits = 4;
    o.group_size = 32;
    o.threads = 2;
    auto m = quantizer::QuantizeModel(o);
    ASSERT_TRUE(m.ok()) << m.status();
  }

  fs::path root_;
};

TEST_F(ArtifactStoreTest, PublishesVerifiedVersionsInOrder) {
  ArtifactStore store(root_.string());
  WritePartial(store, "tiny", 1);
  EXPECT_TRUE(store.Versions("tiny")->empty()) << "a partial version is not a version";
  auto v1 = store.Publish("tiny", 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_FALSE(fs::exists(*v1 + ".partial"));
  EXPECT_TRUE(runtime::Artifact::Open(*v1).ok());
  WritePartial(store, "tiny", 2);
  ASSERT_TRUE(store.Publish("tiny", 2).ok());
  EXPECT_EQ(*store.Versions("tiny"), (std::vector<int64_t>{1, 2}));
  // Publishing twice is refused and changes nothing.
  WritePartial(store, "tiny", 2);
  EXPECT_EQ(store.Publish("tiny", 2).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(ArtifactStoreTest, RefusesACorruptedPartialAndLeavesNoVersion) {
  ArtifactStore store(root_.string());
  WritePartial(store, "tiny", 1);
  const fs::path partial = root_ / "tiny" / "1.partial";
  // Flip one byte in the middle of the weights file.
  fs::path weights;
  for (const auto& e : fs::directory_iterator(partial)) {
    if (e.path().extension() == ".safetensors") weights = e.path();
  }
  ASSERT_FALSE(weights.empty());
  {
    std::fstream f(weights, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(fs::file_size(weights) / 2));
    char c;
    f.read(&c, 1);
    c ^= 0x5a;
    f.seekp(static_cast<std::streamoff>(fs::file_size(weights) / 2));
    f.write(&c, 1);
  }
  auto r = store.Publish("tiny", 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(weights.filename().string()));
  EXPECT_FALSE(fs::exists(root_ / "tiny" / "1"));
  EXPECT_FALSE(fs::exists(partial)) << "a refused partial is removed";
  EXPECT_TRUE(store.Versions("tiny")->empty());

  // A partial the worker never finished (no manifest): refused the same way.
  WritePartial(store, "tiny", 2);
  fs::remove(root_ / "tiny" / "2.partial" / "manifest.json");
  EXPECT_FALSE(store.Publish("tiny", 2).ok());
  EXPECT_FALSE(fs::exists(root_ / "tiny" / "2"));
}

TEST_F(ArtifactStoreTest, CleansPartialLeftoversAtStart) {
  ArtifactStore store(root_.string());
  WritePartial(store, "tiny", 1);
  ASSERT_TRUE(store.Publish("tiny", 1).ok());
  ASSERT_TRUE(store.PreparePartial("tiny", 2).ok());
  ASSERT_TRUE(store.PreparePartial("other", 5).ok());
  EXPECT_EQ(*store.CleanPartials(), 2);
  EXPECT_EQ(*store.Versions("tiny"), (std::vector<int64_t>{1}));
  EXPECT_FALSE(fs::exists(root_ / "other" / "5.partial"));
  EXPECT_TRUE(store.Discard("tiny", 9).ok());  // absent: fine
}

TEST_F(ArtifactStoreTest, RefusesNamesThatLeaveTheRoot) {
  ArtifactStore store(root_.string());
  const std::string nul("x\0y", 3);
  for (const std::string& bad :
       std::vector<std::string>{"..", "../x", "a/b", "", ".hidden", std::string(200, 'a'), "a b", nul}) {
    EXPECT_EQ(store.PreparePartial(bad, 1).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(store.PreparePartial("ok", 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(fs::is_empty(root_));
}

}  // namespace
}  // namespace lcd::server::jobs
