// ServerConfig: precedence default < file < env < flag, and a clear error for
// every kind of bad value.
#include "lcd/server/config.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd_skip.h"
#include "lcd_test_dir.h"

namespace lcd::server {
namespace {

using ::testing::HasSubstr;

struct FakeEnv {
  std::map<std::string, std::string> vars;
  GetEnvFn fn() {
    return [this](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
};

absl::StatusOr<ServerConfig> Load(std::vector<std::string> args, FakeEnv env = {}) {
  args.insert(args.begin(), "lcd-server");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return LoadServerConfig(static_cast<int>(argv.size()), argv.data(), env.fn());
}

std::string WriteTemp(const std::string& text) {
  static int n = 0;
  auto path = lcd::testing::TestDir("config") / (std::to_string(n++) + ".json");
  std::ofstream(path) << text;
  return path.string();
}

TEST(Config, DefaultsAreValid) {
  auto c = Load({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->grpc_port, 50051);
  EXPECT_TRUE(c->models.empty());
  EXPECT_TRUE(ValidateServerConfig(ServerConfig{}).ok());
}

TEST(Config, PrecedenceFileEnvFlag) {
  const std::string path = WriteTemp(R"({
    "grpc_port": 1000, "metrics_port": 1001, "max_num_seqs": 7,
    "kv_cache_bytes": "64MiB", "models": [{"name": "tiny", "path": "/m/tiny"}],
    "drain_timeout_seconds": 2.5, "log_level": "debug", "kv_dtype": "bf16"})");
  FakeEnv env;
  env.vars["LCD_GRPC_PORT"] = "2000";
  env.vars["LCD_MAX_NUM_SEQS"] = "9";
  auto c = Load({"--config", path, "--grpc-port", "3000"}, env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->grpc_port, 3000);     // flag beats env beats file
  EXPECT_EQ(c->max_num_seqs, 9);     // env beats file
  EXPECT_EQ(c->metrics_port, 1001);  // file beats default
  EXPECT_EQ(c->kv_cache_bytes, 64ull << 20);
  ASSERT_EQ(c->models.size(), 1u);
  EXPECT_EQ(c->models[0].name, "tiny");
  EXPECT_EQ(c->models[0].path, "/m/tiny");
  EXPECT_EQ(c->drain_timeout_seconds, 2.5);
  EXPECT_EQ(c->ToEngineOptions().max_num_seqs, 9);
  EXPECT_EQ(c->ToEngineOptions().kv_cache_bytes, 64ull << 20);
  EXPECT_EQ(c->ToEngineOptions().kv_dtype, kernels::DType::kBF16);
  EXPECT_EQ(ServerConfig{}.ToEngineOptions().kv_dtype, kernels::DType::kF16);  // the serving default
  std::remove(path.c_str());
}

TEST(Config, ConfigFileFromEnvAndModelsFromEnvAndFlags) {
  const std::string path = WriteTemp(R"({"threads": 3})");
  FakeEnv env;
  env.vars["LCD_CONFIG"] = path;
  env.vars["LCD_MODELS"] = "a=/p/a, b=/p/b";
  auto c = Load({}, env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->threads, 3);
  ASSERT_EQ(c->models.size(), 2u);
  EXPECT_EQ(c->models[1].name, "b");
  EXPECT_EQ(c->models[1].path, "/p/b");
  auto d = Load({"--model", "x=/p/x", "--model", "y=/p/y"}, env);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->models.size(), 2u);  // Flags replace the env list.
  EXPECT_EQ(d->models[0].name, "x");
  std::remove(path.c_str());
}

TEST(Config, Help) {
  auto c = Load({"--help"});
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->help_requested);
  EXPECT_THAT(ServerConfigHelp(), HasSubstr("LCD_MAX_WAITING"));
  EXPECT_THAT(ServerConfigHelp(), HasSubstr("--drain-timeout-seconds"));
}

struct BadCase {
  std::string json;
  std::string expected;
};

TEST(Config, BadJsonValues) {
  const std::vector<BadCase> cases = {
      {R"({"grpc_port": 70000})", "grpc_port"},
      {R"({"grpc_port": "80"})", "grpc_port: must be an integer"},
      {R"({"metrics_port": -2})", "metrics_port"},
      {R"({"block_size": 0})", "block_size"},
      {R"({"kv_cache_bytes": "12 parsecs"})", "not a byte size"},
      {R"({"kv_cache_bytes": 1000})", "at least 1MiB"},
      {R"({"max_num_seqs": 0})", "max_num_seqs"},
      {R"({"max_waiting": -1})", "max_waiting"},
      {R"({"max_message_bytes": 10})", "max_message_bytes"},
      {R"({"drain_timeout_seconds": -1})", "drain_timeout_seconds"},
      {R"({"log_level": "loud"})", "log_level"},
      {R"({"artifact_rescan_seconds": 0})", "artifact_rescan_seconds"},
      {R"({"pinned_models": ["../x"]})", "pinned_models"},
      {R"({"pinned_models": "tiny"})", "must be an array of strings"},
      {R"({"kv_dtype": "f8"})", "kv_dtype: 'f8' is not f16|bf16|f32"},
      {R"({"bogus_key": 1})", "unknown key 'bogus_key'"},
      {R"({"models": {"name": "x"}})", "must be an array"},
      {R"({"models": [{"name": "x"}]})", "needs a string 'path'"},
      {R"({"models": [{"name": "x", "path": "/p", "extra": 1}]})", "unknown key 'extra'"},
      {R"({"models": [{"name": "bad name", "path": "/p"}]})", "may only hold"},
      {R"({"models": [{"name": "a", "path": "/p"}, {"name": "a", "path": "/q"}]})", "duplicate"},
      {R"([1, 2])", "must be a JSON object"},
      {R"({"grpc_port": )", "not valid JSON"},
      {R"({"threads": 1e99})", "threads"},
  };
  for (const auto& bad : cases) {
    auto c = ApplyConfigJson(bad.json, ServerConfig{}, "test.json");
    ASSERT_FALSE(c.ok()) << bad.json;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad.json;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(bad.expected)) << bad.json;
  }
}

TEST(Config, BadFlagsAndEnv) {
  auto a = Load({"--grpc-port", "eighty"});
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("--grpc-port"));
  auto b = Load({"--no-such-flag", "1"});
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  FakeEnv env;
  env.vars["LCD_MAX_WAITING"] = "lots";
  auto c = Load({}, env);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("LCD_MAX_WAITING"));
  auto d = Load({"--model", "noequals"});
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("NAME=PATH"));
  auto e = Load({"--config", "/nonexistent/lcd.json"});
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound);
  auto f = Load({"stray"});
  ASSERT_FALSE(f.ok());
}

TEST(Config, ExampleFileIsValidAndComplete) {
  const char* src = std::getenv("LCD_SOURCE_DIR");
  const std::string path = std::string(src ? src : ".") + "/server/lcd-server.example.json";
  if (!std::filesystem::exists(path)) LCD_SKIP(kMissing) << "no " << path;
  auto c = Load({"--config", path});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kv_cache_bytes, 256ull << 20);
  ASSERT_EQ(c->models.size(), 1u);
  // Every setting appears in the example (so it doubles as documentation).
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* key :
       {"grpc_address", "grpc_port", "metrics_address", "metrics_port", "models", "block_size",
        "kv_cache_bytes", "max_num_seqs", "max_tokens_per_iteration", "max_waiting", "max_context",
        "threads", "max_message_bytes", "drain_timeout_seconds", "log_level", "kv_dtype",
        "model_roots", "admin_token_file", "max_loaded_models", "max_model_memory_bytes",
        "tls_cert_file", "tls_key_file"}) {
    EXPECT_THAT(text, HasSubstr(std::string("\"") + key + "\"")) << key;
  }
}

// The configuration shipped for containers and Kubernetes must be accepted
// as it is (unknown keys are rejected, so a stale key would stop the pod).
TEST(Config, DeployConfigIsValid) {
  const char* src = std::getenv("LCD_SOURCE_DIR");
  const std::string path = std::string(src ? src : ".") + "/deploy/config/server.json";
  if (!std::filesystem::exists(path)) LCD_SKIP(kMissing) << "no " << path;
  auto c = Load({"--config", path});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->models.size(), 1u);
  EXPECT_EQ(c->models[0].name, "tiny-shakespeare");
}

TEST(Config, DefaultsBindLoopbackAndKeepAdministrationOff) {
  auto c = Load({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->grpc_address, "127.0.0.1");
  EXPECT_EQ(c->metrics_address, "127.0.0.1");
  EXPECT_TRUE(c->admin_token_file.empty());
  EXPECT_TRUE(c->model_roots.empty());
  EXPECT_EQ(c->max_loaded_models, 8);
  EXPECT_EQ(c->max_model_memory_bytes, 0u);
}

TEST(Config, AdministrationSettingsFromEverySource) {
  const std::string file = WriteTemp(
      R"({"model_roots": ["/a", "/b"], "admin_token_file": "/t", "max_loaded_models": 3,
          "max_model_memory_bytes": "2GiB", "tls_cert_file": "/c", "tls_key_file": "/k"})");
  auto c = Load({"--config", file});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_roots, (std::vector<std::string>{"/a", "/b"}));
  EXPECT_EQ(c->admin_token_file, "/t");
  EXPECT_EQ(c->max_loaded_models, 3);
  EXPECT_EQ(c->max_model_memory_bytes, 2ull << 30);
  EXPECT_EQ(c->tls_cert_file, "/c");
  FakeEnv env;
  env.vars["LCD_MODEL_ROOTS"] = "/e1, /e2";
  env.vars["LCD_MAX_LOADED_MODELS"] = "5";
  c = Load({"--config", file}, env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_roots, (std::vector<std::string>{"/e1", "/e2"}));
  EXPECT_EQ(c->max_loaded_models, 5);
  c = Load({"--config", file, "--model-root", "/f1", "--model-root", "/f2"}, env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_roots, (std::vector<std::string>{"/f1", "/f2"}));
}

TEST(Config, BadAdministrationSettings) {
  auto bad = [](std::vector<std::string> args, const std::string& what) {
    auto c = Load(std::move(args));
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(what));
  };
  bad({"--model-root", "relative/dir"}, "model_roots");
  bad({"--tls-cert-file", "/c"}, "tls_key_file");
  bad({"--tls-key-file", "/k"}, "tls_cert_file");
  bad({"--max-loaded-models", "0"}, "max_loaded_models");
  bad({"--max-loaded-models", "1", "--model", "a=/a", "--model", "b=/b"}, "max_loaded_models");
}

TEST(Config, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("1024"), 1024u);
  EXPECT_EQ(*ParseByteSize("2KiB"), 2048u);
  EXPECT_EQ(*ParseByteSize("3 GiB"), 3ull << 30);
  EXPECT_FALSE(ParseByteSize("-5").ok());
  EXPECT_FALSE(ParseByteSize("99999999999999999999GiB").ok());
  EXPECT_FALSE(ParseByteSize("").ok());
}

}  // namespace
}  // namespace lcd::server
