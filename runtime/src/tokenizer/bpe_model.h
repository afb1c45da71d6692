// The BPE "model" step of a Hugging Face tokenizer: turns one pre-token
// (already normalized and, for byte-level tokenizers, mapped to the GPT-2
// printable alphabet) into vocabulary ids by applying merges in rank order.
#ifndef LCD_RUNTIME_SRC_BPE_MODEL_H_
#define LCD_RUNTIME_SRC_BPE_MODEL_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace lcd::runtime {

struct BpeModelOptions {
  std::optional<std::string> unk_token;
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;
};

// Immutable after Create(); EncodeWord is thread-safe (the word cache is
// guarded by a mutex).
class BpeModel {
 public:
  // `vocab` maps token strings to ids; `merges` are (left, right) pairs in
  // rank order. Errors: InvalidArgument when a merge names a token, or
  // produces a token, that is not in the vocabulary, or when unk_token is
  // not in the vocabulary.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(
      std::vector<std::pair<std::string, int32_t>> vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, BpeModelOptions options);

  // Appends the ids for `word` to *out.
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The vocabulary string of `id`, or nullptr when the model has no such id.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest id in the vocabulary.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  BpeModel() = default;
  void EncodeUncached(std::string_view word, std::vector<int32_t>* out) const;

  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  // (left id, right id) -> (rank, merged id).
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::array<int32_t, 256> byte_ids_;  // Ids of "<0xNN>" or -1.
  std::optional<int32_t> unk_id_;
  BpeModelOptions options_;

  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_BPE_MODEL_H_
