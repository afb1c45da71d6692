// Confining client-supplied paths to configured root directories: the one
// check behind ModelService.LoadModel (model roots) and lcd-jobs' SubmitJob
// (model and data roots).
//
// A relative path is taken against the first root. The path must lie under
// a root both lexically (so a path outside every root is never touched) and
// after resolving every symlink (so a link cannot lead out). `..`, NUL bytes
// and over-long paths are refused. Errors say which and name the path (cut
// to valid UTF-8): InvalidArgument (malformed), PermissionDenied (outside
// the roots), NotFound (does not exist), FailedPrecondition (wrong kind,
// symlink loop, or no roots configured).
#ifndef LCD_SERVER_ROOTS_H_
#define LCD_SERVER_ROOTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lcd::server {

enum class PathKind { kDirectory, kFile };

// The canonical path of `path` under one of `roots`. `what` names the thing
// in errors ("model directory", "calibration file").
absl::StatusOr<std::string> ResolveUnderRoots(const std::vector<std::string>& roots, const std::string& path,
                                              PathKind kind, const char* what);

}  // namespace lcd::server

#endif  // LCD_SERVER_ROOTS_H_
