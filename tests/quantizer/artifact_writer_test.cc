// ArtifactWriter -> Artifact::Open -> Model::Load round trip on the committed
// tiny model, the manifest parser's refusals, and a tied checkpoint stored
// only as lm_head.weight.
#include "lcd/quantizer/artifact_writer.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <unistd.h>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/dtype.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "lcd/runtime/artifact.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/kv_cache.h"
#include "lcd/runtime/model.h"
#include "quantizer_test_util.h"
#include "lcd_test_dir.h"

namespace lcd::quantizer {
namespace {
namespace fs = std::filesystem;
using runtime::ArtifactManifest;


// A path that does not exist yet, in a directory removed when the test exits.
fs::path TempDir(const std::string& name) {
  fs::path p = lcd::testing::TestDir("artifact_writer") / name;
  fs::remove_all(p);
  return p;
}

// Logits of the last prompt token.
std::vector<float> LastLogits(runtime::Model& model, const std::vector<int32_t>& prompt) {
  auto cache = runtime::KvCache::Create(model.config().num_layers, model.KvLayoutFor(16, kernels::DType::kF32), 8);
  EXPECT_TRUE(cache.ok());
  std::vector<int32_t> blocks = {0, 1, 2, 3};
  runtime::SeqBatchEntry e;
  e.tokens = prompt;
  e.block_table = &blocks;
  auto out = model.Forward({e}, *cache);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->logits : std::vector<float>();
}

// Writes the tiny model with every decoder linear layer RTN-quantized.
absl::StatusOr<ArtifactManifest> WriteRtnArtifact(const fs::path& out, int bits, int64_t group) {
  LCD_ASSIGN_OR_RETURN(auto writer, ArtifactWriter::Create(out.string(), test_util::TinyModelDir()));
  LCD_ASSIGN_OR_RETURN(auto ckpt, runtime::Checkpoint::Open(test_util::TinyModelDir()));
  for (const std::string& name : ckpt->TensorNames()) {
    LCD_ASSIGN_OR_RETURN(runtime::TensorView t, ckpt->Get(name));
    const bool linear = name.find("_proj.weight") != std::string::npos;
    if (!linear) {
      const size_t bytes = static_cast<size_t>(t.num_elements()) * runtime::StDTypeSize(t.dtype);
      LCD_RETURN_IF_ERROR(writer->AddDense(name, t.dtype, t.shape,
                                           std::string_view(static_cast<const char*>(t.data), bytes)));
      continue;
    }
    const std::vector<float> w = test_util::TensorF32(t);
    LCD_ASSIGN_OR_RETURN(QuantizedMatrix q, QuantizeRtn(w.data(), t.shape[0], t.shape[1], bits, group));
    LCD_RETURN_IF_ERROR(writer->AddQuantized(name, std::move(q)));
  }
  ArtifactManifest m;
  m.method.name = "rtn";
  m.method.bits = bits;
  m.method.group_size = group;
  m.provenance.source_model = test_util::TinyModelDir();
  m.provenance.tool = "artifact_writer_test";
  m.quality["bits_per_weight"] = writer->QuantizedBitsPerWeight();
  return writer->Finish(m);
}

TEST(ArtifactWriterTest, RoundTripLoadsAndServesCloseToTheSource) {
  const fs::path out = TempDir("rtn4");
  auto manifest = WriteRtnArtifact(out, 4, 64);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  // 4-bit codes + 2 fp16 params per 64 weights.
  EXPECT_NEAR(manifest->quality.at("bits_per_weight"), 4.0 + 32.0 / 64.0, 1e-9);
  EXPECT_TRUE(runtime::IsArtifactDir(out.string()));

  // Verification stops once the load is cancelled (lcd-server's shutdown).
  auto cancelled = runtime::Artifact::Open(out.string(), [] { return true; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled) << cancelled.status();
  auto artifact = runtime::Artifact::Open(out.string());
  ASSERT_TRUE(artifact.ok()) << artifact.status();
  EXPECT_EQ(artifact->get()->manifest().method.name, "rtn");
  const runtime::ArtifactTensor* q = artifact->get()->Find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->format, "affine");
  EXPECT_EQ(q->bits, 4);

  auto source = runtime::Model::Load(test_util::TinyModelDir());
  auto quantized = runtime::Model::Load(out.string());
  ASSERT_TRUE(source.ok() && quantized.ok()) << quantized.status();
  EXPECT_LT((*quantized)->WeightBytes(), (*source)->WeightBytes());
  const std::vector<int32_t> prompt = {5, 77, 301, 12, 900, 45, 6};
  std::vector<float> a = LastLogits(**source, prompt), b = LastLogits(**quantized, prompt);
  ASSERT_EQ(a.size(), b.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += a[i] * a[i];
  }
  // 4-bit RTN keeps the logits close (measured ~3%), but not identical.
  EXPECT_LT(std::sqrt(diff / norm), 0.15);
  EXPECT_GT(std::sqrt(diff / norm), 1e-4);
}

TEST(ArtifactWriterTest, RefusesANonEmptyOutputDirectory) {
  const fs::path out = TempDir("nonempty");
  fs::create_directories(out);
  std::ofstream(out / "x") << "x";
  auto w = ArtifactWriter::Create(out.string(), test_util::TinyModelDir());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ArtifactWriterTest, RefusesMalformedCanonicalArrays) {
  auto w = ArtifactWriter::Create(TempDir("malformed").string(), test_util::TinyModelDir());
  ASSERT_TRUE(w.ok());
  QuantizedMatrix q;
  q.layout = {kernels::QuantFormat::kCodebook, 3, 2, 5, 4};  // 15 bits per row: 2 bytes, 1 padding bit.
  q.codes = {0, 0, 0, 0};
  q.params.assign(static_cast<size_t>(q.layout.ParamCount()), 0x3c00);
  EXPECT_TRUE((*w)->AddQuantized("ok", q).ok());
  q.codes[1] = 0x80;  // The padding bit.
  EXPECT_EQ((*w)->AddQuantized("padding", q).code(), absl::StatusCode::kInvalidArgument);
  q.codes.pop_back();
  EXPECT_EQ((*w)->AddQuantized("short", q).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ArtifactManifestTest, ParserRefusesWithTheField) {
  const fs::path out = TempDir("manifest");
  auto manifest = WriteRtnArtifact(out, 2, 64);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  const std::string good = runtime::SerializeArtifactManifest(*manifest);
  ASSERT_TRUE(runtime::ParseArtifactManifest(good).ok());
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  struct Case {
    std::string text, expect;
  } cases[] = {
      {replace("\"format_version\": 1", "\"format_version\": 2"), "newer"},
      {replace("\"lcd-artifact\"", "\"other\""), "format"},
      {replace("\"format\": \"affine\"", "\"format\": \"trellis\""), "unknown format"},
      {replace("\"format\": \"affine\"", "\"format\": \"lattice\""), "lattice_dim"},
      {replace("\"path\": \"model.safetensors\"", "\"path\": \"../model.safetensors\""), "plain file name"},
      {replace("\"bits\": 2,\n      \"format\"", "\"bits\": 9,\n      \"format\""), "bits"},
      {"[1, 2]", "expected an object"},
      {"{\"format\": ", "manifest.json"},
  };
  for (const Case& c : cases) {
    auto r = runtime::ParseArtifactManifest(c.text);
    ASSERT_FALSE(r.ok()) << c.expect;
    EXPECT_NE(std::string(r.status().message()).find(c.expect), std::string::npos) << r.status();
  }
}

// A tied copy of the tiny model whose shared matrix is stored under `name`.
fs::path WriteTied(const std::string& dir_name, const std::string& name) {
  const fs::path dir = TempDir(dir_name);
  fs::create_directories(dir);
  auto ckpt = runtime::Checkpoint::Open(test_util::TinyModelDir());
  EXPECT_TRUE(ckpt.ok());
  std::vector<runtime::TensorToWrite> tensors;
  for (const std::string& n : (*ckpt)->TensorNames()) {
    if (n == "lm_head.weight") continue;
    runtime::TensorView t = *(*ckpt)->Get(n);
    const size_t bytes = static_cast<size_t>(t.num_elements()) * runtime::StDTypeSize(t.dtype);
    tensors.push_back({n == "model.embed_tokens.weight" ? name : n, t.dtype, t.shape,
                       std::string_view(static_cast<const char*>(t.data), bytes)});
  }
  EXPECT_TRUE(runtime::WriteSafetensors((dir / "model.safetensors").string(), tensors).ok());
  std::ifstream in(fs::path(test_util::TinyModelDir()) / "config.json");
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = config.find("\"tie_word_embeddings\": false");
  EXPECT_NE(at, std::string::npos);
  config.replace(at, 28, "\"tie_word_embeddings\": true");
  std::ofstream(dir / "config.json") << config;
  return dir;
}

TEST(TiedCheckpointTest, LoadsWhenTheSharedMatrixIsStoredOnlyAsLmHead) {
  // transformers accepts a tied model whose checkpoint names the shared
  // matrix lm_head.weight; so must we, with the same logits.
  auto as_embed = runtime::Model::Load(WriteTied("tied_embed", "model.embed_tokens.weight").string());
  auto as_head = runtime::Model::Load(WriteTied("tied_head", "lm_head.weight").string());
  ASSERT_TRUE(as_embed.ok()) << as_embed.status();
  ASSERT_TRUE(as_head.ok()) << as_head.status();
  ASSERT_TRUE((*as_head)->config().tie_word_embeddings);
  const std::vector<int32_t> prompt = {9, 8, 7, 600};
  EXPECT_EQ(LastLogits(**as_embed, prompt), LastLogits(**as_head, prompt));
}

}  // namespace
}  // namespace lcd::quantizer
