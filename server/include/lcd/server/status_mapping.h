// The one place that turns an absl::Status into a grpc::Status. Abseil's
// status codes are numerically the gRPC codes (both follow google.rpc.Code),
// so the mapping is 1:1 and keeps the message. No other file of the server
// constructs a grpc::Status from an error.
#ifndef LCD_SERVER_STATUS_MAPPING_H_
#define LCD_SERVER_STATUS_MAPPING_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace lcd::server {

// Same code, same message. OK maps to grpc::Status::OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The inverse, for clients and tests; unknown codes become UNKNOWN.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace lcd::server

#endif  // LCD_SERVER_STATUS_MAPPING_H_
