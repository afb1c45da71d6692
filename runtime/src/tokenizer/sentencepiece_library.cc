// Loads liblcd_spm_shim.so at run time and forwards to it. See
// sentencepiece_library.h for why libsentencepiece is never linked.
#include "src/tokenizer/sentencepiece_library.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spm_shim/spm_shim.h"

#ifndef LCD_SPM_SHIM_BUILD_PATH
#define LCD_SPM_SHIM_BUILD_PATH ""
#endif

// RTLD_DEEPBIND puts the shim's own dependency tree (libsentencepiece with
// its bundled protobuf 3.14) ahead of the global scope for every symbol the
// shim and libsentencepiece look up, so they never bind to the process's
// libprotobuf 3.21, and RTLD_LOCAL keeps 3.14's symbols out of the global
// scope so libprotobuf never binds to them. (The two protobufs still share
// their STB_GNU_UNIQUE symbols, which glibc binds process-wide; those are
// the shutdown list, identical in layout in 3.14 and 3.21, and constants.)
//
// The sanitizer runtimes reject RTLD_DEEPBIND (it would let the library
// bypass their malloc/free interceptors), aborting in dlopen. Sanitizer
// builds therefore load with RTLD_LOCAL only; that is safe in the binaries
// they build without gRPC (no other protobuf in the process), and in a
// sanitized binary that does link libprotobuf, SentencePiece reports the
// version clash as a load error instead of working.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LCD_SPM_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define LCD_SPM_SANITIZED 1
#endif
#endif
#ifdef LCD_SPM_SANITIZED
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

namespace lcd::runtime {

constexpr char kShimFileName[] = "liblcd_spm_shim.so";

struct SpmShimApi {
  decltype(&lcd_spm_abi_version) abi_version;
  decltype(&lcd_spm_load) load;
  decltype(&lcd_spm_free) free;
  decltype(&lcd_spm_encode) encode;
  decltype(&lcd_spm_decode_ids) decode_ids;
  decltype(&lcd_spm_id_to_piece) id_to_piece;
  decltype(&lcd_spm_piece_to_id) piece_to_id;
  decltype(&lcd_spm_piece_size) piece_size;
  decltype(&lcd_spm_bos_id) bos_id;
  decltype(&lcd_spm_eos_id) eos_id;
  decltype(&lcd_spm_unk_id) unk_id;
  decltype(&lcd_spm_pad_id) pad_id;
  decltype(&lcd_spm_is_control) is_control;
  decltype(&lcd_spm_is_byte) is_byte;
  decltype(&lcd_spm_is_unknown) is_unknown;
  decltype(&lcd_spm_free_buffer) free_buffer;
};

namespace {

std::vector<std::string> FindShimCandidates() {
  if (const char* env = std::getenv("LCD_SPM_SHIM"); env != nullptr && *env != '\0') return {env};
  std::vector<std::string> out;
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    out.push_back((exe.parent_path() / ".." / "lib" / kShimFileName).lexically_normal().string());
    out.push_back((exe.parent_path() / kShimFileName).string());
  }
  if (*LCD_SPM_SHIM_BUILD_PATH != '\0') out.push_back(LCD_SPM_SHIM_BUILD_PATH);
  out.push_back(absl::StrCat("/usr/local/lib/lcd/", kShimFileName));
  out.push_back(absl::StrCat("/opt/lcd/lib/", kShimFileName));
  // The build-tree path usually repeats <exe>/../lib; try each path once.
  std::vector<std::string> unique;
  for (std::string& p : out) {
    if (std::find(unique.begin(), unique.end(), p) == unique.end()) unique.push_back(std::move(p));
  }
  return unique;
}

template <typename Fn>
bool Resolve(void* lib, const char* name, Fn* fn, std::vector<std::string>* missing) {
  *fn = reinterpret_cast<Fn>(dlsym(lib, name));
  if (*fn == nullptr) missing->push_back(name);
  return *fn != nullptr;
}

absl::StatusOr<SpmShimApi> OpenShim() {
  std::vector<std::string> tried;
  for (const std::string& path : FindShimCandidates()) {
    if (access(path.c_str(), R_OK) != 0) {
      tried.push_back(absl::StrCat(path, " (absent)"));
      continue;
    }
    void* lib = dlopen(path.c_str(), kDlopenFlags);
    if (lib == nullptr) {
      const char* err = dlerror();
      tried.push_back(absl::StrCat(path, " (", err ? err : "dlopen failed", ")"));
      continue;
    }
    // Never dlclose'd: tokenizers may live until exit, and libsentencepiece
    // registers protobuf shutdown hooks that point into it.
    SpmShimApi api{};
    std::vector<std::string> missing;
    Resolve(lib, "lcd_spm_abi_version", &api.abi_version, &missing);
    Resolve(lib, "lcd_spm_load", &api.load, &missing);
    Resolve(lib, "lcd_spm_free", &api.free, &missing);
    Resolve(lib, "lcd_spm_encode", &api.encode, &missing);
    Resolve(lib, "lcd_spm_decode_ids", &api.decode_ids, &missing);
    Resolve(lib, "lcd_spm_id_to_piece", &api.id_to_piece, &missing);
    Resolve(lib, "lcd_spm_piece_to_id", &api.piece_to_id, &missing);
    Resolve(lib, "lcd_spm_piece_size", &api.piece_size, &missing);
    Resolve(lib, "lcd_spm_bos_id", &api.bos_id, &missing);
    Resolve(lib, "lcd_spm_eos_id", &api.eos_id, &missing);
    Resolve(lib, "lcd_spm_unk_id", &api.unk_id, &missing);
    Resolve(lib, "lcd_spm_pad_id", &api.pad_id, &missing);
    Resolve(lib, "lcd_spm_is_control", &api.is_control, &missing);
    Resolve(lib, "lcd_spm_is_byte", &api.is_byte, &missing);
    Resolve(lib, "lcd_spm_is_unknown", &api.is_unknown, &missing);
    Resolve(lib, "lcd_spm_free_buffer", &api.free_buffer, &missing);
    if (!missing.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " is not a compatible ", kShimFileName, ": missing ", absl::StrJoin(missing, ", ")));
    }
    if (const int v = api.abi_version(); v != LCD_SPM_SHIM_ABI_VERSION) {
      return absl::FailedPreconditionError(absl::StrCat(path, " has shim ABI version ", v,
                                                        ", expected ", LCD_SPM_SHIM_ABI_VERSION));
    }
    return api;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("cannot load ", kShimFileName,
                   " (needed for SentencePiece tokenizers; set LCD_SPM_SHIM to its path); tried: ",
                   absl::StrJoin(tried, "; ")));
}

// Loads the shim on first use; later calls return the same result, success
// or failure (thread-safe by the function-local static).
const absl::StatusOr<SpmShimApi>& Shim() {
  static const absl::StatusOr<SpmShimApi>* const shim = new absl::StatusOr<SpmShimApi>(OpenShim());
  return *shim;
}

// Takes ownership of a shim buffer of len bytes.
std::string TakeString(const SpmShimApi& api, char* buffer, size_t len) {
  if (buffer == nullptr) return "";
  std::string out(buffer, len);
  api.free_buffer(buffer);
  return out;
}

}  // namespace

SentencePieceLibrary::SentencePieceLibrary(const SpmShimApi* api, LcdSpm* handle)
    : api_(api), handle_(handle) {}

SentencePieceLibrary::~SentencePieceLibrary() { api_->free(handle_); }

absl::StatusOr<std::unique_ptr<SentencePieceLibrary>> SentencePieceLibrary::Load(
    const std::string& path) {
  const absl::StatusOr<SpmShimApi>& api = Shim();
  if (!api.ok()) return api.status();
  char* error = nullptr;
  int not_found = 0;
  LcdSpm* handle = api->load(path.c_str(), &error, &not_found);
  if (handle == nullptr) {
    const std::string message = error ? error : "unknown error";
    api->free_buffer(error);
    return absl::Status(not_found ? absl::StatusCode::kNotFound : absl::StatusCode::kInvalidArgument,
                        absl::StrCat("cannot load SentencePiece model ", path, ": ", message));
  }
  return std::unique_ptr<SentencePieceLibrary>(new SentencePieceLibrary(&*api, handle));
}

bool SentencePieceLibrary::Encode(std::string_view text, std::vector<int>* ids,
                                  std::string* error) const {
  int* out = nullptr;
  size_t n = 0;
  char* err = nullptr;
  if (!api_->encode(handle_, text.data(), text.size(), &out, &n, &err)) {
    *error = err ? err : "unknown error";
    api_->free_buffer(err);
    return false;
  }
  ids->assign(out, out + n);
  api_->free_buffer(out);
  return true;
}

std::string SentencePieceLibrary::DecodeIds(const std::vector<int>& ids) const {
  size_t len = 0;
  char* out = api_->decode_ids(handle_, ids.data(), ids.size(), &len);
  return TakeString(*api_, out, len);
}

std::string SentencePieceLibrary::IdToPiece(int id) const {
  size_t len = 0;
  char* out = api_->id_to_piece(handle_, id, &len);
  return TakeString(*api_, out, len);
}

int SentencePieceLibrary::PieceToId(std::string_view piece) const {
  return api_->piece_to_id(handle_, piece.data(), piece.size());
}
int SentencePieceLibrary::GetPieceSize() const { return api_->piece_size(handle_); }
bool SentencePieceLibrary::IsByte(int id) const { return api_->is_byte(handle_, id) != 0; }
bool SentencePieceLibrary::IsControl(int id) const { return api_->is_control(handle_, id) != 0; }
bool SentencePieceLibrary::IsUnknown(int id) const { return api_->is_unknown(handle_, id) != 0; }
int SentencePieceLibrary::bos_id() const { return api_->bos_id(handle_); }
int SentencePieceLibrary::eos_id() const { return api_->eos_id(handle_); }
int SentencePieceLibrary::unk_id() const { return api_->unk_id(handle_); }
int SentencePieceLibrary::pad_id() const { return api_->pad_id(handle_); }

}  // namespace lcd::runtime
