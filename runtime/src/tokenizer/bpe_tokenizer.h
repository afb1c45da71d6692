// Hugging Face tokenizer.json BPE tokenizers (GPT-2, Phi, Llama-2-HF,
// Llama-3, Qwen2 families). The pipeline mirrors the reference library:
//   added tokens matched literally (longest first) -> normalizer ->
//   pre-tokenizer -> BPE model -> optional BOS;
// decoding maps each token back to bytes through the decoder chain.
#ifndef LCD_RUNTIME_SRC_BPE_TOKENIZER_H_
#define LCD_RUNTIME_SRC_BPE_TOKENIZER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "src/tokenizer/bpe_model.h"
#include "src/tokenizer/bpe_pretokenizer.h"
#include "src/tokenizer/tokenizer_base.h"

namespace lcd::runtime {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool normalized = false;  // Matched against normalized rather than raw text.
  bool lstrip = false;      // Absorbs whitespace on its left.
  bool rstrip = false;      // Absorbs whitespace on its right.
  bool single_word = false;
};

// One normalizer step. NFC is accepted as a pass-through (see the .cc).
struct NormalizerStep {
  enum class Kind { kPrepend, kReplace, kNfcPassThrough };
  Kind kind;
  std::string pattern;  // kReplace: literal text to find.
  std::string content;  // kPrepend: prefix; kReplace: replacement.
};

// The decoder chain reduced to what it does to each token's text. With no
// decoder at all, token strings are concatenated (the reference joins them
// with spaces, which no real LLM tokenizer relies on).
struct DecoderSpec {
  bool byte_level = false;  // GPT-2 char map back to bytes.
  std::vector<std::pair<std::string, std::string>> replaces;  // Applied in order.
  // Metaspace decoder: its replacement becomes " ", except in the first
  // decoded token, where it is dropped (as the reference does).
  std::string metaspace;
  bool metaspace_drop_in_first = false;
  bool byte_fallback = false;  // "<0xNN>" -> byte.
  // Strip of `strip_start` leading `strip_char`s; applied once to the whole
  // text when a Fuse precedes it, else to every token.
  int strip_start = 0;
  char strip_char = ' ';
  bool strip_whole_text = false;
};

struct BpeTokenizerSpec {
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added_tokens;
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  DecoderSpec decoder;
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
};

// Parses tokenizer.json text. Errors: InvalidArgument for malformed JSON or
// inconsistent content, Unimplemented for pipeline components not supported.
absl::StatusOr<BpeTokenizerSpec> ParseBpeTokenizerJson(std::string_view json_text);

class BpeTokenizer : public TokenizerBase {
 public:
  explicit BpeTokenizer(BpeTokenizerSpec spec);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos,
                                              bool parse_special) const override;
  std::string TokenBytes(int32_t id, bool skip_special) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  bool IsSpecial(int32_t id) const override;
  std::optional<int32_t> TokenToId(std::string_view token) const override;

 private:
  // Trie over added-token contents for leftmost-longest matching.
  struct TrieNode {
    absl::flat_hash_map<unsigned char, int32_t> children;
    int32_t token = -1;  // Index into added_ when a token ends here.
  };
  struct Segment {
    std::string text;
    int32_t added_id;  // -1 for ordinary text.
  };

  void BuildTrie(bool normalized, std::vector<TrieNode>* trie);
  // Splits `text` around added tokens of one trie; ordinary text keeps
  // added_id -1.
  void SplitAdded(const std::vector<TrieNode>& trie, std::string_view text, bool parse_special,
                  std::vector<Segment>* out) const;
  std::string Normalize(std::string_view text) const;
  std::string TokenText(int32_t id) const;  // Raw vocab/added string.
  // TokenBytes, knowing whether the token is the first one decoded.
  std::string TokenBytesAt(int32_t id, bool skip_special, bool first) const;

  BpeTokenizerSpec spec_;
  std::vector<TrieNode> raw_trie_;         // Tokens with normalized=false.
  std::vector<TrieNode> normalized_trie_;  // Tokens with normalized=true.
  absl::flat_hash_map<int32_t, size_t> added_by_id_;
  absl::flat_hash_map<std::string, int32_t> added_by_content_;
  int32_t vocab_size_ = 0;
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_BPE_TOKENIZER_H_
