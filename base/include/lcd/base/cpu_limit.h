// How many CPUs this process may really use: the smaller of its scheduler
// affinity and its cgroup CPU quota. In a container with a CPU limit
// (Kubernetes `resources.limits.cpu`) hardware_concurrency() reports the
// host's cores, and a thread pool sized from it oversubscribes the quota: the
// kernel throttles the whole process for the rest of each period.
#ifndef LCD_BASE_CPU_LIMIT_H_
#define LCD_BASE_CPU_LIMIT_H_

#include <optional>
#include <string>
#include <string_view>

namespace lcd {

// The CPU quota (in CPUs, e.g. 1.5) that applies to a process in the cgroup
// named by `proc_self_cgroup` (the text of /proc/self/cgroup), with the
// cgroup filesystem mounted at `cgroup_root` (normally /sys/fs/cgroup).
// cgroup v2: the smallest `cpu.max` quota/period on the path from the
// process's cgroup up to the root; v1: cpu.cfs_quota_us / cpu.cfs_period_us
// of the cpu controller's cgroup (and its ancestors). nullopt when no quota
// is set ("max", -1) or nothing can be read.
std::optional<double> CgroupCpuQuota(std::string_view proc_self_cgroup, const std::string& cgroup_root);

// min(CPUs in the affinity mask, ceil(cgroup quota)), at least 1.
int AvailableCpus();

}  // namespace lcd

#endif  // LCD_BASE_CPU_LIMIT_H_
