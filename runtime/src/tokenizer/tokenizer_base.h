// Private base of the tokenizers in this directory: holds the bos/eos ids so
// that LoadTokenizer can apply tokenizer_config.json on top of whatever the
// tokenizer file itself says.
#ifndef LCD_RUNTIME_SRC_TOKENIZER_BASE_H_
#define LCD_RUNTIME_SRC_TOKENIZER_BASE_H_

#include <cstdint>
#include <optional>

#include "lcd/runtime/tokenizer.h"

namespace lcd::runtime {

class TokenizerBase : public Tokenizer {
 public:
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }

  // Called only while loading, before the tokenizer is shared.
  void set_bos_id(std::optional<int32_t> id) { bos_id_ = id; }
  void set_eos_id(std::optional<int32_t> id) { eos_id_ = id; }

 private:
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_TOKENIZER_BASE_H_
