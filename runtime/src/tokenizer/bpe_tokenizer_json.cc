// tokenizer.json -> BpeTokenizerSpec. Every component the reference library
// can put in the file is either understood here or rejected by name with
// Unimplemented, so a tokenizer never silently encodes differently.
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "src/tokenizer/bpe_tokenizer.h"
#include "lcd/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace lcd::runtime {
namespace {

using Json = nlohmann::json;

absl::Status Unsupported(const char* what, const Json& node) {
  return absl::UnimplementedError(
      absl::StrCat("tokenizer.json: unsupported ", what, " '", node.value("type", std::string("?")), "'"));
}

std::string EscapeForRegex(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u)) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// {"Regex": "..."} or {"String": "..."} -> a PCRE2 pattern.
absl::StatusOr<std::string> PatternOf(const Json& pattern) {
  if (pattern.contains("Regex")) return pattern.at("Regex").get<std::string>();
  if (pattern.contains("String")) return EscapeForRegex(pattern.at("String").get<std::string>());
  return absl::InvalidArgumentError("tokenizer.json: pattern has neither Regex nor String");
}

absl::Status ParseNormalizer(const Json& n, std::vector<NormalizerStep>* out) {
  if (n.is_null()) return absl::OkStatus();
  const std::string type = n.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const Json& child : n.at("normalizers")) LCD_RETURN_IF_ERROR(ParseNormalizer(child, out));
  } else if (type == "NFC") {
    out->push_back({NormalizerStep::Kind::kNfcPassThrough, "", ""});
  } else if (type == "Prepend") {
    out->push_back({NormalizerStep::Kind::kPrepend, "", n.at("prepend").get<std::string>()});
  } else if (type == "Replace") {
    const Json& p = n.at("pattern");
    if (!p.contains("String")) return Unsupported("normalizer Replace with a Regex pattern; type", n);
    out->push_back({NormalizerStep::Kind::kReplace, p.at("String").get<std::string>(),
                    n.at("content").get<std::string>()});
  } else {
    return Unsupported("normalizer", n);
  }
  return absl::OkStatus();
}

// Metaspace's prepend_scheme; files from before it existed say
// add_prefix_space instead.
absl::StatusOr<PreTokenizerStep::Prepend> MetaspacePrepend(const Json& node) {
  if (!node.contains("prepend_scheme")) {
    return node.value("add_prefix_space", true) ? PreTokenizerStep::Prepend::kAlways
                                                : PreTokenizerStep::Prepend::kNever;
  }
  const std::string scheme = node.at("prepend_scheme").get<std::string>();
  if (scheme == "always") return PreTokenizerStep::Prepend::kAlways;
  if (scheme == "first") return PreTokenizerStep::Prepend::kFirst;
  if (scheme == "never") return PreTokenizerStep::Prepend::kNever;
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad Metaspace prepend_scheme '", scheme, "'"));
}

absl::Status ParsePreTokenizer(const Json& p, std::vector<PreTokenizerStep>* out) {
  if (p.is_null()) return absl::OkStatus();
  const std::string type = p.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const Json& child : p.at("pretokenizers")) LCD_RETURN_IF_ERROR(ParsePreTokenizer(child, out));
    return absl::OkStatus();
  }
  PreTokenizerStep step;
  if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    step.add_prefix_space = p.value("add_prefix_space", false);
    if (p.value("use_regex", true)) {
      LCD_ASSIGN_OR_RETURN(step.regex, Pcre2Regex::Compile(kGpt2Pattern));
    }
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Kind::kMetaspace;
    step.replacement = p.at("replacement").get<std::string>();
    LCD_ASSIGN_OR_RETURN(step.prepend, MetaspacePrepend(p));
    if (p.value("split", true)) {
      LCD_ASSIGN_OR_RETURN(step.regex, Pcre2Regex::Compile(EscapeForRegex(step.replacement)));
      step.behavior = SplitBehavior::kMergedWithNext;
    }
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    if (p.value("invert", false)) return Unsupported("pre_tokenizer Split with invert=true; type", p);
    LCD_ASSIGN_OR_RETURN(std::string pattern, PatternOf(p.at("pattern")));
    LCD_ASSIGN_OR_RETURN(step.regex, Pcre2Regex::Compile(pattern));
    const std::string behavior = p.at("behavior").get<std::string>();
    if (behavior == "Isolated") step.behavior = SplitBehavior::kIsolated;
    else if (behavior == "Removed") step.behavior = SplitBehavior::kRemoved;
    else if (behavior == "MergedWithPrevious") step.behavior = SplitBehavior::kMergedWithPrevious;
    else if (behavior == "MergedWithNext") step.behavior = SplitBehavior::kMergedWithNext;
    else return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported Split behavior '", behavior, "'"));
  } else {
    return Unsupported("pre_tokenizer", p);
  }
  out->push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status ParseDecoder(const Json& d, DecoderSpec* out, bool* fused) {
  if (d.is_null()) return absl::OkStatus();
  const std::string type = d.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const Json& child : d.at("decoders")) LCD_RETURN_IF_ERROR(ParseDecoder(child, out, fused));
  } else if (type == "ByteLevel") {
    out->byte_level = true;
  } else if (type == "Replace") {
    const Json& p = d.at("pattern");
    if (!p.contains("String")) return Unsupported("decoder Replace with a Regex pattern; type", d);
    out->replaces.emplace_back(p.at("String").get<std::string>(), d.at("content").get<std::string>());
  } else if (type == "Metaspace") {
    out->metaspace = d.at("replacement").get<std::string>();
    LCD_ASSIGN_OR_RETURN(auto prepend, MetaspacePrepend(d));
    out->metaspace_drop_in_first = prepend != PreTokenizerStep::Prepend::kNever;
  } else if (type == "ByteFallback") {
    out->byte_fallback = true;
  } else if (type == "Fuse") {
    *fused = true;
  } else if (type == "Strip") {
    const std::string content = d.at("content").get<std::string>();
    if (content.size() != 1 || d.value("stop", 0) != 0) return Unsupported("decoder Strip (only one-byte content, stop=0); type", d);
    out->strip_char = content[0];
    out->strip_start = d.value("start", 0);
    out->strip_whole_text = *fused;
  } else {
    return Unsupported("decoder", d);
  }
  return absl::OkStatus();
}

// The BOS a post-processor template puts first, if any. Trailing template
// tokens (an EOS after the text) are not represented by the interface.
std::optional<std::string> TemplateBos(const Json& p) {
  if (p.is_null()) return std::nullopt;
  const std::string type = p.value("type", std::string());
  if (type == "Sequence") {
    for (const Json& child : p.at("processors")) {
      if (auto bos = TemplateBos(child)) return bos;
    }
  } else if (type == "TemplateProcessing") {
    const Json& single = p.at("single");
    if (!single.empty() && single.at(0).contains("SpecialToken")) {
      return single.at(0).at("SpecialToken").at("id").get<std::string>();
    }
  }
  return std::nullopt;
}

absl::StatusOr<BpeTokenizerSpec> ParseJsonOrThrow(const Json& root) {
  if (!root.is_object()) return absl::InvalidArgumentError("tokenizer.json: top level is not an object");
  if (!root.contains("model") || !root.at("model").is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: missing \"model\" object");
  }
  const Json& m = root.at("model");
  const std::string type = m.value("type", m.contains("merges") ? std::string("BPE") : std::string());
  if (type != "BPE") {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported model type '", type, "' (only BPE)"));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(key) && !m.at(key).is_null() && !m.at(key).get<std::string>().empty()) {
      return absl::UnimplementedError(absl::StrCat("tokenizer.json: BPE ", key, " is not supported"));
    }
  }
  if (m.contains("dropout") && !m.at("dropout").is_null() && m.at("dropout").get<double>() > 0) {
    return absl::UnimplementedError("tokenizer.json: BPE dropout is not supported");
  }
  std::vector<std::pair<std::string, int32_t>> vocab;
  for (const auto& [token, id] : m.at("vocab").items()) vocab.emplace_back(token, id.get<int32_t>());
  std::vector<std::pair<std::string, std::string>> merges;
  for (const Json& merge : m.at("merges")) {
    if (merge.is_string()) {
      const std::string s = merge.get<std::string>();
      std::vector<std::string> parts = absl::StrSplit(s, ' ');
      if (parts.size() != 2) return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad merge '", s, "'"));
      merges.emplace_back(std::move(parts[0]), std::move(parts[1]));
    } else if (merge.is_array() && merge.size() == 2) {
      merges.emplace_back(merge.at(0).get<std::string>(), merge.at(1).get<std::string>());
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad merge ", merge.dump()));
    }
  }
  BpeModelOptions options;
  if (m.contains("unk_token") && !m.at("unk_token").is_null()) options.unk_token = m.at("unk_token").get<std::string>();
  options.byte_fallback = m.value("byte_fallback", false);
  options.fuse_unk = m.value("fuse_unk", false);
  options.ignore_merges = m.value("ignore_merges", false);

  BpeTokenizerSpec spec;
  LCD_ASSIGN_OR_RETURN(spec.model, BpeModel::Create(std::move(vocab), merges, options));
  if (root.contains("added_tokens")) {
    for (const Json& t : root.at("added_tokens")) {
      AddedToken a;
      a.id = t.at("id").get<int32_t>();
      if (a.id < 0) return absl::InvalidArgumentError("tokenizer.json: negative added token id");
      a.content = t.at("content").get<std::string>();
      a.special = t.value("special", false);
      a.normalized = t.value("normalized", !a.special);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      a.single_word = t.value("single_word", false);
      spec.added_tokens.push_back(std::move(a));
    }
  }
  LCD_RETURN_IF_ERROR(ParseNormalizer(root.value("normalizer", Json()), &spec.normalizer));
  LCD_RETURN_IF_ERROR(ParsePreTokenizer(root.value("pre_tokenizer", Json()), &spec.pre_tokenizer));
  bool fused = false;
  LCD_RETURN_IF_ERROR(ParseDecoder(root.value("decoder", Json()), &spec.decoder, &fused));

  auto id_of = [&](const std::string& content) -> std::optional<int32_t> {
    for (const AddedToken& a : spec.added_tokens) {
      if (a.content == content) return a.id;
    }
    return spec.model->TokenToId(content);
  };
  if (auto bos = TemplateBos(root.value("post_processor", Json()))) {
    spec.bos_id = id_of(*bos);
    if (!spec.bos_id) return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: template token '", *bos, "' unknown"));
  }
  // The file does not say which token ends a sequence; these are the names
  // the common families use. tokenizer_config.json overrides (LoadTokenizer).
  for (const char* name : {"</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>"}) {
    if (auto id = id_of(name)) {
      spec.eos_id = id;
      break;
    }
  }
  return spec;
}

}  // namespace

absl::StatusOr<BpeTokenizerSpec> ParseBpeTokenizerJson(std::string_view json_text) {
  try {
    return ParseJsonOrThrow(Json::parse(json_text));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizerJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto spec = ParseBpeTokenizerJson(buffer.str());
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  }
  return std::unique_ptr<Tokenizer>(new BpeTokenizer(*std::move(spec)));
}

}  // namespace lcd::runtime
