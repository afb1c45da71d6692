// SentencePiece (tokenizer.model) tokenizers through libsentencepiece.
#ifndef LCD_RUNTIME_SRC_SENTENCEPIECE_TOKENIZER_H_
#define LCD_RUNTIME_SRC_SENTENCEPIECE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "src/tokenizer/sentencepiece_library.h"
#include "src/tokenizer/tokenizer_base.h"

namespace lcd::runtime {

// Immutable after construction; libsentencepiece's Encode/Decode are const
// and thread-safe, so this class is too. Decode reimplements the library's
// decoder on top of per-id bytes so that special tokens can be shown
// (the library always hides them).
class SentencePieceTokenizer : public TokenizerBase {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<SentencePieceLibrary> sp);
  ~SentencePieceTokenizer() override;

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos,
                                              bool parse_special) const override;
  std::string TokenBytes(int32_t id, bool skip_special) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const override;
  int32_t vocab_size() const override;
  bool IsSpecial(int32_t id) const override;
  std::optional<int32_t> TokenToId(std::string_view token) const override;

 private:
  std::unique_ptr<SentencePieceLibrary> sp_;
  std::vector<std::string> token_bytes_;  // Per id, "▁" -> " ", bytes resolved.
  bool strips_first_space_ = false;       // Decode drops the first piece's "▁".
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_SENTENCEPIECE_TOKENIZER_H_
