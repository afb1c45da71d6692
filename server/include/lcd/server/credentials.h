// What both daemons need to guard their gRPC port: bearer tokens read from
// files and checked in constant time, and TLS credentials from PEM files.
#ifndef LCD_SERVER_CREDENTIALS_H_
#define LCD_SERVER_CREDENTIALS_H_

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lcd::server {

inline constexpr size_t kMinTokenBytes = 16;

// The token in `path` (surrounding whitespace trimmed). `setting` names the
// setting in errors: FailedPrecondition when unreadable, InvalidArgument when
// shorter than kMinTokenBytes.
absl::StatusOr<std::string> LoadTokenFile(absl::string_view setting, const std::string& path);

// SHA-256 of both sides compared with CRYPTO_memcmp: the time taken depends
// on neither the token's content nor its length.
bool TokenMatches(absl::string_view presented, absl::string_view expected);

// OK when the call carries "authorization: Bearer <token>"; Unauthenticated
// (naming `service`) otherwise.
absl::Status CheckBearer(const grpc::ServerContextBase& ctx, const std::string& token, absl::string_view service);

// TLS server credentials from PEM files, or insecure ones when both are empty.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFiles(const std::string& cert_file,
                                                                                    const std::string& key_file);

}  // namespace lcd::server

#endif  // LCD_SERVER_CREDENTIALS_H_
