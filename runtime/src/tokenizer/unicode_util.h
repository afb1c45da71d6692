// Private UTF-8 helpers shared by the tokenizers: validation, lossy repair
// (the WHATWG / Rust `from_utf8_lossy` rule: each maximal invalid subpart
// becomes one U+FFFD), and the GPT-2 byte <-> unicode-char table used by
// byte-level BPE.
#ifndef LCD_RUNTIME_SRC_UNICODE_UTIL_H_
#define LCD_RUNTIME_SRC_UNICODE_UTIL_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lcd::runtime::unicode {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Result of looking at the bytes at the start of a buffer.
enum class Utf8Scan {
  kComplete,    // A whole valid character of `length` bytes.
  kIncomplete,  // A valid prefix of a character that the buffer cuts off.
  kInvalid,     // `length` bytes form a maximal invalid subpart.
};

// Examines text[0..] (non-empty). Sets *length to the bytes consumed by the
// complete character or the invalid subpart, or to the prefix length when
// incomplete.
Utf8Scan ScanUtf8(std::string_view text, size_t* length);

// True when `text` is entirely valid UTF-8. On failure *bad_offset (if
// non-null) is the offset of the first invalid byte.
bool IsValidUtf8(std::string_view text, size_t* bad_offset = nullptr);

// Replaces every invalid subpart (including a truncated tail) with U+FFFD.
std::string Utf8Lossy(std::string_view bytes);

// Appends the UTF-8 encoding of code point `cp` to *out.
void AppendCodePoint(uint32_t cp, std::string* out);

// GPT-2's reversible byte -> printable-char map (bytes_to_unicode()).
class ByteLevelMap {
 public:
  static const ByteLevelMap& Get();
  // UTF-8 of the char standing for byte `b`.
  const std::string& Encode(uint8_t b) const { return byte_to_utf8_[b]; }
  // Maps a byte-level string back to bytes. Returns false (and leaves *out
  // partially written) when some char is not in the table.
  bool Decode(std::string_view chars, std::string* out) const;

 private:
  ByteLevelMap();
  std::array<std::string, 256> byte_to_utf8_;
  std::array<int16_t, 512> cp_to_byte_;  // All mapped code points are < 512.
};

}  // namespace lcd::runtime::unicode

#endif  // LCD_RUNTIME_SRC_UNICODE_UTIL_H_
