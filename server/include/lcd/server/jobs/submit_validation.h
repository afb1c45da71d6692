// SubmitJob's request validation, on the decoded proto and nothing else (no
// filesystem, no store): a function of its own so that the fuzz target
// (tests/fuzz/submit_request_fuzz.cc) runs exactly what lcd-jobs runs.
//
// Accepted requests have: source_model non-empty, printable ASCII, at most
// kMaxJobPathBytes; target_model a model name (ValidateModelName); method
// one of `methods`; bits in [2, 4]; group_size in [8, 65536];
// calibration_file printable ASCII, at most kMaxJobPathBytes, and non-empty
// when the method needs one (lcd/quantizer/methods.h); calibration_samples
// in [0, 1000000]; budget_seconds in [0, 604800] (finite); idempotency_key
// printable ASCII, at most kMaxIdempotencyKeyBytes. Everything else is
// InvalidArgument naming the field (client text echoed only through the
// bounded checks). Roots and existence of the paths are checked later, by
// the service's resolvers.
#ifndef LCD_SERVER_JOBS_SUBMIT_VALIDATION_H_
#define LCD_SERVER_JOBS_SUBMIT_VALIDATION_H_

#include <cstddef>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "lcd/v1/jobs.pb.h"

namespace lcd::server::jobs {

inline constexpr size_t kMaxJobPathBytes = 4096;
inline constexpr size_t kMaxIdempotencyKeyBytes = 128;

// Client strings are stored and echoed back: at most `max` bytes of
// printable ASCII; InvalidArgument naming `field` otherwise (the value is
// not echoed).
absl::Status ValidateJobText(const char* field, const std::string& value, size_t max);

absl::Status ValidateSubmitJobRequest(const lcd::v1::SubmitJobRequest& request, const std::set<std::string>& methods);

}  // namespace lcd::server::jobs

#endif  // LCD_SERVER_JOBS_SUBMIT_VALIDATION_H_
