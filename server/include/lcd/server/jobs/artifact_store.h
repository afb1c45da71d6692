// The artifact store lcd-jobs publishes into and lcd-server watches:
//
//   <root>/<model>/<version>/           a published, verified artifact v1
//   <root>/<model>/<version>.partial/   a worker writing; never loaded
//
// Publishing is the only way a version directory appears: the partial
// directory is verified in full (runtime::Artifact::Open: every listed file's
// size and sha256, every tensor), every file and the directory are fsynced,
// it is renamed to its final name (atomic on one filesystem) and the model
// directory is fsynced. A crash at any point leaves either no version or a
// complete one. Leftover partial directories are removed at start-up.
//
// Thread safety: distinct (model, version) pairs may be used concurrently.
#ifndef LCD_SERVER_JOBS_ARTIFACT_STORE_H_
#define LCD_SERVER_JOBS_ARTIFACT_STORE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lcd::server::jobs {

class ArtifactStore {
 public:
  explicit ArtifactStore(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }

  // Creates <root>/<model>/<version>.partial/ afresh (an old one is removed)
  // and returns its path. InvalidArgument for a bad model name or version.
  absl::StatusOr<std::string> PreparePartial(const std::string& model, int64_t version) const;
  // Verifies, syncs and renames the partial directory to its final name;
  // returns the final path. The partial directory is removed when it fails
  // verification (the error names the file and the fault). AlreadyExists
  // when the version was published before.
  absl::StatusOr<std::string> Publish(const std::string& model, int64_t version) const;
  // Removes the partial directory of a failed or cancelled job (OK if absent).
  absl::Status Discard(const std::string& model, int64_t version) const;
  // Removes every <model>/*.partial directory; returns how many.
  absl::StatusOr<int> CleanPartials() const;
  // Published versions of `model`, ascending (empty when none).
  absl::StatusOr<std::vector<int64_t>> Versions(const std::string& model) const;
  std::string VersionDir(const std::string& model, int64_t version) const;

 private:
  std::string root_;
};

}  // namespace lcd::server::jobs

#endif  // LCD_SERVER_JOBS_ARTIFACT_STORE_H_
