// Deliberately includes no Abseil header (see sentencepiece_library.h).
#include "sentencepiece_library.h"

#include <sentencepiece_processor.h>

namespace lcd::runtime {

struct SentencePieceLibrary::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceLibrary::SentencePieceLibrary(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceLibrary::~SentencePieceLibrary() = default;

std::unique_ptr<SentencePieceLibrary> SentencePieceLibrary::Load(const std::string& path,
                                                                 std::string* error,
                                                                 bool* not_found) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->sp.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    *not_found = status.code() == sentencepiece::util::StatusCode::kNotFound;
    return nullptr;
  }
  return std::unique_ptr<SentencePieceLibrary>(new SentencePieceLibrary(std::move(impl)));
}

bool SentencePieceLibrary::Encode(std::string_view text, std::vector<int>* ids,
                                  std::string* error) const {
  const auto status = impl_->sp.Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

std::string SentencePieceLibrary::DecodeIds(const std::vector<int>& ids) const {
  return impl_->sp.DecodeIds(ids);
}
int SentencePieceLibrary::GetPieceSize() const { return impl_->sp.GetPieceSize(); }
std::string SentencePieceLibrary::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }
int SentencePieceLibrary::PieceToId(std::string_view piece) const { return impl_->sp.PieceToId(piece); }
bool SentencePieceLibrary::IsByte(int id) const { return impl_->sp.IsByte(id); }
bool SentencePieceLibrary::IsControl(int id) const { return impl_->sp.IsControl(id); }
bool SentencePieceLibrary::IsUnknown(int id) const { return impl_->sp.IsUnknown(id); }
int SentencePieceLibrary::bos_id() const { return impl_->sp.bos_id(); }
int SentencePieceLibrary::eos_id() const { return impl_->sp.eos_id(); }

}  // namespace lcd::runtime
