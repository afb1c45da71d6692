// A narrow, Abseil-free facade over libsentencepiece. Debian's
// sentencepiece_processor.h declares its own absl::string_view, which
// collides with the real Abseil's; so only sentencepiece_library.cc includes
// it, and that file includes no Abseil header.
#ifndef LCD_RUNTIME_SRC_SENTENCEPIECE_LIBRARY_H_
#define LCD_RUNTIME_SRC_SENTENCEPIECE_LIBRARY_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lcd::runtime {

// Immutable after Load; all methods are const and thread-safe (as the
// underlying processor's are).
class SentencePieceLibrary {
 public:
  // Returns nullptr on failure with *error set; *not_found tells whether the
  // file was missing rather than malformed.
  static std::unique_ptr<SentencePieceLibrary> Load(const std::string& path, std::string* error,
                                                    bool* not_found);
  ~SentencePieceLibrary();

  bool Encode(std::string_view text, std::vector<int>* ids, std::string* error) const;
  std::string DecodeIds(const std::vector<int>& ids) const;
  int GetPieceSize() const;
  std::string IdToPiece(int id) const;
  int PieceToId(std::string_view piece) const;
  bool IsByte(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  int bos_id() const;
  int eos_id() const;

 private:
  struct Impl;
  explicit SentencePieceLibrary(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_SENTENCEPIECE_LIBRARY_H_
