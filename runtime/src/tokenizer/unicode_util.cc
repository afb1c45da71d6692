#include "src/tokenizer/unicode_util.h"

namespace lcd::runtime::unicode {

Utf8Scan ScanUtf8(std::string_view text, size_t* length) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  const unsigned char c = s[0];
  if (c < 0x80) {
    *length = 1;
    return Utf8Scan::kComplete;
  }
  size_t need;
  // Allowed range of the second byte (Unicode table 3-7); later bytes are
  // always 80..BF. Checking the second byte precisely rejects overlongs and
  // surrogates the same way Rust and WHATWG do.
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *length = 1;
    return Utf8Scan::kInvalid;
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= n) {
      *length = i;
      return Utf8Scan::kIncomplete;
    }
    const unsigned char b = s[i];
    const bool ok = (i == 1) ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      *length = i;
      return Utf8Scan::kInvalid;
    }
  }
  *length = need;
  return Utf8Scan::kComplete;
}

bool IsValidUtf8(std::string_view text, size_t* bad_offset) {
  size_t i = 0;
  while (i < text.size()) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {  // ASCII fast path.
      ++i;
      continue;
    }
    size_t len;
    if (ScanUtf8(text.substr(i), &len) != Utf8Scan::kComplete) {
      if (bad_offset != nullptr) *bad_offset = i;
      return false;
    }
    i += len;
  }
  return true;
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    size_t len;
    if (ScanUtf8(bytes.substr(i), &len) == Utf8Scan::kComplete) {
      out.append(bytes.substr(i, len));
    } else {
      out.append(kReplacementChar);
    }
    i += len;
  }
  return out;
}

void AppendCodePoint(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const ByteLevelMap& ByteLevelMap::Get() {
  static const ByteLevelMap* const kMap = new ByteLevelMap();
  return *kMap;
}

ByteLevelMap::ByteLevelMap() {
  cp_to_byte_.fill(-1);
  // Printable Latin-1 bytes stand for themselves; the rest are shifted to
  // 256+ in byte order, exactly as GPT-2's bytes_to_unicode().
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const int cp = printable(b) ? b : next++;
    AppendCodePoint(static_cast<uint32_t>(cp), &byte_to_utf8_[b]);
    cp_to_byte_[cp] = static_cast<int16_t>(b);
  }
}

bool ByteLevelMap::Decode(std::string_view chars, std::string* out) const {
  size_t i = 0;
  while (i < chars.size()) {
    size_t len;
    if (ScanUtf8(chars.substr(i), &len) != Utf8Scan::kComplete) return false;
    uint32_t cp;
    const auto* s = reinterpret_cast<const unsigned char*>(chars.data() + i);
    if (len == 1) {
      cp = s[0];
    } else if (len == 2) {
      cp = ((s[0] & 0x1Fu) << 6) | (s[1] & 0x3Fu);
    } else {
      return false;  // Every mapped code point is below U+0800.
    }
    if (cp >= cp_to_byte_.size() || cp_to_byte_[cp] < 0) return false;
    out->push_back(static_cast<char>(cp_to_byte_[cp]));
    i += len;
  }
  return true;
}

}  // namespace lcd::runtime::unicode
