#include "lcd/base/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace lcd {
namespace {

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", path);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

std::string ParentDir(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

}  // namespace

absl::Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open directory", dir);
  absl::Status status;
  if (::fsync(fd) != 0) status = ErrnoError("fsync", dir);
  ::close(fd);
  return status;
}

absl::Status WriteFileAtomic(const std::string& path, const std::vector<std::string_view>& chunks) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  absl::Status status;
  for (std::string_view c : chunks) {
    if (!status.ok()) break;
    status = WriteAll(fd, c.data(), c.size(), tmp);
  }
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoError("fsync", tmp);
  if (::close(fd) != 0 && status.ok()) status = ErrnoError("close", tmp);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) status = ErrnoError("rename to " + path, tmp);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  return SyncDir(ParentDir(path));
}

}  // namespace lcd
