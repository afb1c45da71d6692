// Confining client-supplied paths to configured root directories: the one
// check behind ModelService.LoadModel (model roots) and lcd-jobs' SubmitJob
// (model and data roots), and the filesystem-error helpers they share.
//
// A relative path is taken against the first root. The path must lie under
// a root both lexically (so a path outside every root is never touched: it
// gets the same answer whether it exists or not) and after resolving every
// symlink (so a link cannot lead out). Malformed paths (empty, too long, NUL,
// `..`, invalid UTF-8; ValidateModelPath) are InvalidArgument; outside the
// roots PermissionDenied; missing NotFound; wrong kind, a symlink loop or no
// roots at all FailedPrecondition. Messages show the path cut to valid UTF-8.
#ifndef LCD_SERVER_ROOTS_H_
#define LCD_SERVER_ROOTS_H_

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lcd::server {

enum class PathKind { kDirectory, kFile };

// The canonical path of `path` under one of `roots`. `what` names the thing
// ("model path", "calibration file") and `roots_name` the roots ("model
// roots") in errors.
absl::StatusOr<std::string> ResolveUnderRoots(const std::vector<std::string>& roots, const std::string& path,
                                              PathKind kind, absl::string_view what, absl::string_view roots_name);

// The roots with every symlink resolved; a root that does not resolve is
// left out (nothing can be under it).
std::vector<std::filesystem::path> CanonicalRoots(const std::vector<std::string>& configured);
// `p` (normalized, absolute) is one of `roots` or lies below one, by whole
// path components.
bool UnderAnyRoot(const std::filesystem::path& p, const std::vector<std::filesystem::path>& roots);
// A path for an error message: its start, as valid UTF-8.
std::string ShowPath(const std::filesystem::path& p);
// A filesystem error on `path` as a Status with the fitting code.
absl::Status FsError(const std::error_code& ec, absl::string_view what, const std::filesystem::path& path);

}  // namespace lcd::server

#endif  // LCD_SERVER_ROOTS_H_
