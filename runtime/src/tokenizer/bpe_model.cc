#include "src/tokenizer/bpe_model.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace lcd::runtime {
namespace {

// Words longer than this are not cached: they are rare (Llama-2 style
// tokenizers without a pre-tokenizer see whole lines) and would bloat it.
constexpr size_t kMaxCachedWordBytes = 128;
constexpr size_t kMaxCacheEntries = 1 << 16;

size_t Utf8CharLen(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;  // Invalid lead byte: callers validate first; stay in bounds.
}

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

struct MergeCandidate {
  int32_t rank;
  int32_t pos;  // Index of the left symbol.
  int32_t new_id;
  // Lowest rank first, then leftmost: the order the reference BPE uses.
  bool operator>(const MergeCandidate& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(
    std::vector<std::pair<std::string, int32_t>> vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, BpeModelOptions options) {
  std::unique_ptr<BpeModel> model(new BpeModel());
  model->options_ = std::move(options);
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("vocab id ", id, " is negative"));
    if (id > (1 << 26)) return absl::InvalidArgumentError(absl::StrCat("vocab id ", id, " is too large"));
    max_id = std::max(max_id, id);
  }
  model->id_to_token_.resize(max_id + 1);
  model->has_id_.assign(max_id + 1, false);
  model->token_to_id_.reserve(vocab.size());
  for (auto& [token, id] : vocab) {
    model->id_to_token_[id] = token;
    model->has_id_[id] = true;
    model->token_to_id_.emplace(std::move(token), id);
  }
  model->byte_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    auto it = model->token_to_id_.find(absl::StrFormat("<0x%02X>", b));
    if (it != model->token_to_id_.end()) model->byte_ids_[b] = it->second;
  }
  if (model->options_.unk_token.has_value()) {
    auto id = model->TokenToId(*model->options_.unk_token);
    if (!id.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unk_token '", *model->options_.unk_token, "' is not in the vocab"));
    }
    model->unk_id_ = id;
  }
  model->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto a = model->TokenToId(left);
    auto b = model->TokenToId(right);
    auto merged = model->TokenToId(absl::StrCat(left, right));
    if (!a || !b || !merged) {
      return absl::InvalidArgumentError(absl::StrCat(
          "merge ", rank, " ('", left, "', '", right, "') references a token not in the vocab"));
    }
    // The first (lowest-rank) occurrence of a pair wins, as in the reference.
    model->merges_.try_emplace(PairKey(*a, *b), static_cast<int32_t>(rank), *merged);
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(absl::string_view(token.data(), token.size()));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= id_limit() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto id = TokenToId(word)) {
      out->push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    auto it = cache_.find(absl::string_view(word.data(), word.size()));
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out->size();
  EncodeUncached(word, out);
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    // Dropping everything at the limit keeps memory bounded without LRU
    // bookkeeping; common words come back within a few lines.
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.try_emplace(std::string(word), out->begin() + start, out->end());
  }
}

void BpeModel::EncodeUncached(std::string_view word, std::vector<int32_t>* out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto push = [&symbols](int32_t id) {
    const int32_t n = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, -1, true});
    if (n > 0) symbols[n - 1].next = n;
  };
  bool last_was_unk = false;
  for (size_t i = 0; i < word.size();) {
    const size_t len = std::min(Utf8CharLen(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string_view ch = word.substr(i, len);
    i += len;
    if (auto id = TokenToId(ch)) {
      push(*id);
      last_was_unk = false;
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (unsigned char b : ch) all = all && byte_ids_[b] >= 0;
      if (all) {
        for (unsigned char b : ch) push(byte_ids_[b]);
        last_was_unk = false;
        continue;
      }
    }
    // Unknown char: unk (fused with a preceding unk if asked), or dropped
    // when the model has no unk token, as the reference does.
    if (unk_id_.has_value() && !(options_.fuse_unk && last_was_unk)) push(*unk_id_);
    last_was_unk = unk_id_.has_value();
  }

  std::priority_queue<MergeCandidate, std::vector<MergeCandidate>, std::greater<>> queue;
  auto consider = [&](int32_t pos) {
    if (pos < 0) return;
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push({it->second.first, pos, it->second.second});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const MergeCandidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    // The entry is stale if either side changed since it was queued.
    auto it = merges_.find(PairKey(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.first != top.rank) continue;
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
}

}  // namespace lcd::runtime
