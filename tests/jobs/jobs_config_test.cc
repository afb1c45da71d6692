// lcd-jobs configuration: flags, environment and file in lcd-server's order,
// and every refused value named in the error.
#include "lcd/server/jobs/jobs_config.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jobs_test_util.h"

namespace lcd::server::jobs {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<JobsConfig> Load(std::vector<std::string> args, const std::map<std::string, std::string>& env = {}) {
  args.insert(args.begin(), "lcd-jobs");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return LoadJobsConfig(static_cast<int>(argv.size()), argv.data(), [&env](const char* n) -> const char* {
    auto it = env.find(n);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

const std::vector<std::string> kMinimal = {"--artifact-root", "/a", "--model-roots", "/m"};

TEST(JobsConfig, PrecedenceAndLists) {
  const auto dir = testing::FreshTestDir("jobs_config");
  const std::string file = (dir / "jobs.json").string();
  std::ofstream(file) << R"({"artifact_root": "/from-file", "model_roots": ["/m1", "/m2"], "max_workers": 2})";
  auto c = Load({"--config", file, "--max-workers", "4", "--data-roots", "/d1", "--data-roots", "/d2"},
                {{"LCD_ARTIFACT_ROOT", "/from-env"}, {"LCD_MAX_WORKERS", "3"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->artifact_root, "/from-env");  // env beats file
  EXPECT_EQ(c->max_workers, 4);              // flag beats env
  EXPECT_EQ(c->model_roots, (std::vector<std::string>{"/m1", "/m2"}));
  EXPECT_EQ(c->data_roots, (std::vector<std::string>{"/d1", "/d2"}));
  EXPECT_EQ(c->grpc_address, "127.0.0.1");  // loopback by default
  auto help = Load({"--help"});
  ASSERT_TRUE(help.ok());
  EXPECT_TRUE(help->help_requested);
  EXPECT_THAT(JobsConfigHelp(), HasSubstr("LCD_TOKEN_FILE"));
}

TEST(JobsConfig, BadValuesAreNamed) {
  struct Case {
    std::vector<std::string> args;
    const char* want;
  };
  auto with = [](std::vector<std::string> extra) {
    std::vector<std::string> a = kMinimal;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const std::vector<Case> cases = {
      {{"--model-roots", "/m"}, "artifact_root"},
      {{"--artifact-root", "/a"}, "model_roots"},
      {with({"--grpc-address", "0.0.0.0"}), "token_file: is required"},
      {with({"--grpc-port", "70000"}), "grpc_port"},
      {with({"--metrics-port", "-2"}), "metrics_port"},
      {with({"--max-workers", "0"}), "max_workers"},
      {with({"--max-attempts", "101"}), "max_attempts"},
      {with({"--worker-threads", "-1"}), "worker_threads"},
      {with({"--job-time-limit-seconds", "0"}), "job_time_limit_seconds"},
      {with({"--retry-backoff-seconds", "nan"}), "retry_backoff_seconds"},
      {with({"--tls-cert-file", "/c.pem"}), "tls_cert_file and tls_key_file go together"},
      {with({"--log-level", "loud"}), "log_level"},
      {with({"--store", ""}), "store"},
      {with({"--max-workers", "many"}), "not an integer"},
      {with({"--no-such-flag", "1"}), "no-such-flag"},
  };
  for (const Case& c : cases) {
    auto r = Load(c.args);
    ASSERT_FALSE(r.ok()) << c.want;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.want;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.want));
  }
  // A token makes a non-loopback address acceptable.
  EXPECT_TRUE(Load(with({"--grpc-address", "0.0.0.0", "--token-file", "/t"})).ok());
  auto bad_json = Load({"--config", "/nonexistent/jobs.json"});
  EXPECT_FALSE(bad_json.ok());
}

}  // namespace
}  // namespace lcd::server::jobs
