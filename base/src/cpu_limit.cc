#include "lcd/base/cpu_limit.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace lcd {
namespace {

// Debian's Abseil has its own string_view type, distinct from std's.
using absl::string_view;

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "200000 100000" (v2 cpu.max): quota / period; nullopt for "max".
std::optional<double> ParseCpuMax(string_view text) {
  std::vector<string_view> f = absl::StrSplit(absl::StripAsciiWhitespace(text), ' ', absl::SkipEmpty());
  if (f.empty() || f[0] == "max") return std::nullopt;
  double quota = 0, period = 100000;
  if (!absl::SimpleAtod(f[0], &quota) || quota <= 0) return std::nullopt;
  if (f.size() > 1 && (!absl::SimpleAtod(f[1], &period) || period <= 0)) return std::nullopt;
  return quota / period;
}

std::optional<double> ReadV1Quota(const std::string& dir) {
  const std::optional<std::string> q = ReadSmallFile(dir + "/cpu.cfs_quota_us");
  const std::optional<std::string> p = ReadSmallFile(dir + "/cpu.cfs_period_us");
  double quota = 0, period = 0;
  if (!q || !p || !absl::SimpleAtod(absl::StripAsciiWhitespace(*q), &quota) ||
      !absl::SimpleAtod(absl::StripAsciiWhitespace(*p), &period) || quota <= 0 || period <= 0) {
    return std::nullopt;
  }
  return quota / period;
}

// The directories from `base + path` up to `base` itself.
std::vector<std::string> SelfAndAncestors(const std::string& base, string_view path) {
  std::string p(absl::StripSuffix(path, "/"));
  std::vector<std::string> dirs;
  for (;;) {
    dirs.push_back(base + p);
    const size_t slash = p.rfind('/');
    if (p.empty() || slash == std::string::npos) break;
    p.resize(slash);
  }
  return dirs;
}

void TakeMin(std::optional<double>& best, std::optional<double> q) {
  if (q && (!best || *q < *best)) best = q;
}

}  // namespace

std::optional<double> CgroupCpuQuota(std::string_view proc_self_cgroup, const std::string& cgroup_root) {
  std::optional<double> best;
  const string_view text(proc_self_cgroup.data(), proc_self_cgroup.size());
  for (string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    // hierarchy-id:controllers:path
    std::vector<string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    if (f[0] == "0" && f[1].empty()) {  // cgroup v2 (unified)
      for (const std::string& dir : SelfAndAncestors(cgroup_root, f[2])) {
        const std::optional<std::string> text = ReadSmallFile(dir + "/cpu.max");
        if (text) TakeMin(best, ParseCpuMax(*text));
      }
      continue;
    }
    std::vector<string_view> controllers = absl::StrSplit(f[1], ',');
    if (std::find(controllers.begin(), controllers.end(), "cpu") == controllers.end()) continue;
    // v1: the cpu controller is mounted as "cpu", or jointly as "cpu,cpuacct".
    for (const std::string mount : {std::string(f[1]), std::string("cpu"), std::string("cpu,cpuacct")}) {
      for (const std::string& dir : SelfAndAncestors(cgroup_root + "/" + mount, f[2])) {
        TakeMin(best, ReadV1Quota(dir));
      }
    }
  }
  return best;
}

int AvailableCpus() {
  int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = std::max(1, CPU_COUNT(&set));
  const std::optional<std::string> self = ReadSmallFile("/proc/self/cgroup");
  if (self) {
    const std::optional<double> quota = CgroupCpuQuota(*self, "/sys/fs/cgroup");
    if (quota) cpus = std::min(cpus, std::max(1, static_cast<int>(std::ceil(*quota))));
  }
  return cpus;
}

}  // namespace lcd
