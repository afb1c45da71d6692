// LoadTokenizer (file selection + tokenizer_config.json) and the streaming
// detokenizer shared by all tokenizers.
#include "lcd/runtime/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "src/tokenizer/tokenizer_base.h"
#include "src/tokenizer/unicode_util.h"

namespace lcd::runtime {
namespace {

using Json = nlohmann::json;

// bos_token / eos_token are either a string or an AddedToken object.
std::optional<std::string> TokenContent(const Json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const Json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) {
    return v.at("content").get<std::string>();
  }
  return std::nullopt;
}

absl::Status ApplyTokenizerConfig(const std::string& path, TokenizerBase* tokenizer) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    const Json config = Json::parse(buffer.str());
    if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
    auto id_of = [&](const char* key) -> absl::StatusOr<std::optional<int32_t>> {
      auto content = TokenContent(config, key);
      if (!content.has_value()) return std::optional<int32_t>();
      auto id = tokenizer->TokenToId(*content);
      if (!id.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", key, " '", *content, "' is not a token"));
      }
      return id;
    };
    LCD_ASSIGN_OR_RETURN(auto bos, id_of("bos_token"));
    LCD_ASSIGN_OR_RETURN(auto eos, id_of("eos_token"));
    if (config.contains("add_bos_token") && config.at("add_bos_token").is_boolean()) {
      if (!config.at("add_bos_token").get<bool>()) {
        tokenizer->set_bos_id(std::nullopt);
      } else if (bos.has_value()) {
        tokenizer->set_bos_id(bos);
      }
    }
    if (eos.has_value()) tokenizer->set_eos_id(eos);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return absl::OkStatus();
}

size_t LeadingSpaces(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && s[n] == ' ') ++n;
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  std::error_code ec;
  std::unique_ptr<Tokenizer> tokenizer;
  if (fs::exists(dir / "tokenizer.json", ec)) {
    LCD_ASSIGN_OR_RETURN(tokenizer, LoadBpeTokenizerJson((dir / "tokenizer.json").string()));
  } else if (fs::exists(dir / "tokenizer.model", ec)) {
    LCD_ASSIGN_OR_RETURN(tokenizer, LoadSentencePieceTokenizer((dir / "tokenizer.model").string()));
  } else {
    return absl::NotFoundError(
        absl::StrCat("no tokenizer.json or tokenizer.model in ", model_dir));
  }
  if (fs::exists(dir / "tokenizer_config.json", ec)) {
    // Both loaders above build TokenizerBase subclasses.
    LCD_RETURN_IF_ERROR(ApplyTokenizerConfig((dir / "tokenizer_config.json").string(),
                                             static_cast<TokenizerBase*>(tokenizer.get())));
  }
  return tokenizer;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::Push(int32_t id) {
  if (tokenizer_ == nullptr) return "";
  std::string bytes = tokenizer_->TokenBytes(id, skip_special_);
  if (bytes.empty()) return "";
  if (!started_) {
    started_ = true;
    // Decode may drop leading spaces of the first visible token (Llama's
    // "▁Hello" at the start decodes to "Hello"). Decoding this token alone
    // shows how many; spaces are ASCII, so UTF-8 repair cannot shift them.
    // (A Metaspace decoder also drops "▁" inside the first token; vocabs
    // made by SentencePiece have none there, so that case is not handled.)
    const std::string alone = tokenizer_->Decode({id}, skip_special_);
    const size_t raw = LeadingSpaces(bytes), kept = LeadingSpaces(alone);
    if (kept < raw) bytes.erase(0, raw - kept);
  }
  pending_ += bytes;
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    size_t len;
    const auto scan = unicode::ScanUtf8(std::string_view(pending_).substr(i), &len);
    if (scan == unicode::Utf8Scan::kIncomplete) break;  // Wait for more bytes.
    if (scan == unicode::Utf8Scan::kComplete) {
      out.append(pending_, i, len);
    } else {
      out.append(unicode::kReplacementChar);
    }
    i += len;
  }
  pending_.erase(0, i);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out = unicode::Utf8Lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace lcd::runtime
