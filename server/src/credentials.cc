#include "lcd/server/credentials.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace lcd::server {
namespace {

absl::StatusOr<std::string> ReadSmallFile(absl::string_view setting, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::FailedPreconditionError(absl::StrCat(setting, ": cannot read '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::FailedPreconditionError(absl::StrCat(setting, ": cannot read '", path, "'"));
  return ss.str();
}

}  // namespace

absl::StatusOr<std::string> LoadTokenFile(absl::string_view setting, const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(setting, path);
  if (!text.ok()) return text.status();
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.size() < kMinTokenBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(setting, ": the token must have at least ", kMinTokenBytes, " characters"));
  }
  return token;
}

bool TokenMatches(absl::string_view presented, absl::string_view expected) {
  unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
  unsigned int na = 0, nb = 0;
  if (EVP_Digest(presented.data(), presented.size(), a, &na, EVP_sha256(), nullptr) != 1 ||
      EVP_Digest(expected.data(), expected.size(), b, &nb, EVP_sha256(), nullptr) != 1 || na != nb) {
    return false;
  }
  return CRYPTO_memcmp(a, b, na) == 0;
}

absl::Status CheckBearer(const grpc::ServerContextBase& ctx, const std::string& token, absl::string_view service) {
  const auto& metadata = ctx.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(absl::StrCat(service, " needs 'authorization: Bearer <token>'"));
  }
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(value, kBearer) || !TokenMatches(value.substr(kBearer.size()), token)) {
    return absl::UnauthenticatedError(absl::StrCat("invalid token for ", service));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFiles(const std::string& cert_file,
                                                                                    const std::string& key_file) {
  if (cert_file.empty() && key_file.empty()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert = ReadSmallFile("tls_cert_file", cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadSmallFile("tls_key_file", key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace lcd::server
