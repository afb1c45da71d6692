#include "lcd/server/roots.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace lcd::server {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxPathBytes = 4096;

// The start of a path, as printable text for an error message.
std::string ShowPath(const std::string& p) {
  std::string out;
  for (unsigned char c : p.substr(0, 256)) out.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?');
  return p.size() > 256 ? out + "..." : out;
}

absl::Status FsError(const std::error_code& ec, const char* what, const std::string& path) {
  const std::string msg = absl::StrCat(what, " '", ShowPath(path), "': ", ec.message());
  if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) {
    return absl::NotFoundError(msg);
  }
  if (ec == std::errc::filename_too_long) return absl::InvalidArgumentError(msg);
  if (ec == std::errc::permission_denied) return absl::PermissionDeniedError(msg);
  return absl::FailedPreconditionError(msg);  // ELOOP and the rest
}

// `p` (normalized, absolute) is `root` or lies below it, by whole components.
bool IsUnder(const fs::path& p, const fs::path& root) {
  auto [r, q] = std::mismatch(root.begin(), root.end(), p.begin(), p.end());
  return r == root.end();
}

// "/a/b/" -> "/a/b" (a trailing separator is an empty last component).
fs::path Normalized(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (!n.has_filename() && n.has_relative_path()) n = n.parent_path();
  return n;
}

bool UnderAny(const fs::path& p, const std::vector<fs::path>& roots) {
  return std::any_of(roots.begin(), roots.end(), [&](const fs::path& r) { return IsUnder(p, r); });
}

}  // namespace

absl::StatusOr<std::string> ResolveUnderRoots(const std::vector<std::string>& roots, const std::string& path,
                                              PathKind kind, const char* what) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " path is empty"));
  if (path.size() > kMaxPathBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " path is longer than ", kMaxPathBytes, " bytes"));
  }
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " path contains a NUL byte"));
  }
  for (const fs::path& part : fs::path(path)) {
    if (part == "..") return absl::InvalidArgumentError(absl::StrCat(what, " path '", ShowPath(path), "' has '..'"));
  }
  if (roots.empty()) return absl::FailedPreconditionError(absl::StrCat("no roots are configured for ", what, "s"));
  const std::string outside = absl::StrCat(what, " '", ShowPath(path), "' is outside the configured roots");
  fs::path p(path);
  if (p.is_relative()) p = fs::path(roots.front()) / p;
  p = Normalized(p);
  std::vector<fs::path> lexical, canonical;
  for (const std::string& r : roots) {
    lexical.push_back(Normalized(r));
    std::error_code ec;
    fs::path c = fs::canonical(r, ec);
    if (!ec) canonical.push_back(std::move(c));  // a root that does not resolve holds nothing
  }
  if (!UnderAny(p, lexical)) return absl::PermissionDeniedError(outside);
  std::error_code ec;
  const fs::path resolved = fs::canonical(p, ec);
  if (ec) return FsError(ec, what, path);
  if (!UnderAny(resolved, canonical)) return absl::PermissionDeniedError(outside);
  const bool ok = kind == PathKind::kDirectory ? fs::is_directory(resolved, ec) : fs::is_regular_file(resolved, ec);
  if (ec) return FsError(ec, what, path);
  if (!ok) {
    return absl::FailedPreconditionError(absl::StrCat(what, " '", ShowPath(path), "' is not a ",
                                                      kind == PathKind::kDirectory ? "directory" : "regular file"));
  }
  return resolved.string();
}

}  // namespace lcd::server
