// Durable file writes: what the artifact writer, the safetensors writer and
// (later) the job store need so that a crash never leaves a half-written
// file under its final name.
#ifndef LCD_BASE_FILE_UTIL_H_
#define LCD_BASE_FILE_UTIL_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace lcd {

// Writes the concatenation of `chunks` to `path` atomically: into path.tmp,
// fsync, rename over `path`, fsync the parent directory. On failure the
// temporary file is removed and `path` is untouched. Internal (with errno's
// text and the path) on I/O errors, including a full disk.
absl::Status WriteFileAtomic(const std::string& path, const std::vector<std::string_view>& chunks);

// fsyncs a directory, making renames and creations inside it durable.
absl::Status SyncDir(const std::string& dir);

}  // namespace lcd

#endif  // LCD_BASE_FILE_UTIL_H_
