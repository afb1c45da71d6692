// The manifest's "activations" field (docs/ARTIFACT.md, W·A8): round trip,
// absent = fp, strict validation; and the per-token int8 quantize-dequantize
// it names (lcd/kernels/act_quant.h) on hand-checked rows.
#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd/kernels/act_quant.h"
#include "lcd/runtime/artifact.h"
#include "nlohmann/json.hpp"

namespace lcd::runtime {
namespace {

using ::testing::HasSubstr;

ArtifactManifest Minimal() {
  ArtifactManifest m;
  m.model_config_json = "{}";
  m.method.name = "lcd";
  m.method.bits = 2;
  m.method.group_size = 64;
  ArtifactTensor t;
  t.name = "model.norm.weight";
  t.shape = {4};
  m.tensors.push_back(t);
  m.files.push_back({"model.safetensors", 16, std::string(64, 'a')});
  m.provenance.source_model = "src";
  m.provenance.tool = "lcd test";
  return m;
}

TEST(ManifestActivations, AbsentMeansFullPrecision) {
  absl::StatusOr<ArtifactManifest> m = ParseArtifactManifest(SerializeArtifactManifest(Minimal()));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->activation_bits, 0);
  EXPECT_EQ(nlohmann::json::parse(SerializeArtifactManifest(Minimal())).count("activations"), 0u);
}

TEST(ManifestActivations, RoundTrip) {
  ArtifactManifest in = Minimal();
  in.activation_bits = 8;
  const std::string text = SerializeArtifactManifest(in);
  EXPECT_EQ(nlohmann::json::parse(text)["activations"],
            nlohmann::json({{"bits", 8}, {"granularity", "per_token"}, {"scheme", "symmetric_absmax"}}));
  absl::StatusOr<ArtifactManifest> m = ParseArtifactManifest(text);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->activation_bits, 8);
}

TEST(ManifestActivations, BadValuesRefusedByName) {
  const struct {
    nlohmann::json value;
    const char* message;
  } cases[] = {
      {{{"bits", 4}, {"granularity", "per_token"}, {"scheme", "symmetric_absmax"}}, "activations.bits: only 8"},
      {{{"bits", "8"}, {"granularity", "per_token"}, {"scheme", "symmetric_absmax"}}, "activations.bits: expected an integer"},
      {{{"bits", 8}, {"granularity", "per_tensor"}, {"scheme", "symmetric_absmax"}}, "activations.granularity"},
      {{{"bits", 8}, {"granularity", "per_token"}, {"scheme", "asym"}}, "activations.scheme"},
      {{{"bits", 8}, {"granularity", "per_token"}}, "activations.scheme: missing"},
      {{{"bits", 8}, {"granularity", "per_token"}, {"scheme", "symmetric_absmax"}, {"clip", 1}},
       "activations.clip: unknown key"},
      {nlohmann::json::array({8}), "activations: expected an object"},
  };
  for (const auto& c : cases) {
    nlohmann::json j = nlohmann::json::parse(SerializeArtifactManifest(Minimal()));
    j["activations"] = c.value;
    absl::StatusOr<ArtifactManifest> m = ParseArtifactManifest(j.dump());
    ASSERT_FALSE(m.ok()) << c.value.dump();
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(m.status().message(), HasSubstr(c.message)) << c.value.dump();
  }
}

TEST(FakeQuantizeInt8PerToken, HandCheckedRows) {
  // Row 0: max 127 -> s = 1, round half to even (2.5 -> 2, -3.5 -> -4). Row 1: zero. Row 2: s = 2/127.
  std::vector<float> x = {127.0f, 2.5f, -3.5f, 0.4f, 0.0f, 0.0f, 0.0f, 0.0f, -2.0f, 1.0f, 0.0f, 0.5f};
  std::vector<float> y(x.size());
  kernels::FakeQuantizeInt8PerToken(x.data(), 3, 4, y.data());
  EXPECT_EQ(y[0], 127.0f);
  EXPECT_EQ(y[1], 2.0f);
  EXPECT_EQ(y[2], -4.0f);
  EXPECT_EQ(y[3], 0.0f);
  for (int j = 4; j < 8; ++j) EXPECT_EQ(y[j], 0.0f);
  const float s = 2.0f / 127.0f;
  EXPECT_EQ(y[8], -127.0f * s);
  EXPECT_EQ(y[9], std::nearbyint(1.0f / s) * s);  // 63.5 -> 64 (even)
  EXPECT_EQ(y[11], std::nearbyint(0.5f / s) * s);
  // In place gives the same.
  kernels::FakeQuantizeInt8PerToken(x.data(), 3, 4, x.data());
  EXPECT_EQ(x, y);
}

}  // namespace
}  // namespace lcd::runtime
