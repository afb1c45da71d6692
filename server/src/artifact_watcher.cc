#include "lcd/server/artifact_watcher.h"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lcd/base/logging.h"

namespace lcd::server {
namespace {

namespace fs = std::filesystem;

}  // namespace

absl::StatusOr<std::vector<int64_t>> PublishedVersions(const std::string& root, const std::string& model) {
  std::vector<int64_t> out;
  const fs::path dir = fs::path(root) / model;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (fs::directory_iterator v(dir, ec), end; !ec && v != end; v.increment(ec)) {
    int64_t n = 0;
    if (v->is_directory(ec) && !v->is_symlink(ec) && absl::SimpleAtoi(v->path().filename().string(), &n) && n > 0) {
      out.push_back(n);
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot scan ", dir.string(), ": ", ec.message()));
  std::sort(out.begin(), out.end());
  return out;
}

ArtifactWatcher::ArtifactWatcher(std::string root, absl::Duration rescan_interval, LoadFn load)
    : root_(std::move(root)), rescan_interval_(rescan_interval), load_(std::move(load)) {}

ArtifactWatcher::~ArtifactWatcher() { Stop(); }

absl::Status ArtifactWatcher::Start() {
  inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ >= 0 && inotify_add_watch(inotify_fd_, root_.c_str(), IN_CREATE | IN_MOVED_TO | IN_ONLYDIR) < 0) {
    LCD_LOG(WARNING) << "artifact watcher: no inotify on " << root_ << " (" << std::strerror(errno)
                     << "); rescanning every " << rescan_interval_;
    close(inotify_fd_);
    inotify_fd_ = -1;
  }
  {
    absl::MutexLock lock(&mu_);
    WatchModelDirs();
  }
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void ArtifactWatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (inotify_fd_ >= 0) close(inotify_fd_);
  inotify_fd_ = -1;
}

void ArtifactWatcher::Follow(const std::string& name, int64_t current) {
  {
    absl::MutexLock lock(&mu_);
    ModelState& m = models_[name];
    m.follow = true;
    m.current = std::max(m.current, current);
    WatchModelDirs();
  }
}

void ArtifactWatcher::Pin(const std::string& name, int64_t current) {
  absl::MutexLock lock(&mu_);
  ModelState& m = models_[name];
  m.follow = false;
  m.current = current;
}

void ArtifactWatcher::WatchModelDirs() {
  if (inotify_fd_ < 0) return;
  for (const auto& [name, m] : models_) {
    if (watched_dirs_.count(name) != 0) continue;
    const std::string dir = (fs::path(root_) / name).string();
    const int wd = inotify_add_watch(inotify_fd_, dir.c_str(), IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
    if (wd >= 0) watched_dirs_[name] = wd;  // else: the model dir does not exist yet; the root watch sees it
  }
}

void ArtifactWatcher::Scan() {
  absl::MutexLock scan_lock(&scan_mu_);
  std::map<std::string, ModelState> snapshot;
  {
    absl::MutexLock lock(&mu_);
    WatchModelDirs();  // model directories created since
    snapshot = models_;
  }
  for (const auto& [name, m] : snapshot) {
    if (!m.follow) continue;
    absl::StatusOr<std::vector<int64_t>> versions = PublishedVersions(root_, name);
    if (!versions.ok()) {
      LCD_LOG(WARNING) << "artifact watcher: " << versions.status();
      continue;
    }
    if (versions->empty()) continue;
    const int64_t newest = versions->back();
    if (newest <= m.current || newest <= m.last_failed) continue;
    const std::string dir = (fs::path(root_) / name / std::to_string(newest)).string();
    LCD_LOG(INFO) << "artifact watcher: " << name << " version " << newest << " appeared; loading " << dir;
    const absl::Status st = load_(name, dir, newest);
    absl::MutexLock lock(&mu_);
    ModelState& cur = models_[name];
    if (st.ok()) {
      cur.current = std::max(cur.current, newest);
    } else {
      cur.last_failed = newest;
      LCD_LOG(ERROR) << "artifact watcher: " << name << " version " << newest << " refused: " << st;
    }
  }
}

void ArtifactWatcher::Loop() {
  absl::Time next_scan = absl::Now();  // scan once at start
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
    }
    bool event = false;
    if (inotify_fd_ >= 0) {
      pollfd p{inotify_fd_, POLLIN, 0};
      if (poll(&p, 1, 100) > 0) {
        char buf[4096];
        while (read(inotify_fd_, buf, sizeof(buf)) > 0) {
        }
        event = true;
      }
    } else {
      absl::SleepFor(absl::Milliseconds(100));
    }
    if (event || absl::Now() >= next_scan) {
      Scan();
      next_scan = absl::Now() + rescan_interval_;
    }
  }
}

}  // namespace lcd::server
