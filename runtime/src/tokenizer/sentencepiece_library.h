// A narrow facade over libsentencepiece, reached through liblcd_spm_shim.so
// (runtime/spm_shim/spm_shim.h) which is dlopen()ed on first use rather than
// linked. Debian's libsentencepiece.so exports its own bundled protobuf 3.14,
// which clashes with libprotobuf 3.21 in every gRPC binary; loading it
// privately (RTLD_LOCAL | RTLD_DEEPBIND) keeps the two apart.
//
// Shim lookup order (first existing file wins; see FindShimCandidates):
//   1. $LCD_SPM_SHIM, when set: the only candidate (an explicit override
//      never falls back silently to another copy);
//   2. <dir of /proc/self/exe>/../lib/ and <dir of /proc/self/exe>/;
//   3. the build tree's copy (LCD_SPM_SHIM_BUILD_PATH, baked in by CMake);
//   4. /usr/local/lib/lcd/ and /opt/lcd/lib/.
// The shim is loaded once per process and never unloaded.
#ifndef LCD_RUNTIME_SRC_SENTENCEPIECE_LIBRARY_H_
#define LCD_RUNTIME_SRC_SENTENCEPIECE_LIBRARY_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

struct LcdSpm;  // The shim's opaque processor handle (spm_shim.h).

namespace lcd::runtime {

struct SpmShimApi;  // The dlsym'ed function table; defined in the .cc.

// Immutable after Load; all methods are const and thread-safe (as the
// underlying processor's are).
class SentencePieceLibrary {
 public:
  // Loads the SentencePiece model at path. Errors: NotFound when the file is
  // missing, InvalidArgument when it is not a valid model,
  // FailedPrecondition when liblcd_spm_shim.so cannot be found or loaded (the
  // message names every path tried).
  static absl::StatusOr<std::unique_ptr<SentencePieceLibrary>> Load(const std::string& path);
  ~SentencePieceLibrary();
  SentencePieceLibrary(const SentencePieceLibrary&) = delete;
  SentencePieceLibrary& operator=(const SentencePieceLibrary&) = delete;

  bool Encode(std::string_view text, std::vector<int>* ids, std::string* error) const;
  std::string DecodeIds(const std::vector<int>& ids) const;
  int GetPieceSize() const;
  // Out-of-range ids give "" / false.
  std::string IdToPiece(int id) const;
  int PieceToId(std::string_view piece) const;
  bool IsByte(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  int bos_id() const;
  int eos_id() const;
  int unk_id() const;
  int pad_id() const;

 private:
  SentencePieceLibrary(const SpmShimApi* api, LcdSpm* handle);
  const SpmShimApi* api_;  // Process-lifetime; never null.
  LcdSpm* handle_;         // Owned; released with lcd_spm_free.
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_SENTENCEPIECE_LIBRARY_H_
