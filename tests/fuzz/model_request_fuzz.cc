// The request validation of every ModelService RPC (and Generate's), on the
// decoded proto: the first byte picks the request type, the rest is parsed
// as that message. Whatever a validator accepts must satisfy the documented
// rules, and SanitizeUtf8 must always return bounded, valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "google/protobuf/stubs/logging.h"
#include "lcd/server/request_validation.h"

namespace {

using lcd::server::ValidateUtf8;

void Check(bool ok) {
  if (!ok) std::abort();
}

// A name a validator accepted.
void CheckName(const std::string& name) {
  Check(!name.empty() && name.size() <= lcd::server::kMaxModelNameBytes);
  for (char c : name) {
    Check((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-');
  }
}

void CheckMessage(const absl::Status& st) {
  if (st.ok()) return;
  Check(st.code() == absl::StatusCode::kInvalidArgument);
  // Messages echo at most kMaxEchoBytes of client text.
  Check(st.message().size() < 512);
}

}  // namespace

// Protobuf logs every string field with invalid UTF-8 it refuses to parse;
// that noise would drown the fuzzer's output (and slow it down).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0: {
      lcd::v1::LoadModelRequest r;
      if (!r.ParseFromString(payload)) break;
      const absl::Status st = lcd::server::ValidateLoadModelRequest(r);
      CheckMessage(st);
      if (st.ok() && (r.artifact_version() > 0 || r.follow_latest())) {
        // From the artifact store: exactly one selector, no path or label.
        CheckName(r.name());
        Check((r.artifact_version() > 0) != r.follow_latest());
        Check(r.path().empty() && r.version().empty());
      } else if (st.ok()) {
        CheckName(r.name());
        Check(r.artifact_version() == 0);
        const std::string& p = r.path();
        Check(!p.empty() && p.size() <= lcd::server::kMaxModelPathBytes);
        Check(p.find('\0') == std::string::npos);
        Check(ValidateUtf8(p, "path").ok() && ValidateUtf8(r.version(), "version").ok());
        size_t start = 0;
        for (;;) {
          const size_t end = p.find('/', start);
          const std::string_view part(p.data() + start,
                                      (end == std::string::npos ? p.size() : end) - start);
          Check(part.size() <= lcd::server::kMaxPathComponentBytes && part != "..");
          if (end == std::string::npos) break;
          start = end + 1;
        }
      }
      break;
    }
    case 1: {
      lcd::v1::UnloadModelRequest r;
      if (!r.ParseFromString(payload)) break;
      const absl::Status st = lcd::server::ValidateUnloadModelRequest(r);
      CheckMessage(st);
      if (st.ok()) CheckName(r.name());
      break;
    }
    case 2: {
      lcd::v1::GetModelStatusRequest r;
      if (!r.ParseFromString(payload)) break;
      const absl::Status st = lcd::server::ValidateGetModelStatusRequest(r);
      CheckMessage(st);
      if (st.ok()) CheckName(r.name());
      break;
    }
    case 3: {
      lcd::v1::GenerateRequest r;
      if (!r.ParseFromString(payload)) break;
      const absl::Status st = lcd::server::ValidateGenerateRequest(r);
      CheckMessage(st);
      if (st.ok()) CheckName(r.model());
      break;
    }
    case 4: {
      lcd::v1::RollbackModelRequest r;
      if (!r.ParseFromString(payload)) break;
      const absl::Status st = lcd::server::ValidateRollbackModelRequest(r);
      CheckMessage(st);
      if (st.ok()) CheckName(r.name());
      break;
    }
  }
  // The sanitizer on the raw bytes, at a cap taken from the input.
  const size_t cap = 3 + data[0] % 64;
  const std::string out = lcd::server::SanitizeUtf8(payload, cap);
  Check(out.size() <= cap && ValidateUtf8(out, "out").ok());
  if (payload.size() <= cap && ValidateUtf8(payload, "in").ok()) Check(out == payload);
  return 0;
}
