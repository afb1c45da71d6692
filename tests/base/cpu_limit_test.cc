// CgroupCpuQuota against real files laid out as the kernel lays out cgroup
// v2 and v1 hierarchies (in a temporary directory), and AvailableCpus on
// this machine.
#include "lcd/base/cpu_limit.h"

#include <sched.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace lcd {
namespace {

namespace fs = std::filesystem;

class CgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("cgroup_" + std::to_string(::getpid()) + "_" +
                                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void Write(const std::string& rel, const std::string& text) {
    const fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  fs::path root_;
};

TEST_F(CgroupTest, V2QuotaOfOwnCgroup) {
  Write("kubepods/pod1/ctr/cpu.max", "150000 100000\n");
  EXPECT_DOUBLE_EQ(*CgroupCpuQuota("0::/kubepods/pod1/ctr\n", root_.string()), 1.5);
}

TEST_F(CgroupTest, V2TightestAncestorWins) {
  Write("cpu.max", "max 100000\n");
  Write("a/cpu.max", "50000 100000\n");  // the parent limits harder
  Write("a/b/cpu.max", "400000 100000\n");
  EXPECT_DOUBLE_EQ(*CgroupCpuQuota("0::/a/b\n", root_.string()), 0.5);
}

TEST_F(CgroupTest, V2UnlimitedOrMissingIsNullopt) {
  Write("cpu.max", "max 100000\n");
  EXPECT_FALSE(CgroupCpuQuota("0::/\n", root_.string()).has_value());
  EXPECT_FALSE(CgroupCpuQuota("0::/nowhere\n", root_.string()).has_value());
  Write("bad/cpu.max", "lots 100000\n");
  EXPECT_FALSE(CgroupCpuQuota("0::/bad\n", root_.string()).has_value());
  EXPECT_FALSE(CgroupCpuQuota("", root_.string()).has_value());
}

TEST_F(CgroupTest, V1CpuController) {
  Write("cpu,cpuacct/docker/x/cpu.cfs_quota_us", "300000\n");
  Write("cpu,cpuacct/docker/x/cpu.cfs_period_us", "100000\n");
  const std::string self = "4:memory:/docker/x\n3:cpu,cpuacct:/docker/x\n1:name=systemd:/docker/x\n";
  EXPECT_DOUBLE_EQ(*CgroupCpuQuota(self, root_.string()), 3.0);
  // Unlimited v1 quota is -1.
  Write("cpu/y/cpu.cfs_quota_us", "-1\n");
  Write("cpu/y/cpu.cfs_period_us", "100000\n");
  EXPECT_FALSE(CgroupCpuQuota("2:cpu:/y\n", root_.string()).has_value());
}

TEST(AvailableCpusTest, WithinAffinityAndPositive) {
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const int cpus = AvailableCpus();
  EXPECT_GE(cpus, 1);
  EXPECT_LE(cpus, CPU_COUNT(&set));
}

}  // namespace
}  // namespace lcd
