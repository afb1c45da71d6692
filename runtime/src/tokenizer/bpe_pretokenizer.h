// Pre-tokenization for Hugging Face BPE tokenizers: the regex splits of the
// ByteLevel and Split pre-tokenizers, run through PCRE2 (UTF + UCP, JIT when
// available). The reference uses Oniguruma; the patterns shipped with GPT-2,
// Llama-3 and Qwen2 (\p{L}, \p{N}, (?i:...), \s+(?!\S)) mean the same in
// both engines.
#ifndef LCD_RUNTIME_SRC_BPE_PRETOKENIZER_H_
#define LCD_RUNTIME_SRC_BPE_PRETOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lcd::runtime {

// A compiled PCRE2 pattern. Immutable; FindAll is thread-safe (each call
// uses its own match data).
class Pcre2Regex {
 public:
  // Errors: InvalidArgument with PCRE2's message and offset.
  static absl::StatusOr<std::unique_ptr<Pcre2Regex>> Compile(std::string_view pattern);
  ~Pcre2Regex();
  Pcre2Regex(const Pcre2Regex&) = delete;
  Pcre2Regex& operator=(const Pcre2Regex&) = delete;

  // Appends the [begin, end) byte ranges of all non-overlapping matches in
  // `text` (valid UTF-8) to *matches. Empty matches are skipped. If PCRE2
  // fails with a resource limit, the unsearched rest becomes one range.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  explicit Pcre2Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*; void to keep pcre2.h out of this header.
};

// How a Split pre-tokenizer treats the pieces its pattern matches.
enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext };

// One pre-tokenizer step. A pipeline is a list of these, applied in order,
// each refining the pieces produced by the previous one.
struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  // When Metaspace prepends its replacement to a piece.
  enum class Prepend { kNever, kFirst, kAlways };
  Kind kind;
  // kSplit; kByteLevel with use_regex; kMetaspace with split (the literal
  // replacement, MergedWithNext).
  std::shared_ptr<const Pcre2Regex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool add_prefix_space = false;  // kByteLevel only.
  std::string replacement;        // kMetaspace: stands for " " (usually "▁").
  Prepend prepend = Prepend::kNever;  // kMetaspace only.
};

// Runs `steps` over `text`, producing the final pre-tokens (byte-level steps
// map bytes to the GPT-2 alphabet, so the output is in the model's alphabet).
// `at_text_start` tells whether `text` begins the whole input (not after an
// added token); Metaspace's "first" scheme prepends only there.
void PreTokenize(const std::vector<PreTokenizerStep>& steps, std::string_view text,
                 bool at_text_start, std::vector<std::string>* out);

// The GPT-2 pre-tokenizer pattern used by ByteLevel(use_regex=true).
extern const char kGpt2Pattern[];

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_BPE_PRETOKENIZER_H_
