#include "src/tokenizer/sentencepiece_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "src/tokenizer/unicode_util.h"

namespace lcd::runtime {
namespace {

constexpr char kSpaceSymbol[] = "\xE2\x96\x81";  // "▁"
constexpr char kUnkSurface[] = " \xE2\x81\x87 ";  // libsentencepiece's " ⁇ "

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(
    std::unique_ptr<SentencePieceLibrary> sp)
    : sp_(std::move(sp)) {
  const int n = sp_->GetPieceSize();
  token_bytes_.resize(n);
  for (int id = 0; id < n; ++id) {
    const std::string piece = sp_->IdToPiece(id);
    if (sp_->IsByte(id)) {
      // Byte pieces are spelled "<0xNN>".
      token_bytes_[id] = std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    } else if (sp_->IsUnknown(id)) {
      token_bytes_[id] = std::string(kUnkSurface);
    } else if (sp_->IsControl(id)) {
      token_bytes_[id] = piece;
    } else {
      token_bytes_[id] = absl::StrReplaceAll(piece, {{kSpaceSymbol, " "}});
    }
  }
  // Whether decoding drops the dummy-prefix space depends on the model's
  // normalizer spec; asking the library once avoids depending on the
  // protobuf headers, which Debian does not ship.
  for (int id = 0; id < n; ++id) {
    const std::string piece = sp_->IdToPiece(id);
    if (!sp_->IsControl(id) && !sp_->IsByte(id) && !sp_->IsUnknown(id) && piece.size() > 3 &&
        piece.compare(0, 3, kSpaceSymbol) == 0) {
      strips_first_space_ = sp_->DecodeIds({id}).size() < token_bytes_[id].size();
      break;
    }
  }
  if (sp_->bos_id() >= 0) set_bos_id(sp_->bos_id());
  if (sp_->eos_id() >= 0) set_eos_id(sp_->eos_id());
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

absl::StatusOr<std::vector<int32_t>> SentencePieceTokenizer::Encode(std::string_view text, bool add_bos,
                                                                    bool /*parse_special*/) const {
  size_t bad = 0;
  if (!unicode::IsValidUtf8(text, &bad)) {
    return absl::InvalidArgumentError(absl::StrCat("input is not valid UTF-8 (byte offset ", bad, ")"));
  }
  std::vector<int> pieces;
  std::string error;
  if (!sp_->Encode(text, &pieces, &error)) return absl::InternalError(absl::StrCat("sentencepiece: ", error));
  std::vector<int32_t> ids;
  ids.reserve(pieces.size() + 1);
  if (add_bos && bos_id().has_value()) ids.push_back(*bos_id());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  return ids;
}

std::string SentencePieceTokenizer::TokenBytes(int32_t id, bool skip_special) const {
  if (id < 0 || id >= static_cast<int32_t>(token_bytes_.size())) return "";
  if (skip_special && IsSpecial(id)) return "";
  return token_bytes_[id];
}

std::string SentencePieceTokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  // Mirrors libsentencepiece's decoder (which always hides control tokens):
  // the first piece that is not a control token loses one leading "▁",
  // unless it is a byte or unknown piece. A control token that is shown
  // counts as that first piece.
  std::string out;
  bool at_start = true;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(token_bytes_.size())) continue;
    if (skip_special && IsSpecial(id)) continue;
    std::string_view bytes = token_bytes_[id];
    if (at_start && strips_first_space_ && !sp_->IsByte(id) && !sp_->IsUnknown(id) &&
        !sp_->IsControl(id) && !bytes.empty() && bytes[0] == ' ') {
      bytes.remove_prefix(1);
    }
    at_start = false;
    out.append(bytes);
  }
  return unicode::Utf8Lossy(out);
}

int32_t SentencePieceTokenizer::vocab_size() const { return sp_->GetPieceSize(); }

bool SentencePieceTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && sp_->IsControl(id);
}

std::optional<int32_t> SentencePieceTokenizer::TokenToId(std::string_view token) const {
  const int id = sp_->PieceToId(token);
  if (id < 0 || (sp_->IsUnknown(id) && sp_->IdToPiece(id) != token)) return std::nullopt;
  return id;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SentencePieceLibrary>> sp = SentencePieceLibrary::Load(path);
  if (!sp.ok()) return sp.status();
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(*std::move(sp)));
}

}  // namespace lcd::runtime
