// lcd-jobs' SubmitJob validation on the decoded proto (the bytes are parsed
// as a SubmitJobRequest): whatever it accepts must satisfy the documented
// rules (lcd/server/jobs/submit_validation.h), refusals are
// InvalidArgument with a bounded message, and nothing crashes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "lcd/quantizer/methods.h"
#include "lcd/server/jobs/submit_validation.h"
#include "lcd/server/request_validation.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckPrintable(const std::string& s, size_t max) {
  Check(s.size() <= max);
  for (unsigned char c : s) Check(c >= 0x20 && c < 0x7f);
}

const std::set<std::string>& Methods() {
  static const std::set<std::string>* methods = [] {
    auto* m = new std::set<std::string>;
    for (const lcd::quantizer::MethodInfo& info : lcd::quantizer::kMethods) m->emplace(info.name);
    return m;
  }();
  return *methods;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lcd::v1::SubmitJobRequest r;
  if (!r.ParseFromArray(data, static_cast<int>(size))) return 0;
  const absl::Status st = lcd::server::jobs::ValidateSubmitJobRequest(r, Methods());
  if (!st.ok()) {
    Check(st.code() == absl::StatusCode::kInvalidArgument);
    Check(st.message().size() < 512);
    return 0;
  }
  using namespace lcd::server::jobs;
  Check(!r.source_model().empty());
  CheckPrintable(r.source_model(), kMaxJobPathBytes);
  Check(lcd::server::ValidateModelName(r.target_model(), "target_model").ok());
  Check(Methods().count(r.method()) == 1);
  Check(r.bits() >= 2 && r.bits() <= 4);
  Check(r.group_size() >= 8 && r.group_size() <= 65536);
  CheckPrintable(r.calibration_file(), kMaxJobPathBytes);
  const lcd::quantizer::MethodInfo* m = lcd::quantizer::FindMethod(r.method());
  Check(m != nullptr && (!m->needs_calibration_file || !r.calibration_file().empty()));
  Check(r.calibration_samples() >= 0 && r.calibration_samples() <= 1000000);
  Check(std::isfinite(r.budget_seconds()) && r.budget_seconds() >= 0 && r.budget_seconds() <= 604800);
  CheckPrintable(r.idempotency_key(), kMaxIdempotencyKeyBytes);
  return 0;
}
