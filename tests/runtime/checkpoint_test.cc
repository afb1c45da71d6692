#include "lcd/runtime/checkpoint.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd/runtime/safetensors.h"

namespace lcd::runtime {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "lcd_ckpt_XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    std::mt19937 rng(std::random_device{}());
    std::uniform_real_distribution<float> u(-1, 1);
    for (auto* v : {&a_, &b_, &c_}) {
      for (float& x : *v) x = u(rng);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string_view Bytes(const std::vector<float>& v) {
    return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)};
  }
  void WriteText(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  // Two shards: a and b in shard 1, c in shard 2.
  void WriteShards() {
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model-00001-of-00002.safetensors",
                                 {{"layer.a", StDType::kF32, {2, 3}, Bytes(a_)},
                                  {"layer.b", StDType::kF32, {4}, Bytes(b_)}})
                    .ok());
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model-00002-of-00002.safetensors",
                                 {{"layer.c", StDType::kF32, {5, 1}, Bytes(c_)}})
                    .ok());
  }
  std::string Index(const std::string& c_shard) {
    return R"({"metadata":{"total_size":60},"weight_map":{)"
           R"("layer.a":"model-00001-of-00002.safetensors",)"
           R"("layer.b":"model-00001-of-00002.safetensors",)"
           R"("layer.c":")" +
           c_shard + R"("}})";
  }
  static std::vector<float> Floats(const TensorView& v) {
    std::vector<float> out(v.num_elements());
    std::memcpy(out.data(), v.data, out.size() * sizeof(float));
    return out;
  }

  std::string dir_;
  std::vector<float> a_ = std::vector<float>(6), b_ = std::vector<float>(4),
                     c_ = std::vector<float>(5);
};

TEST_F(CheckpointTest, SingleFile) {
  ASSERT_TRUE(WriteSafetensors(
                  dir_ + "/model.safetensors",
                  {{"w", StDType::kF32, {2, 3}, Bytes(a_)}, {"v", StDType::kF32, {4}, Bytes(b_)}})
                  .ok());
  auto ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_THAT((*ckpt)->TensorNames(), ElementsAre("v", "w"));
  EXPECT_EQ((*ckpt)->TotalBytes(), 40u);
  auto w = (*ckpt)->Get("w");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->name, "w");
  EXPECT_EQ(w->dtype, StDType::kF32);
  EXPECT_THAT(w->shape, ElementsAre(2, 3));
  EXPECT_EQ(Floats(*w), a_);
  EXPECT_TRUE((*ckpt)->Has("v"));
  EXPECT_FALSE((*ckpt)->Has("x"));
  auto missing = (*ckpt)->Get("x");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("\"x\""));
}

TEST_F(CheckpointTest, TwoShards) {
  WriteShards();
  WriteText("model.safetensors.index.json", Index("model-00002-of-00002.safetensors"));
  auto ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_THAT((*ckpt)->TensorNames(), ElementsAre("layer.a", "layer.b", "layer.c"));
  EXPECT_EQ((*ckpt)->TotalBytes(), 60u);
  EXPECT_EQ(Floats(*(*ckpt)->Get("layer.a")), a_);
  EXPECT_EQ(Floats(*(*ckpt)->Get("layer.b")), b_);
  auto c = (*ckpt)->Get("layer.c");
  ASSERT_TRUE(c.ok());
  EXPECT_THAT(c->shape, ElementsAre(5, 1));
  EXPECT_EQ(Floats(*c), c_);
}

TEST_F(CheckpointTest, IndexWinsOverSingleFile) {
  WriteShards();
  WriteText("model.safetensors.index.json", Index("model-00002-of-00002.safetensors"));
  ASSERT_TRUE(
      WriteSafetensors(dir_ + "/model.safetensors", {{"other", StDType::kF32, {4}, Bytes(b_)}})
          .ok());
  auto ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_FALSE((*ckpt)->Has("other"));
  EXPECT_TRUE((*ckpt)->Has("layer.c"));
}

TEST_F(CheckpointTest, EmptyDirectoryIsNotFound) {
  auto r = Checkpoint::Open(dir_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("model.safetensors"));
  EXPECT_EQ(Checkpoint::Open(dir_ + "/nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CheckpointTest, MissingShard) {
  WriteShards();
  WriteText("model.safetensors.index.json", Index("model-00003-of-00002.safetensors"));
  auto r = Checkpoint::Open(dir_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("model-00003-of-00002.safetensors"));
}

TEST_F(CheckpointTest, TensorInIndexButNotInShard) {
  WriteShards();
  // layer.c claimed to live in shard 1, which lacks it.
  WriteText("model.safetensors.index.json", Index("model-00001-of-00002.safetensors"));
  auto r = Checkpoint::Open(dir_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("\"layer.c\""));
}

TEST_F(CheckpointTest, ShardPathsMustStayInsideTheDirectory) {
  WriteShards();
  // A real safetensors file outside the model directory that a traversal would reach.
  fs::create_directory(dir_ + "/model");
  for (const std::string bad : {"../model-00002-of-00002.safetensors", "/etc/passwd", "..", ".",
                                "sub/model-00002-of-00002.safetensors", ""}) {
    SCOPED_TRACE(bad);
    std::ofstream(dir_ + "/model/model.safetensors.index.json") << Index(bad);
    auto r = Checkpoint::Open(dir_ + "/model");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("not a plain file name"));
  }
}

TEST_F(CheckpointTest, MalformedIndex) {
  WriteShards();
  for (const std::string& bad :
       {std::string("not json"), std::string("[]"), std::string(R"({"weight_map":[]})"),
        std::string(R"({"metadata":{}})"), std::string(R"({"weight_map":{}})"),
        std::string(R"({"weight_map":{"layer.a":7}})")}) {
    SCOPED_TRACE(bad);
    WriteText("model.safetensors.index.json", bad);
    EXPECT_EQ(Checkpoint::Open(dir_).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(CheckpointTest, CorruptShardIsReported) {
  WriteShards();
  WriteText("model-00002-of-00002.safetensors", "garbage!garbage!");
  WriteText("model.safetensors.index.json", Index("model-00002-of-00002.safetensors"));
  auto r = Checkpoint::Open(dir_);
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("model-00002-of-00002.safetensors"));
}

}  // namespace
}  // namespace lcd::runtime
