#include "lcd/server/jobs/artifact_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lcd/base/file_util.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/artifact.h"
#include "lcd/server/artifact_watcher.h"
#include "lcd/server/request_validation.h"

namespace lcd::server::jobs {
namespace {

namespace fs = std::filesystem;

absl::Status FsError(const std::string& what, const std::string& path, const std::error_code& ec) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", ec.message()));
}

absl::Status CheckKey(const std::string& model, int64_t version) {
  LCD_RETURN_IF_ERROR(ValidateModelName(model, "model"));
  if (version < 1) return absl::InvalidArgumentError(absl::StrCat("version must be >= 1, got ", version));
  return absl::OkStatus();
}

absl::Status FsyncFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", path, ": ", std::strerror(err)));
  return absl::OkStatus();
}

}  // namespace

std::string ArtifactStore::VersionDir(const std::string& model, int64_t version) const {
  return absl::StrCat(root_, "/", model, "/", version);
}

absl::StatusOr<std::string> ArtifactStore::PreparePartial(const std::string& model, int64_t version) const {
  LCD_RETURN_IF_ERROR(CheckKey(model, version));
  const std::string partial = VersionDir(model, version) + ".partial";
  std::error_code ec;
  fs::remove_all(partial, ec);
  if (ec) return FsError("cannot remove", partial, ec);
  fs::create_directories(partial, ec);
  if (ec) return FsError("cannot create", partial, ec);
  return partial;
}

absl::StatusOr<std::string> ArtifactStore::Publish(const std::string& model, int64_t version) const {
  LCD_RETURN_IF_ERROR(CheckKey(model, version));
  const std::string final_dir = VersionDir(model, version);
  const std::string partial = final_dir + ".partial";
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(final_dir, " is already published"));
  }
  absl::StatusOr<std::unique_ptr<runtime::Artifact>> artifact = runtime::Artifact::Open(partial);
  if (!artifact.ok()) {
    fs::remove_all(partial, ec);
    return absl::Status(artifact.status().code(),
                        absl::StrCat("refusing to publish ", model, " version ", version, ": ",
                                     artifact.status().message()));
  }
  // Every file the manifest lists, the manifest itself, then the directory.
  for (const runtime::ArtifactFile& f : (*artifact)->manifest().files) {
    LCD_RETURN_IF_ERROR(FsyncFile(partial + "/" + f.path));
  }
  LCD_RETURN_IF_ERROR(FsyncFile(partial + "/manifest.json"));
  artifact->reset();
  LCD_RETURN_IF_ERROR(SyncDir(partial));
  fs::rename(partial, final_dir, ec);
  if (ec) return FsError("cannot rename to", final_dir, ec);
  LCD_RETURN_IF_ERROR(SyncDir(absl::StrCat(root_, "/", model)));
  return final_dir;
}

absl::Status ArtifactStore::Discard(const std::string& model, int64_t version) const {
  LCD_RETURN_IF_ERROR(CheckKey(model, version));
  const std::string partial = VersionDir(model, version) + ".partial";
  std::error_code ec;
  fs::remove_all(partial, ec);
  if (ec) return FsError("cannot remove", partial, ec);
  return absl::OkStatus();
}

absl::StatusOr<int> ArtifactStore::CleanPartials() const {
  std::error_code ec;
  int removed = 0;
  if (!fs::exists(root_, ec)) return 0;
  for (fs::directory_iterator m(root_, ec), end; !ec && m != end; m.increment(ec)) {
    if (!m->is_directory(ec) || m->is_symlink(ec)) continue;
    for (fs::directory_iterator v(m->path(), ec); !ec && v != end; v.increment(ec)) {
      if (absl::EndsWith(v->path().filename().string(), ".partial")) {
        fs::remove_all(v->path(), ec);
        if (ec) return FsError("cannot remove", v->path().string(), ec);
        ++removed;
      }
    }
  }
  if (ec) return FsError("cannot scan", root_, ec);
  return removed;
}

absl::StatusOr<std::vector<int64_t>> ArtifactStore::Versions(const std::string& model) const {
  LCD_RETURN_IF_ERROR(ValidateModelName(model, "model"));
  return PublishedVersions(root_, model);
}

}  // namespace lcd::server::jobs
