// The only translation unit that includes sentencepiece_processor.h. Built
// with -fvisibility=hidden: the LCD_SPM_EXPORT functions are the library's
// whole dynamic interface. No exception escapes a function here (callers are
// C), and buffers handed out are malloc'ed so that lcd_spm_free_buffer can
// release them with the allocator of this library's own scope.
#include "spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#define LCD_SPM_EXPORT extern "C" __attribute__((visibility("default")))

struct LcdSpm {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

// A malloc'ed, NUL-terminated copy of s; NULL when out of memory.
char* CopyOut(const std::string& s, size_t* len) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out == nullptr) return nullptr;
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  if (len != nullptr) *len = s.size();
  return out;
}

void SetError(char** error, const std::string& message) {
  if (error != nullptr) *error = CopyOut(message, nullptr);
}

// libsentencepiece does not range-check ids in every accessor (the model's
// piece table is indexed directly), so the shim does.
bool InRange(const LcdSpm* spm, int id) { return id >= 0 && id < spm->sp.GetPieceSize(); }

}  // namespace

LCD_SPM_EXPORT int lcd_spm_abi_version(void) { return LCD_SPM_SHIM_ABI_VERSION; }

LCD_SPM_EXPORT LcdSpm* lcd_spm_load(const char* path, char** error, int* not_found) {
  if (error != nullptr) *error = nullptr;
  if (not_found != nullptr) *not_found = 0;
  try {
    std::unique_ptr<LcdSpm> spm(new LcdSpm);
    const auto status = spm->sp.Load(path);
    if (!status.ok()) {
      if (not_found != nullptr) {
        *not_found = status.code() == sentencepiece::util::StatusCode::kNotFound ? 1 : 0;
      }
      SetError(error, status.ToString());
      return nullptr;
    }
    return spm.release();
  } catch (const std::exception& e) {
    SetError(error, e.what());
    return nullptr;
  }
}

LCD_SPM_EXPORT void lcd_spm_free(LcdSpm* spm) { delete spm; }

LCD_SPM_EXPORT int lcd_spm_encode(const LcdSpm* spm, const char* text, size_t len, int** ids,
                                  size_t* num_ids, char** error) {
  *ids = nullptr;
  *num_ids = 0;
  if (error != nullptr) *error = nullptr;
  try {
    std::vector<int> pieces;
    const auto status = spm->sp.Encode(std::string_view(text, len), &pieces);
    if (!status.ok()) {
      SetError(error, status.ToString());
      return 0;
    }
    if (pieces.empty()) return 1;
    *ids = static_cast<int*>(std::malloc(pieces.size() * sizeof(int)));
    if (*ids == nullptr) {
      SetError(error, "out of memory");
      return 0;
    }
    std::memcpy(*ids, pieces.data(), pieces.size() * sizeof(int));
    *num_ids = pieces.size();
    return 1;
  } catch (const std::exception& e) {
    SetError(error, e.what());
    return 0;
  }
}

LCD_SPM_EXPORT char* lcd_spm_decode_ids(const LcdSpm* spm, const int* ids, size_t num_ids,
                                        size_t* len) {
  try {
    std::vector<int> in;
    in.reserve(num_ids);
    for (size_t i = 0; i < num_ids; ++i) {
      if (InRange(spm, ids[i])) in.push_back(ids[i]);
    }
    return CopyOut(spm->sp.DecodeIds(in), len);
  } catch (const std::exception&) {
    return nullptr;
  }
}

LCD_SPM_EXPORT char* lcd_spm_id_to_piece(const LcdSpm* spm, int id, size_t* len) {
  try {
    return CopyOut(InRange(spm, id) ? spm->sp.IdToPiece(id) : std::string(), len);
  } catch (const std::exception&) {
    return nullptr;
  }
}

LCD_SPM_EXPORT int lcd_spm_piece_to_id(const LcdSpm* spm, const char* piece, size_t len) {
  return spm->sp.PieceToId(std::string_view(piece, len));
}

LCD_SPM_EXPORT int lcd_spm_piece_size(const LcdSpm* spm) { return spm->sp.GetPieceSize(); }
LCD_SPM_EXPORT int lcd_spm_bos_id(const LcdSpm* spm) { return spm->sp.bos_id(); }
LCD_SPM_EXPORT int lcd_spm_eos_id(const LcdSpm* spm) { return spm->sp.eos_id(); }
LCD_SPM_EXPORT int lcd_spm_unk_id(const LcdSpm* spm) { return spm->sp.unk_id(); }
LCD_SPM_EXPORT int lcd_spm_pad_id(const LcdSpm* spm) { return spm->sp.pad_id(); }

LCD_SPM_EXPORT int lcd_spm_is_control(const LcdSpm* spm, int id) {
  return InRange(spm, id) && spm->sp.IsControl(id) ? 1 : 0;
}
LCD_SPM_EXPORT int lcd_spm_is_byte(const LcdSpm* spm, int id) {
  return InRange(spm, id) && spm->sp.IsByte(id) ? 1 : 0;
}
LCD_SPM_EXPORT int lcd_spm_is_unknown(const LcdSpm* spm, int id) {
  return InRange(spm, id) && spm->sp.IsUnknown(id) ? 1 : 0;
}

LCD_SPM_EXPORT void lcd_spm_free_buffer(void* buffer) { std::free(buffer); }
