// A REAL small model for tests, written in code (no ../shared data needed):
// a random Llama (hidden 64, 2 layers, 4 heads / 2 KV heads, vocab 256)
// written with WriteSafetensors, and a byte-level BPE tokenizer.json with the
// 256 byte tokens (id = byte value) and no merges. Used by the engine and the
// daemon tests.
#ifndef LCD_TESTS_LCD_TEST_MODEL_H_
#define LCD_TESTS_LCD_TEST_MODEL_H_

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "lcd/runtime/safetensors.h"

namespace lcd::test_model {

namespace fs = std::filesystem;
using runtime::StDType;
using runtime::TensorToWrite;
using runtime::WriteSafetensors;

constexpr int kVocab = 256, kHidden = 64, kInter = 128, kLayers = 2, kHeads = 4, kKvHeads = 2;
constexpr int kHeadDim = kHidden / kHeads;
constexpr int kMaxPos = 4096;
constexpr int kEos = 0;

// GPT-2's bytes_to_unicode: the printable byte -> itself, the rest -> 256+n.
inline std::string ByteLevelChar(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    }
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

inline std::string JsonEscape(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o;
}

// Writes config.json, model.safetensors and tokenizer.json into `dir`
// (which must exist). Deterministic (fixed seed). extra_config: more
// config.json members, e.g. ", \"sliding_window\": 40".
inline void WriteTinyModel(const fs::path& dir, const std::string& model_type = "llama",
                           const std::string& extra_config = "") {
  std::ofstream(dir / "config.json")
      << "{\"model_type\": \"" << model_type << "\", \"vocab_size\": " << kVocab
      << ", \"hidden_size\": " << kHidden
      << ", \"intermediate_size\": " << kInter << ", \"num_hidden_layers\": " << kLayers
      << ", \"num_attention_heads\": " << kHeads << ", \"num_key_value_heads\": " << kKvHeads
      << ", \"max_position_embeddings\": " << kMaxPos
      << ", \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"tie_word_embeddings\": false"
      << ", \"eos_token_id\": " << kEos << extra_config << "}";
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"model.embed_tokens.weight", {kVocab, kHidden}},
      {"model.norm.weight", {kHidden}},
      {"lm_head.weight", {kVocab, kHidden}}};
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    shapes.push_back({p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}});
    shapes.push_back({p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}});
    shapes.push_back({p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}});
    shapes.push_back({p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}});
    shapes.push_back({p + "mlp.gate_proj.weight", {kInter, kHidden}});
    shapes.push_back({p + "mlp.up_proj.weight", {kInter, kHidden}});
    shapes.push_back({p + "mlp.down_proj.weight", {kHidden, kInter}});
    shapes.push_back({p + "input_layernorm.weight", {kHidden}});
    shapes.push_back({p + "post_attention_layernorm.weight", {kHidden}});
  }
  std::mt19937 rng(2024);
  std::vector<std::string> storage;
  storage.reserve(shapes.size());
  std::vector<TensorToWrite> tensors;
  for (auto& [name, shape] : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const bool is_norm = name.find("norm") != std::string::npos;
    // Weights scaled by 1/sqrt(fan_in) keep activations O(1); the embedding
    // and head are larger so the logits have clear margins (greedy argmax
    // must not hinge on float rounding between batched and solo runs).
    const float fan_in = shape.size() == 2 ? float(shape[1]) : 1.0f;
    const float scale = name.find("embed") != std::string::npos ? 1.0f
                        : name == "lm_head.weight"              ? 2.0f / std::sqrt(fan_in)
                                                                : 1.0f / std::sqrt(fan_in);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::string bytes;
    for (int64_t i = 0; i < n; ++i) {
      const float f = is_norm ? 1.0f + 0.1f * normal(rng) : scale * normal(rng);
      bytes.append(reinterpret_cast<const char*>(&f), 4);
    }
    storage.push_back(std::move(bytes));
    tensors.push_back({name, StDType::kF32, shape, storage.back()});
  }
  ASSERT_TRUE(WriteSafetensors((dir / "model.safetensors").string(), tensors).ok());

  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    if (b) vocab += ", ";
    vocab += "\"" + JsonEscape(ByteLevelChar(b)) + "\": " + std::to_string(b);
  }
  std::ofstream(dir / "tokenizer.json")
      << "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": null,"
      << " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true,"
      << " \"use_regex\": true}, \"post_processor\": null,"
      << " \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true,"
      << " \"use_regex\": true},"
      << " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"fuse_unk\": false,"
      << " \"byte_fallback\": false, \"vocab\": {" << vocab << "}, \"merges\": []}}";
}

}  // namespace lcd::test_model

#endif  // LCD_TESTS_LCD_TEST_MODEL_H_
