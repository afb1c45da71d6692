// SubmitJob's request validation (contract in submit_validation.h).
#include "lcd/server/jobs/submit_validation.h"

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/quantizer/methods.h"
#include "lcd/server/request_validation.h"

namespace lcd::server::jobs {

absl::Status ValidateJobText(const char* field, const std::string& v, size_t max) {
  if (v.size() > max) return absl::InvalidArgumentError(absl::StrCat(field, " is longer than ", max, " bytes"));
  for (unsigned char c : v) {
    if (c < 0x20 || c == 0x7f || c >= 0x80) {
      return absl::InvalidArgumentError(absl::StrCat(field, " must be printable ASCII"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSubmitJobRequest(const lcd::v1::SubmitJobRequest& r, const std::set<std::string>& methods) {
  if (r.source_model().empty()) return absl::InvalidArgumentError("source_model is required");
  if (absl::Status st = ValidateJobText("source_model", r.source_model(), kMaxJobPathBytes); !st.ok()) return st;
  LCD_RETURN_IF_ERROR(ValidateModelName(r.target_model(), "target_model"));
  if (methods.count(r.method()) == 0) {
    std::string known;
    for (const std::string& m : methods) absl::StrAppend(&known, known.empty() ? "" : ", ", m);
    if (absl::Status st = ValidateJobText("method", r.method(), 64); !st.ok()) return st;
    return absl::InvalidArgumentError(absl::StrCat("unknown method '", r.method(), "' (known: ", known, ")"));
  }
  if (r.bits() < 2 || r.bits() > 4) {
    return absl::InvalidArgumentError(absl::StrCat("bits must be 2, 3 or 4, got ", r.bits()));
  }
  if (r.group_size() < 8 || r.group_size() > 65536) {
    return absl::InvalidArgumentError(absl::StrCat("group_size must be in [8, 65536], got ", r.group_size()));
  }
  if (absl::Status st = ValidateJobText("calibration_file", r.calibration_file(), kMaxJobPathBytes); !st.ok()) return st;
  const quantizer::MethodInfo* method = quantizer::FindMethod(r.method());
  if (method != nullptr && method->needs_calibration_file && r.calibration_file().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("method ", r.method(), " needs a calibration_file (it has no teacher-generated fallback)"));
  }
  if (r.calibration_samples() < 0 || r.calibration_samples() > 1000000) {
    return absl::InvalidArgumentError("calibration_samples must be in [0, 1000000]");
  }
  if (!(r.budget_seconds() >= 0 && r.budget_seconds() <= 7 * 24 * 3600)) {
    return absl::InvalidArgumentError("budget_seconds must be in [0, 604800]");
  }
  return ValidateJobText("idempotency_key", r.idempotency_key(), kMaxIdempotencyKeyBytes);
}

}  // namespace lcd::server::jobs
