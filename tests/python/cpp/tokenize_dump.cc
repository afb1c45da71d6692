// Driver for tests/python/test_tokenizer_parity.py: encodes every input line
// with an lcd tokenizer and writes one JSON object per line:
//   {"ids": [...], "decoded": "...", "incremental": "...", "chunks_valid": true}
// or {"error": "..."} when encoding fails. Input lines are JSON strings (so
// they may hold newlines and tabs). Total encode time goes to stderr.
//
//   tokenize_dump --tokenizer=<tokenizer.json|tokenizer.model|model dir>
//                 --input=lines.jsonl [--add_bos] [--no_parse_special]
//                 [--skip_special]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "cxxopts.hpp"
#include "lcd/runtime/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

bool ValidUtf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();  // dump() throws on invalid UTF-8.
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("tokenize_dump", "Encode lines with an lcd tokenizer, print JSON lines");
  options.add_options()("tokenizer", "tokenizer file or model directory", cxxopts::value<std::string>())(
      "input", "JSON-lines file of strings", cxxopts::value<std::string>())(
      "add_bos", "prepend BOS", cxxopts::value<bool>()->default_value("false"))(
      "no_parse_special", "treat special tokens in text as text", cxxopts::value<bool>()->default_value("false"))(
      "skip_special", "drop special tokens when decoding", cxxopts::value<bool>()->default_value("false"));
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }
  if (!args.count("tokenizer") || !args.count("input")) {
    std::cerr << options.help() << "\n";
    return 2;
  }
  const std::string path = args["tokenizer"].as<std::string>();
  absl::StatusOr<std::unique_ptr<lcd::runtime::Tokenizer>> tok =
      EndsWith(path, ".json")    ? lcd::runtime::LoadBpeTokenizerJson(path)
      : EndsWith(path, ".model") ? lcd::runtime::LoadSentencePieceTokenizer(path)
                                 : lcd::runtime::LoadTokenizer(path);
  if (!tok.ok()) {
    std::cerr << "load failed: " << tok.status() << "\n";
    return 1;
  }
  const bool add_bos = args["add_bos"].as<bool>();
  const bool parse_special = !args["no_parse_special"].as<bool>();
  const bool skip_special = args["skip_special"].as<bool>();

  std::ifstream in(args["input"].as<std::string>());
  if (!in) {
    std::cerr << "cannot open input\n";
    return 1;
  }
  std::string line;
  double encode_seconds = 0;
  size_t lines = 0;
  while (std::getline(in, line)) {
    std::string text;
    try {
      text = nlohmann::json::parse(line).get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      std::cerr << "bad input line: " << e.what() << "\n";
      return 1;
    }
    nlohmann::json out;
    const auto t0 = std::chrono::steady_clock::now();
    auto ids = (*tok)->Encode(text, add_bos, parse_special);
    encode_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++lines;
    if (!ids.ok()) {
      out["error"] = std::string(ids.status().message());
    } else {
      out["ids"] = *ids;
      out["decoded"] = (*tok)->Decode(*ids, skip_special);
      lcd::runtime::IncrementalDetokenizer detok(tok->get(), skip_special);
      std::string incremental;
      bool chunks_valid = true;
      for (int32_t id : *ids) {
        const std::string chunk = detok.Push(id);
        chunks_valid = chunks_valid && ValidUtf8(chunk);
        incremental += chunk;
      }
      incremental += detok.Flush();
      out["incremental"] = incremental;
      out["chunks_valid"] = chunks_valid;
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  std::fprintf(stderr, "encoded %zu lines in %.3f s\n", lines, encode_seconds);
  return 0;
}
