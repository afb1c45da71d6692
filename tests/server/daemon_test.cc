// The whole daemon in-process, driven by our own C++ gRPC client: unary and
// streaming agree, cancellation, bad input codes, ModelService status, the
// metrics endpoint, a graceful shutdown that lets a running stream finish, and
// which threads tokenize prompts.
// The model is the small random Llama of tests/lcd_test_model.h with its
// byte-level tokenizer, written in code.
#include "lcd/server/daemon.h"

#include <grpcpp/grpcpp.h>

#include <time.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lcd/runtime/backend.h"
#include "lcd/runtime/safetensors.h"
#include "lcd/runtime/tokenizer.h"
#include "lcd/server/model_registry.h"
#include "lcd/v1/generate.grpc.pb.h"
#include "lcd/v1/model.grpc.pb.h"
#include "lcd_test_model.h"

namespace lcd::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// The engine tests' random Llama with a byte-level tokenizer, written in
// code (tests/lcd_test_model.h): no ../shared data needed, so nothing skips.
std::string WriteRandomModel() {
  const fs::path dir =
      fs::temp_directory_path() / ("lcd_daemon_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  test_model::WriteTinyModel(dir);
  return dir.string();
}

class DaemonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_dir_ = new std::string(WriteRandomModel()); }
  static void TearDownTestSuite() {
    if (!model_dir_->empty()) fs::remove_all(*model_dir_);
    delete model_dir_;
  }

  void SetUp() override {
    ServerConfig c;
    c.grpc_address = "127.0.0.1";
    c.grpc_port = 0;
    c.metrics_address = "127.0.0.1";
    c.metrics_port = 0;
    c.threads = 1;
    c.kv_cache_bytes = 16 << 20;
    c.drain_timeout_seconds = 30;
    c.models.push_back({"rand", *model_dir_});
    auto d = Daemon::Start(c);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = std::move(*d);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(daemon_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = lcd::v1::GenerationService::NewStub(channel_);
  }

  lcd::v1::GenerateRequest Greedy(const std::string& text, int n) {
    lcd::v1::GenerateRequest r;
    r.set_model("rand");
    r.set_text(text);
    r.mutable_sampling()->set_temperature(0);
    r.mutable_sampling()->set_max_new_tokens(n);
    r.mutable_sampling()->set_ignore_eos(true);
    return r;
  }

  static std::string* model_dir_;
  std::unique_ptr<Daemon> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<lcd::v1::GenerationService::Stub> stub_;
};
std::string* DaemonTest::model_dir_ = nullptr;

TEST_F(DaemonTest, UnaryAndStreamAgree) {
  grpc::ClientContext uctx;
  lcd::v1::GenerateResponse unary;
  ASSERT_TRUE(stub_->Generate(&uctx, Greedy("Hello world", 10), &unary).ok());
  EXPECT_EQ(unary.token_ids_size(), 10);
  EXPECT_EQ(unary.finish_reason(), lcd::v1::FINISH_REASON_LENGTH);

  grpc::ClientContext sctx;
  auto reader = stub_->GenerateStream(&sctx, Greedy("Hello world", 10));
  lcd::v1::GenerateStreamResponse chunk;
  std::vector<int32_t> ids;
  std::string text;
  lcd::v1::FinishReason finish = lcd::v1::FINISH_REASON_UNSPECIFIED;
  while (reader->Read(&chunk)) {
    ids.insert(ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    text += chunk.text();
    finish = chunk.finish_reason();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(ids, std::vector<int32_t>(unary.token_ids().begin(), unary.token_ids().end()));
  EXPECT_EQ(text, unary.text());
  EXPECT_EQ(finish, lcd::v1::FINISH_REASON_LENGTH);
}

TEST_F(DaemonTest, CancelMidStream) {
  grpc::ClientContext ctx;
  auto reader = stub_->GenerateStream(&ctx, Greedy("Cancel", 200));
  lcd::v1::GenerateStreamResponse chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  ctx.TryCancel();
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// CPU time (user + system, in clock ticks) of this process's threads whose
// name starts with `prefix` (/proc/self/task/*/comm and stat).
int64_t ThreadTicks(const std::string& prefix) {
  int64_t ticks = 0;
  std::error_code ec;
  for (const fs::directory_entry& task : fs::directory_iterator("/proc/self/task", ec)) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (!name.starts_with(prefix)) continue;
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // Fields after the ")" that closes the name: state is field 3, utime 14, stime 15.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i >= 14) ticks += std::stoll(field);
    }
  }
  return ticks;
}

// Prompts are tokenized on the service's call queue ("calls-N" threads), not
// on gRPC's threads: the call queue's CPU time over three Tokenize and three
// Generate calls with a 1 MiB prompt is at least 70% of what tokenizing that
// prompt six times costs here, measured directly on this thread.
TEST_F(DaemonTest, PromptsAreTokenizedOnTheCallQueue) {
  std::string text;
  std::mt19937 rng(7);
  const char* words[] = {"lorem ", "ipsum ", "dolor ", "sit ", "amet, ", "consectetur ", "adipiscing ", "elit\n"};
  while (text.size() + 16 < (1 << 20)) text += words[rng() % 8];
  absl::StatusOr<std::unique_ptr<runtime::Tokenizer>> tok = runtime::LoadTokenizer(*model_dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto thread_ticks = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (ts.tv_sec * 1000000000LL + ts.tv_nsec) * sysconf(_SC_CLK_TCK) / 1000000000LL;
  };
  const int64_t direct0 = thread_ticks();
  for (int i = 0; i < 6; ++i) ASSERT_TRUE((*tok)->Encode(text, true).ok());
  const int64_t direct = thread_ticks() - direct0;

  const int64_t calls0 = ThreadTicks("calls-");
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    lcd::v1::TokenizeRequest req;
    req.set_model("rand");
    req.set_text(text);
    lcd::v1::TokenizeResponse resp;
    ASSERT_TRUE(stub_->Tokenize(&ctx, req, &resp).ok());
    ASSERT_GT(resp.token_ids_size(), 1000);
    grpc::ClientContext gctx;
    lcd::v1::GenerateResponse gresp;
    // Longer than the context: refused after tokenization, which is the work measured.
    EXPECT_EQ(stub_->Generate(&gctx, Greedy(text, 1), &gresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  const int64_t calls = ThreadTicks("calls-") - calls0;
  std::printf("tokenizing a 1 MiB prompt 6 times: %lld ticks here, %lld on the call queue\n",
              static_cast<long long>(direct), static_cast<long long>(calls));
  ASSERT_GE(direct, 10) << "too little CPU to measure";
  EXPECT_GE(calls, direct * 7 / 10);
}

TEST_F(DaemonTest, BadInputCodes) {
  lcd::v1::GenerateResponse resp;
  {
    grpc::ClientContext ctx;
    auto r = Greedy("x", 1);
    r.set_model("missing");
    EXPECT_EQ(stub_->Generate(&ctx, r, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    auto r = Greedy("x", 1);
    r.set_text_bytes(std::string("\xC3\x28", 2));
    grpc::Status st = stub_->Generate(&ctx, r, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), HasSubstr("UTF-8"));
  }
  {
    grpc::ClientContext ctx;
    auto r = Greedy("x", 1);
    r.mutable_sampling()->set_top_p(5);
    EXPECT_EQ(stub_->Generate(&ctx, r, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(DaemonTest, ModelStatusAndMetrics) {
  auto ms = lcd::v1::ModelService::NewStub(channel_);
  grpc::ClientContext ctx;
  lcd::v1::GetModelStatusRequest req;
  req.set_name("rand");
  lcd::v1::ModelStatus status;
  ASSERT_TRUE(ms->GetModelStatus(&ctx, req, &status).ok());
  EXPECT_EQ(status.state(), lcd::v1::MODEL_STATE_READY);
  EXPECT_EQ(status.source_path(), *model_dir_);
  EXPECT_GT(daemon_->metrics_port(), 0);
}

TEST_F(DaemonTest, ShutdownDrainsARunningStream) {
  grpc::ClientContext ctx;
  auto reader = stub_->GenerateStream(&ctx, Greedy("Drain me", 80));
  lcd::v1::GenerateStreamResponse chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  int tokens = chunk.token_ids_size();
  std::thread stopper([this] { daemon_->Shutdown(); });
  lcd::v1::FinishReason finish = chunk.finish_reason();
  while (reader->Read(&chunk)) {
    tokens += chunk.token_ids_size();
    finish = chunk.finish_reason();
  }
  EXPECT_TRUE(reader->Finish().ok());
  stopper.join();
  EXPECT_EQ(tokens, 80);
  EXPECT_EQ(finish, lcd::v1::FINISH_REASON_LENGTH);
  // After shutdown nothing is admitted.
  grpc::ClientContext ctx2;
  ctx2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  lcd::v1::GenerateResponse resp;
  EXPECT_FALSE(stub_->Generate(&ctx2, Greedy("late", 1), &resp).ok());
}

// Shutdown while LoadModel calls are running and queued: every call is
// answered (none left hanging), the queued ones with UNAVAILABLE, a running
// one stops at its next loading phase, and Shutdown returns with the
// workers joined.
TEST_F(DaemonTest, RegistryShutdownAnswersRunningAndQueuedLoads) {
  ModelRegistryOptions o;
  o.backend = runtime::NewCpuBackend(1);
  o.engine.kv_cache_bytes = 1 << 20;
  o.model_roots = {fs::path(*model_dir_).parent_path().string()};
  o.worker_threads = 2;
  o.max_loaded_models = 64;
  auto registry = std::make_unique<ModelRegistry>(o);
  constexpr int kCalls = 12;
  absl::Mutex mu;
  std::vector<absl::Status> results;
  for (int i = 0; i < kCalls; ++i) {
    registry->LoadAsync(absl::StrCat("m", i), *model_dir_, "", absl::ZeroDuration(),
                        [&](absl::Status st, ModelStatusInfo) {
                          absl::MutexLock lock(&mu);
                          results.push_back(st);
                        });
  }
  const auto start = std::chrono::steady_clock::now();
  registry->Shutdown(absl::ZeroDuration());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  absl::MutexLock lock(&mu);
  ASSERT_EQ(results.size(), static_cast<size_t>(kCalls));
  int unavailable = 0;
  for (const absl::Status& st : results) {
    EXPECT_TRUE(st.ok() || absl::IsUnavailable(st) || absl::IsCancelled(st)) << st;
    unavailable += absl::IsUnavailable(st) || absl::IsCancelled(st);
  }
  // Two workers: at most the two running loads can have finished.
  EXPECT_GE(unavailable, kCalls - 2);
  EXPECT_LT(seconds, 30.0);
  // After Shutdown nothing is queued any more.
  absl::Status late;
  registry->LoadAsync("late", *model_dir_, "", absl::ZeroDuration(),
                      [&](absl::Status st, ModelStatusInfo) { late = st; });
  EXPECT_TRUE(absl::IsUnavailable(late)) << late;
}

}  // namespace
}  // namespace lcd::server
