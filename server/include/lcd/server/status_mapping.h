// The one place that turns an absl::Status into a grpc::Status. Abseil's
// status codes are numerically the gRPC codes (both follow google.rpc.Code),
// so the mapping is 1:1 and keeps the message. No other file of the server
// constructs a grpc::Status from an error.
#ifndef LCD_SERVER_STATUS_MAPPING_H_
#define LCD_SERVER_STATUS_MAPPING_H_

#include <grpcpp/support/status.h>

#include <cstddef>

#include "absl/status/status.h"

namespace lcd::server {

// Longest status message sent to a client.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Same code, same message (made valid UTF-8 and cut to
// kMaxStatusMessageBytes by SanitizeUtf8). OK maps to grpc::Status::OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The inverse, for clients and tests; unknown codes become UNKNOWN.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace lcd::server

#endif  // LCD_SERVER_STATUS_MAPPING_H_
