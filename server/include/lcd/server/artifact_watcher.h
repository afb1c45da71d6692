// Watches the artifact store that lcd-jobs publishes into
// (<root>/<model>/<version>/, see lcd/server/jobs/artifact_store.h) and hands
// each new version of a followed model to `load` (lcd-server: a hot swap
// through the model registry). inotify wakes it when a version directory is
// renamed into place; a periodic rescan covers filesystems without inotify
// (NFS, some CSI volumes) and anything missed.
//
// Per model: followed (the default for a model served from the store: each
// newer version is loaded) or pinned (left alone). A version whose load
// fails is remembered and not retried; the next newer version is. Directories
// ending in ".partial" and anything not a positive integer are ignored.
//
// Thread safety: all methods may be called from any thread; `load` runs on
// the watcher's thread, one call at a time.
#ifndef LCD_SERVER_ARTIFACT_WATCHER_H_
#define LCD_SERVER_ARTIFACT_WATCHER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lcd::server {

// Published versions of `model` under `root`, ascending; empty when none.
absl::StatusOr<std::vector<int64_t>> PublishedVersions(const std::string& root, const std::string& model);

class ArtifactWatcher {
 public:
  // Loads `dir` as model `name`, version `version`; returns how it went.
  using LoadFn = std::function<absl::Status(const std::string& name, const std::string& dir, int64_t version)>;

  ArtifactWatcher(std::string root, absl::Duration rescan_interval, LoadFn load);
  ~ArtifactWatcher();  // Stop()

  // Starts the watcher thread (inotify when available, else rescans only).
  absl::Status Start();
  void Stop();

  // Follow `name`: load every version newer than `current` (0: none loaded).
  void Follow(const std::string& name, int64_t current);
  // Stop following `name` (it stays on whatever version it has).
  void Pin(const std::string& name, int64_t current);
  bool using_inotify() const { return inotify_fd_ >= 0; }

 private:
  struct ModelState {
    bool follow = true;
    int64_t current = 0;      // version loaded by or reported to the watcher
    int64_t last_failed = 0;  // newest version whose load failed
  };

  void Loop();
  void Scan();
  void WatchModelDirs() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string root_;
  const absl::Duration rescan_interval_;
  const LoadFn load_;
  mutable absl::Mutex mu_;
  std::map<std::string, ModelState> models_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> watched_dirs_ ABSL_GUARDED_BY(mu_);  // model -> inotify watch descriptor
  absl::Mutex scan_mu_;  // one Scan at a time (loads are serialised)
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int inotify_fd_ = -1;
  std::thread thread_;
};

}  // namespace lcd::server

#endif  // LCD_SERVER_ARTIFACT_WATCHER_H_
