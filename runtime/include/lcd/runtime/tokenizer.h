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
  // Bytes that are not valid UTF-8 become U+FFFD, one per maximal invalid
  // subpart, so the result is always valid UTF-8.
  virtual std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const = 0;

  virtual int32_t vocab_size() const = 0;
  // The BOS token that the model's own convention prepends to prompts
  // (tokenizer.json post-processor template, add_bos_token in
  // tokenizer_config.json, or SentencePiece's bos), so callers may always
  // pass add_bos=true for prompts. Unset when the model adds none (GPT-2,
  // Phi-2): such models get no BOS even with add_bos=true.
  virtual std::optional<int32_t> bos_id() const = 0;
  // End-of-sequence token: tokenizer_config.json's eos_token when present,
  // else SentencePiece's eos, else the first of </s>, <|endoftext|>,
  // <|end_of_text|>, <|im_end|> that the vocabulary holds.
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  // Id of a token's literal text (e.g. "<|eot_id|>"), if any.
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
};

// Loads tokenizer.json (preferred) or tokenizer.model from `model_dir`, plus
// tokenizer_config.json for bos/eos/add_bos when present.
// Errors: NotFound when neither file exists or a path cannot be opened;
// InvalidArgument for malformed files (the message names the problem);
// Unimplemented for tokenizer.json components outside the supported set:
// BPE model; ByteLevel, Split and Metaspace pre-tokenizers; Prepend, Replace
// and NFC normalizers (NFC is a pass-through, exact for text already in NFC);
// ByteLevel, Metaspace, Replace, ByteFallback, Fuse and Strip decoders.
// For SentencePiece, parse_special has no effect: control tokens written in
// the text are encoded as plain text, as libsentencepiece does.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizerJson(const std::string& path);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path);

// Streaming-safe detokenization: feed ids one at a time, get back only text
// that is complete UTF-8. Bytes of a character split across tokens are held
// until the character completes; Flush() returns what remains (invalid tail
// bytes become U+FFFD). Handles SentencePiece's leading space of the first
// token the same way Decode does, so concatenating all outputs equals
// Decode(all ids).
//
// Cost is O(bytes of the token) per Push: the detokenizer keeps only the
// at most 3 bytes of an unfinished character, never the id history. The
// tokenizer must outlive it. Not thread-safe; use one per sequence.
class IncrementalDetokenizer {
 public:
  // tokenizer may be nullptr: then there is no text (Push returns "").
  IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special);
  // Returns the newly completed text (possibly empty).
  std::string Push(int32_t id);
  // Returns the held bytes (U+FFFD for an unfinished character) and resets
  // the held state; a later Push continues the same sequence.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;   // Bytes not yet returned (an unfinished character).
  bool started_ = false;  // Whether any token produced bytes yet.
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_TOKENIZER_H_
