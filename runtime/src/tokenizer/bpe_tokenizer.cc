#include "src/tokenizer/bpe_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "src/tokenizer/unicode_util.h"

namespace lcd::runtime {
namespace {

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

bool IsWordByte(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x80 || std::isalnum(u) || c == '_';
}

// "<0xNN>" -> NN, else -1.
int ParseByteToken(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int v = 0;
  for (char c : t.substr(3, 2)) {
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else return -1;
  }
  return v;
}

}  // namespace

BpeTokenizer::BpeTokenizer(BpeTokenizerSpec spec) : spec_(std::move(spec)) {
  vocab_size_ = spec_.model->id_limit();
  for (size_t i = 0; i < spec_.added_tokens.size(); ++i) {
    const AddedToken& t = spec_.added_tokens[i];
    added_by_id_[t.id] = i;
    added_by_content_[t.content] = t.id;
    vocab_size_ = std::max(vocab_size_, t.id + 1);
  }
  BuildTrie(false, &raw_trie_);
  BuildTrie(true, &normalized_trie_);
  set_bos_id(spec_.bos_id);
  set_eos_id(spec_.eos_id);
}

void BpeTokenizer::BuildTrie(bool normalized, std::vector<TrieNode>* trie) {
  trie->assign(1, TrieNode());
  for (size_t i = 0; i < spec_.added_tokens.size(); ++i) {
    const AddedToken& t = spec_.added_tokens[i];
    if (t.normalized != normalized || t.content.empty()) continue;
    // Like the reference, a normalized token is looked for in its
    // normalized form: Llama-2's "<s>" is matched as "▁<s>".
    const std::string key = normalized ? Normalize(t.content) : t.content;
    int32_t node = 0;
    for (unsigned char c : key) {
      auto it = (*trie)[node].children.find(c);
      if (it == (*trie)[node].children.end()) {
        (*trie)[node].children[c] = static_cast<int32_t>(trie->size());
        node = static_cast<int32_t>(trie->size());
        trie->emplace_back();
      } else {
        node = it->second;
      }
    }
    (*trie)[node].token = static_cast<int32_t>(i);
  }
}

void BpeTokenizer::SplitAdded(const std::vector<TrieNode>& trie, std::string_view text,
                              bool parse_special, std::vector<Segment>* out) const {
  size_t emitted = 0;  // Text before this offset is already in *out.
  size_t pos = 0;
  while (pos < text.size()) {
    // Longest eligible token starting at pos (leftmost-longest overall).
    int32_t best = -1;
    size_t best_end = 0;
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      auto it = trie[node].children.find(static_cast<unsigned char>(text[i]));
      if (it == trie[node].children.end()) break;
      node = it->second;
      const int32_t tok = trie[node].token;
      if (tok < 0) continue;
      const AddedToken& t = spec_.added_tokens[tok];
      if (t.special && !parse_special) continue;
      if (t.single_word && ((pos > 0 && IsWordByte(text[pos - 1])) ||
                            (i + 1 < text.size() && IsWordByte(text[i + 1])))) {
        continue;
      }
      best = tok;
      best_end = i + 1;
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& t = spec_.added_tokens[best];
    size_t begin = pos, end = best_end;
    if (t.lstrip) {
      while (begin > emitted && IsAsciiSpace(text[begin - 1])) --begin;
    }
    if (t.rstrip) {
      while (end < text.size() && IsAsciiSpace(text[end])) ++end;
    }
    if (begin > emitted) out->push_back({std::string(text.substr(emitted, begin - emitted)), -1});
    out->push_back({std::string(), t.id});
    emitted = pos = end;
  }
  if (emitted < text.size()) out->push_back({std::string(text.substr(emitted)), -1});
}

std::string BpeTokenizer::Normalize(std::string_view text) const {
  std::string s(text);
  for (const NormalizerStep& step : spec_.normalizer) {
    switch (step.kind) {
      case NormalizerStep::Kind::kPrepend:
        if (!s.empty()) s.insert(0, step.content);
        break;
      case NormalizerStep::Kind::kReplace:
        s = absl::StrReplaceAll(s, {{step.pattern, step.content}});
        break;
      case NormalizerStep::Kind::kNfcPassThrough:
        // Not implemented (no Unicode composition tables here): text that
        // is already NFC, which is nearly all real text, is unaffected;
        // decomposed input may tokenize differently from the reference.
        break;
    }
  }
  return s;
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view text, bool add_bos,
                                                          bool parse_special) const {
  size_t bad = 0;
  if (!unicode::IsValidUtf8(text, &bad)) {
    return absl::InvalidArgumentError(absl::StrCat("input is not valid UTF-8 (byte offset ", bad, ")"));
  }
  std::vector<int32_t> ids;
  if (add_bos && bos_id().has_value()) ids.push_back(*bos_id());
  std::vector<Segment> raw_segments, segments;
  SplitAdded(raw_trie_, text, parse_special, &raw_segments);
  for (Segment& seg : raw_segments) {
    if (seg.added_id >= 0) {
      segments.push_back(std::move(seg));
    } else {
      SplitAdded(normalized_trie_, Normalize(seg.text), parse_special, &segments);
    }
  }
  std::vector<std::string> words;
  for (size_t i = 0; i < segments.size(); ++i) {
    const Segment& seg = segments[i];
    if (seg.added_id >= 0) {
      ids.push_back(seg.added_id);
      continue;
    }
    words.clear();
    PreTokenize(spec_.pre_tokenizer, seg.text, /*at_text_start=*/i == 0, &words);
    for (const std::string& w : words) spec_.model->EncodeWord(w, &ids);
  }
  return ids;
}

std::string BpeTokenizer::TokenText(int32_t id) const {
  auto it = added_by_id_.find(id);
  if (it != added_by_id_.end()) return spec_.added_tokens[it->second].content;
  const std::string* t = spec_.model->IdToToken(id);
  return t == nullptr ? std::string() : *t;
}

bool BpeTokenizer::IsSpecial(int32_t id) const {
  auto it = added_by_id_.find(id);
  return it != added_by_id_.end() && spec_.added_tokens[it->second].special;
}

std::optional<int32_t> BpeTokenizer::TokenToId(std::string_view token) const {
  // Debian's Abseil has its own string_view type; convert explicitly.
  auto it = added_by_content_.find(absl::string_view(token.data(), token.size()));
  if (it != added_by_content_.end()) return it->second;
  return spec_.model->TokenToId(token);
}

std::string BpeTokenizer::TokenBytes(int32_t id, bool skip_special) const {
  return TokenBytesAt(id, skip_special, /*first=*/false);
}

std::string BpeTokenizer::TokenBytesAt(int32_t id, bool skip_special, bool first) const {
  if (skip_special && IsSpecial(id)) return "";
  std::string text = TokenText(id);
  const DecoderSpec& d = spec_.decoder;
  if (d.byte_level) {
    std::string bytes;
    // Like the reference, a token with any char outside the byte map (e.g.
    // an added token written in plain text) is taken verbatim.
    if (unicode::ByteLevelMap::Get().Decode(text, &bytes)) text = std::move(bytes);
  }
  for (const auto& [from, to] : d.replaces) text = absl::StrReplaceAll(text, {{from, to}});
  if (!d.metaspace.empty()) {
    text = absl::StrReplaceAll(text, {{d.metaspace, first && d.metaspace_drop_in_first ? "" : " "}});
  }
  if (d.byte_fallback) {
    const int b = ParseByteToken(text);
    if (b >= 0) text = std::string(1, static_cast<char>(b));
  }
  if (!d.strip_whole_text) {
    int n = 0;
    while (n < d.strip_start && n < static_cast<int>(text.size()) && text[n] == d.strip_char) ++n;
    text.erase(0, n);
  }
  return text;
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  bool first = true;  // The reference decoder sees only known, unskipped ids.
  for (int32_t id : ids) {
    if ((skip_special && IsSpecial(id)) || (!added_by_id_.contains(id) && spec_.model->IdToToken(id) == nullptr)) {
      continue;
    }
    bytes += TokenBytesAt(id, skip_special, first);
    first = false;
  }
  const DecoderSpec& d = spec_.decoder;
  if (d.strip_whole_text) {
    int n = 0;
    while (n < d.strip_start && n < static_cast<int>(bytes.size()) && bytes[n] == d.strip_char) ++n;
    bytes.erase(0, n);
  }
  // The reference repairs invalid UTF-8 the same way for byte-level BPE;
  // for byte-fallback runs it emits one U+FFFD per byte token instead, a
  // difference only for id sequences that encode no valid text.
  return unicode::Utf8Lossy(bytes);
}

}  // namespace lcd::runtime
