#include "lcd/server/roots.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/server/request_validation.h"

namespace lcd::server {
namespace {

namespace fs = std::filesystem;

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

}  // namespace

std::string ShowPath(const fs::path& p) { return SanitizeUtf8(p.string(), 256); }

absl::Status FsError(const std::error_code& ec, absl::string_view what, const fs::path& path) {
  const std::string msg = absl::StrCat(what, " '", ShowPath(path), "': ", ec.message());
  if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) {
    return absl::NotFoundError(msg);
  }
  if (ec == std::errc::filename_too_long) return absl::InvalidArgumentError(msg);
  if (ec == std::errc::permission_denied) return absl::PermissionDeniedError(msg);
  return absl::FailedPreconditionError(msg);  // ELOOP and the rest.
}

std::vector<fs::path> CanonicalRoots(const std::vector<std::string>& configured) {
  std::vector<fs::path> roots;
  for (const std::string& r : configured) {
    std::error_code ec;
    fs::path c = fs::canonical(r, ec);
    if (!ec) roots.push_back(std::move(c));
  }
  return roots;
}

bool UnderAnyRoot(const fs::path& p, const std::vector<fs::path>& roots) {
  return std::any_of(roots.begin(), roots.end(), [&](const fs::path& r) { return IsUnder(p, r); });
}

absl::StatusOr<std::string> ResolveUnderRoots(const std::vector<std::string>& roots, const std::string& path,
                                              PathKind kind, absl::string_view what, absl::string_view roots_name) {
  LCD_RETURN_IF_ERROR(ValidateModelPath(path));
  if (roots.empty()) return absl::FailedPreconditionError(absl::StrCat("no ", roots_name, " are configured"));
  const std::string outside = absl::StrCat(what, " '", ShowPath(path), "' is outside the ", roots_name);
  fs::path p(path);
  if (p.is_relative()) p = fs::path(roots.front()) / p;
  p = Normalized(p);
  // Lexically first: a path outside every root is never touched.
  std::vector<fs::path> configured;
  for (const std::string& r : roots) configured.push_back(Normalized(r));
  if (!UnderAnyRoot(p, configured)) return absl::PermissionDeniedError(outside);
  std::error_code ec;
  const fs::path resolved = fs::canonical(p, ec);
  if (ec) return FsError(ec, what, path);
  if (!UnderAnyRoot(resolved, CanonicalRoots(roots))) return absl::PermissionDeniedError(outside);
  const bool ok = kind == PathKind::kDirectory ? fs::is_directory(resolved, ec) : fs::is_regular_file(resolved, ec);
  if (ec) return FsError(ec, what, path);
  if (!ok) {
    return absl::FailedPreconditionError(absl::StrCat(what, " '", ShowPath(path), "' is not a ",
                                                      kind == PathKind::kDirectory ? "directory" : "regular file"));
  }
  return resolved.string();
}

}  // namespace lcd::server
