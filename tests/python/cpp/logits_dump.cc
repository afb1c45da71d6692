// Driver for tests/python/test_hf_parity.py: loads a model directory with
// Model::Load, runs the prompts given as JSON token ids three ways, and dumps
// all-position logits plus greedy continuations as JSON:
//   "full":    each prompt alone, the whole prompt in one Forward call;
//   "chunked": each prompt alone, fed in two chunks (split at the middle);
//   "batched": all prompts as one batch in a single Forward call;
//   "greedy":  Generate() with temperature 0 and EOS ignored, N new tokens.
//
//   logits_dump --model DIR --prompts '[[1,2,3],[4,5]]' --greedy 20 --out out.json
#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cxxopts.hpp"
#include "lcd/runtime/generator.h"
#include "lcd/runtime/kv_cache.h"
#include "lcd/runtime/model.h"
#include "nlohmann/json.hpp"

namespace {

using lcd::runtime::ForwardOutput;
using lcd::runtime::KvCache;
using lcd::runtime::Model;
using lcd::runtime::SeqBatchEntry;
using nlohmann::json;

constexpr int64_t kBlockSize = 8;

int Fail(const std::string& what) {
  std::fprintf(stderr, "logits_dump: %s\n", what.c_str());
  return 1;
}

// Rows [row0, row0 + n) of `out` as a list of lists.
json Rows(const ForwardOutput& out, int64_t row0, int64_t n, int64_t vocab) {
  json rows = json::array();
  for (int64_t r = row0; r < row0 + n; ++r) {
    rows.push_back(std::vector<float>(out.logits.begin() + r * vocab, out.logits.begin() + (r + 1) * vocab));
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("logits_dump", "Dump lcd logits for token-id prompts as JSON");
  options.add_options()("model", "model dir", cxxopts::value<std::string>())(
      "prompts", "JSON list of token-id lists", cxxopts::value<std::string>())(
      "greedy", "greedy new tokens", cxxopts::value<int64_t>()->default_value("20"))(
      "threads", "threads", cxxopts::value<int>()->default_value("2"))(
      "kv-dtype", "KV cache dtype: f32, f16, bf16", cxxopts::value<std::string>()->default_value("f32"))(
      "out", "output JSON path", cxxopts::value<std::string>());
  std::string model_dir, out_path;
  std::vector<std::vector<int32_t>> prompts;
  int64_t greedy_tokens = 0;
  int threads = 0;
  lcd::kernels::DType kv_dtype = lcd::kernels::DType::kF32;
  try {
    auto flags = options.parse(argc, argv);
    model_dir = flags["model"].as<std::string>();
    out_path = flags["out"].as<std::string>();
    prompts = json::parse(flags["prompts"].as<std::string>()).get<std::vector<std::vector<int32_t>>>();
    greedy_tokens = flags["greedy"].as<int64_t>();
    threads = flags["threads"].as<int>();
    if (!lcd::kernels::DTypeFromName(flags["kv-dtype"].as<std::string>(), &kv_dtype)) return Fail("bad --kv-dtype");
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
  if (prompts.empty()) return Fail("no prompts");

  auto model_or = Model::Load(model_dir, {threads});
  if (!model_or.ok()) return Fail(model_or.status().ToString());
  Model& model = **model_or;
  const int64_t vocab = model.config().vocab_size;

  // Each prompt gets its own disjoint, deliberately non-contiguous blocks.
  int64_t max_len = 0;
  for (const auto& p : prompts) max_len = std::max<int64_t>(max_len, static_cast<int64_t>(p.size()));
  const int64_t blocks_per_seq = (max_len + kBlockSize - 1) / kBlockSize;
  const int64_t num_seqs = static_cast<int64_t>(prompts.size());
  auto cache = KvCache::Create(model.config().num_layers, model.KvLayoutFor(kBlockSize, kv_dtype),
                              blocks_per_seq * num_seqs);
  if (!cache.ok()) return Fail(cache.status().ToString());
  std::vector<std::vector<int32_t>> tables(prompts.size());
  for (int64_t s = 0; s < num_seqs; ++s) {
    for (int64_t b = 0; b < blocks_per_seq; ++b) tables[s].push_back(static_cast<int32_t>(b * num_seqs + s));
  }

  json result;
  result["full"] = json::array();
  result["chunked"] = json::array();
  for (size_t s = 0; s < prompts.size(); ++s) {
    const auto& p = prompts[s];
    const int64_t n = static_cast<int64_t>(p.size());
    auto full = model.Forward({SeqBatchEntry{p, 0, &tables[s], true}}, *cache);
    if (!full.ok()) return Fail(full.status().ToString());
    result["full"].push_back(Rows(*full, 0, n, vocab));

    const int64_t split = n / 2;
    json chunked = json::array();
    if (split > 0) {
      auto a = model.Forward({SeqBatchEntry{{p.begin(), p.begin() + split}, 0, &tables[s], true}}, *cache);
      if (!a.ok()) return Fail(a.status().ToString());
      for (auto& row : Rows(*a, 0, split, vocab)) chunked.push_back(std::move(row));
    }
    auto b = model.Forward({SeqBatchEntry{{p.begin() + split, p.end()}, split, &tables[s], true}}, *cache);
    if (!b.ok()) return Fail(b.status().ToString());
    for (auto& row : Rows(*b, 0, n - split, vocab)) chunked.push_back(std::move(row));
    result["chunked"].push_back(std::move(chunked));
  }

  std::vector<SeqBatchEntry> batch;
  for (size_t s = 0; s < prompts.size(); ++s) batch.push_back(SeqBatchEntry{prompts[s], 0, &tables[s], true});
  auto batched = model.Forward(batch, *cache);
  if (!batched.ok()) return Fail(batched.status().ToString());
  result["batched"] = json::array();
  int64_t row = 0;
  for (const auto& p : prompts) {
    result["batched"].push_back(Rows(*batched, row, static_cast<int64_t>(p.size()), vocab));
    row += static_cast<int64_t>(p.size());
  }

  result["greedy"] = json::array();
  if (greedy_tokens > 0) {
    lcd::runtime::SamplingParams params;
    params.temperature = 0.0;
    params.ignore_eos = true;
    params.max_new_tokens = greedy_tokens;
    for (const auto& p : prompts) {
      lcd::runtime::GenerateOptions gen_options;
      gen_options.prefill_chunk = 16;  // Exercise chunked prefill here too.
      gen_options.kv_dtype = kv_dtype;
      auto r = lcd::runtime::Generate(model, nullptr, p, params, [](int32_t, std::string_view) { return true; },
                                      gen_options);
      if (!r.ok()) return Fail(r.status().ToString());
      result["greedy"].push_back(r->output_ids);
    }
  }

  std::ofstream out(out_path);
  out << result.dump();
  if (!out) return Fail("cannot write " + out_path);
  return 0;
}
