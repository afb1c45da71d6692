// Text <-> token ids.
//
// Two implementations behind one interface, chosen by what the model
// directory holds (LoadTokenizer):
//   - tokenizer.json with a byte-level BPE model (GPT-2 / Llama-3 / Qwen2
//     style: pre-tokenizer regex via PCRE2, merges, added/special tokens,
//     byte fallback), or the Llama-2 style BPE with "▁" normalizer and
//     byte fallback;
//   - tokenizer.model (SentencePiece) through libsentencepiece.
//
// Thread safety: Encode/Decode are const and safe to call concurrently.
#ifndef LCD_RUNTIME_TOKENIZER_H_
#define LCD_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lcd::runtime {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes `text`. Special/added tokens written literally in the text (e.g.
  // "<|endoftext|>") are recognised when `parse_special` is true, as the
  // Hugging Face tokenizers do by default. add_bos prepends bos_id() when the
  // tokenizer has one. Errors: InvalidArgument for invalid UTF-8.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos,
                                                      bool parse_special = true) const = 0;

  // The bytes that token `id` stands for, with the tokenizer's decoding
  // applied ("▁" -> " ", byte-level mapping undone, <0xNN> -> byte). May be a
  // partial UTF-8 sequence. Special tokens decode to their text unless
  // skip_special. Unknown ids decode to "".
  virtual std::string TokenBytes(int32_t id, bool skip_special) const = 0;

  // Decodes a whole sequence (equivalent to joining TokenBytes, plus any
  // tokenizer-level cleanup such as SentencePiece's leading-space strip).
  virtual std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  // Id of a token's literal text (e.g. "<|eot_id|>"), if any.
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
};

// Loads tokenizer.json (preferred) or tokenizer.model from `model_dir`, plus
// tokenizer_config.json for bos/eos/add_bos when present.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizerJson(const std::string& path);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path);

// Streaming-safe detokenization: feed ids one at a time, get back only text
// that is complete UTF-8. Bytes of a character split across tokens are held
// until the character completes; Flush() returns what remains (invalid tail
// bytes become U+FFFD). Handles SentencePiece's leading space of the first
// token the same way Decode does, so concatenating all outputs equals
// Decode(all ids).
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special);
  // Returns the newly completed text (possibly empty).
  std::string Push(int32_t id);
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t emitted_bytes_ = 0;  // Bytes of Decode(ids_) already returned.
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_TOKENIZER_H_
