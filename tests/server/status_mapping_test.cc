// absl::Status -> grpc::Status keeps code and message for every code.
#include "lcd/server/status_mapping.h"

#include "gtest/gtest.h"

namespace lcd::server {
namespace {

TEST(StatusMapping, EveryCodeMapsOneToOne) {
  for (int code = 1; code <= 16; ++code) {
    absl::Status s(static_cast<absl::StatusCode>(code), "message " + std::to_string(code));
    grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(g.error_message(), "message " + std::to_string(code));
    absl::Status back = FromGrpcStatus(g);
    EXPECT_EQ(back, s);
  }
}

TEST(StatusMapping, OkIsOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(StatusMapping, NamedCodes) {
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("m")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("q")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(StatusMapping, MessagesAreValidUtf8AndCapped) {
  grpc::Status g = ToGrpcStatus(absl::InvalidArgumentError(std::string("bad \xff byte")));
  EXPECT_EQ(g.error_message(), "bad \xEF\xBF\xBD byte");
  g = ToGrpcStatus(absl::NotFoundError(std::string(100000, 'n')));
  EXPECT_LE(g.error_message().size(), kMaxStatusMessageBytes);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace lcd::server
