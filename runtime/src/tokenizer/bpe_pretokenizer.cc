#include "src/tokenizer/bpe_pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "src/tokenizer/unicode_util.h"

namespace lcd::runtime {

const char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::StatusOr<std::unique_ptr<Pcre2Regex>> Pcre2Regex::Compile(std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("bad pre-tokenizer regex at offset ", offset,
                                                   ": ", reinterpret_cast<char*>(message)));
  }
  // JIT is an optimisation only: when unavailable pcre2_match interprets.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Pcre2Regex>(new Pcre2Regex(code));
}

Pcre2Regex::~Pcre2Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Pcre2Regex::FindAll(std::string_view text,
                         std::vector<std::pair<size_t, size_t>>* matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    // The text was validated once at Encode; skip PCRE2's per-call check.
    const int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      // A resource limit (never seen with the shipped patterns, even on
      // 200k-char runs): keep the rest as one piece rather than lose text.
      matches->emplace_back(pos, text.size());
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    if (end > begin) {
      matches->emplace_back(begin, end);
      pos = end;
    } else {
      // Empty match: step over one whole character to make progress.
      if (begin >= text.size()) break;
      size_t step = 1;
      while (begin + step < text.size() && (static_cast<unsigned char>(text[begin + step]) & 0xC0) == 0x80) {
        ++step;
      }
      pos = begin + step;
    }
  }
  pcre2_match_data_free(md);
}

namespace {

void SplitPiece(const PreTokenizerStep& step, const std::string& piece,
                std::vector<std::string>* out) {
  std::vector<std::pair<size_t, size_t>> matches;
  step.regex->FindAll(piece, &matches);
  // The piece as alternating gaps and matches, then folded the way the
  // reference's SplitDelimiterBehavior does: a delimiter joins its
  // neighbour only when that neighbour is not itself a delimiter.
  struct Part {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (b > prev) parts.push_back({prev, b, false});
    parts.push_back({b, e, true});
    prev = e;
  }
  if (prev < piece.size()) parts.push_back({prev, piece.size(), false});

  std::vector<std::pair<size_t, size_t>> ranges;
  switch (step.behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) ranges.emplace_back(p.begin, p.end);
      break;
    case SplitBehavior::kRemoved:
      for (const Part& p : parts) {
        if (!p.is_match) ranges.emplace_back(p.begin, p.end);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !ranges.empty()) {
          ranges.back().second = p.end;
        } else {
          ranges.emplace_back(p.begin, p.end);
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;  // Whether the part to the right matched.
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !ranges.empty()) {
          ranges.back().first = it->begin;
        } else {
          ranges.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(ranges.begin(), ranges.end());
      break;
    }
  }
  for (const auto& [b, e] : ranges) out->push_back(piece.substr(b, e - b));
}

}  // namespace

void PreTokenize(const std::vector<PreTokenizerStep>& steps, std::string_view text,
                 bool at_text_start, std::vector<std::string>* out) {
  std::vector<std::string> pieces{std::string(text)};
  std::vector<std::string> next;
  const auto& byte_map = unicode::ByteLevelMap::Get();
  for (const PreTokenizerStep& step : steps) {
    next.clear();
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string& piece = pieces[i];
      if (step.kind == PreTokenizerStep::Kind::kMetaspace) {
        piece = absl::StrReplaceAll(piece, {{" ", step.replacement}});
        const bool prepend = step.prepend == PreTokenizerStep::Prepend::kAlways ||
                             (step.prepend == PreTokenizerStep::Prepend::kFirst && at_text_start && i == 0);
        if (prepend && !absl::StartsWith(piece, step.replacement)) piece.insert(0, step.replacement);
        if (step.regex != nullptr) {
          SplitPiece(step, piece, &next);
        } else {
          next.push_back(std::move(piece));
        }
      } else if (step.kind == PreTokenizerStep::Kind::kByteLevel) {
        if (step.add_prefix_space && !piece.empty() && piece[0] != ' ') piece.insert(piece.begin(), ' ');
        const size_t first = next.size();
        if (step.regex != nullptr) {
          SplitPiece(step, piece, &next);
        } else {
          next.push_back(std::move(piece));
        }
        for (size_t i = first; i < next.size(); ++i) {
          std::string mapped;
          mapped.reserve(next[i].size() * 2);
          for (unsigned char b : next[i]) mapped += byte_map.Encode(b);
          next[i] = std::move(mapped);
        }
      } else {
        SplitPiece(step, piece, &next);
      }
    }
    pieces.swap(next);
  }
  for (std::string& p : pieces) {
    if (!p.empty()) out->push_back(std::move(p));
  }
}

}  // namespace lcd::runtime
