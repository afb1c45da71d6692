// `lcd client`: a small C++ client of lcd.v1.GenerationService. It sends one
// Generate (or, with --stream, GenerateStream) call to a running lcd-server,
// prints the generated text to stdout and a summary (finish reason, usage,
// time to first token) to stderr. Failures print the gRPC status code and
// message and exit 1; bad flags exit 2.
//
// Only built into `lcd` when the server (and so lcd_proto) is built.
#ifdef LCD_WITH_SERVER

#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include "cxxopts.hpp"
#include "grpcpp/grpcpp.h"
#include "lcd/subcommand.h"
#include "lcd/v1/generate.grpc.pb.h"

namespace lcd::tools {
namespace {

using Clock = std::chrono::steady_clock;

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNRECOGNIZED";
  }
}

int ReportRpcError(const char* rpc, const grpc::Status& status) {
  std::fprintf(stderr, "lcd client: %s failed: %s (%d): %s\n", rpc, GrpcCodeName(status.error_code()),
               static_cast<int>(status.error_code()), status.error_message().c_str());
  return 1;
}

double DurationMs(const google::protobuf::Duration& d) {
  return d.seconds() * 1e3 + d.nanos() / 1e6;
}

// The summary line shared by the unary and the streaming path. client_ttft_ms
// is measured here (request sent -> first tokens received); the server's own
// figure (submit -> first token) comes from Timing.
void PrintSummary(const std::string& request_id, const std::string& model_version, v1::FinishReason reason,
                  const v1::Usage& usage, const v1::Timing& timing, double client_ttft_ms, double e2e_ms) {
  std::fprintf(stderr,
               "[lcd client] request_id: %s, model_version: %s, finish_reason: %s, prompt_tokens: %lld, "
               "completion_tokens: %lld, total_tokens: %lld, ttft_ms: %.2f (server: %.2f, queue: %.2f), "
               "e2e_ms: %.2f\n",
               request_id.c_str(), model_version.c_str(), v1::FinishReason_Name(reason).c_str(),
               static_cast<long long>(usage.prompt_tokens()), static_cast<long long>(usage.completion_tokens()),
               static_cast<long long>(usage.total_tokens()), client_ttft_ms,
               DurationMs(timing.time_to_first_token()), DurationMs(timing.queue_time()), e2e_ms);
}

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

int RunClient(int argc, char** argv) {
  cxxopts::Options options("lcd client", "Send one Generate / GenerateStream call to a running lcd-server.");
  options.add_options()
      ("server", "Server address HOST:PORT", cxxopts::value<std::string>()->default_value("127.0.0.1:50051"))
      ("model", "Model name as loaded by the server", cxxopts::value<std::string>())
      ("prompt", "Prompt text", cxxopts::value<std::string>())
      ("stream", "Use GenerateStream and print chunks as they arrive")
      ("max-new-tokens", "Maximum tokens to generate", cxxopts::value<int64_t>())
      ("temperature", "Sampling temperature (0 = greedy; default: server's)", cxxopts::value<double>())
      ("top-k", "Top-k (0 = off)", cxxopts::value<int64_t>())
      ("top-p", "Nucleus top-p (1 = off)", cxxopts::value<double>())
      ("seed", "RNG seed (default: random)", cxxopts::value<uint64_t>())
      ("stop", "Stop string (repeatable)", cxxopts::value<std::vector<std::string>>())
      ("ignore-eos", "Keep generating past EOS")
      ("request-id", "Request id for the server's logs", cxxopts::value<std::string>())
      ("timeout", "Deadline of the call in seconds", cxxopts::value<double>()->default_value("120"))
      ("h,help", "Show this help");
  v1::GenerateRequest request;
  std::string server;
  bool stream = false;
  double timeout_s = 0;
  cxxopts::ParseResult flags;
  if (std::optional<int> exit = ParseFlags("client", options, argc, argv, {"model", "prompt"}, &flags)) return *exit;
  server = flags["server"].as<std::string>();
  stream = flags.count("stream") > 0;
  timeout_s = flags["timeout"].as<double>();
  if (!(timeout_s > 0)) {
    std::fprintf(stderr, "lcd client: --timeout must be > 0 seconds\n");
    return 2;
  }
  request.set_model(flags["model"].as<std::string>());
  request.set_text(flags["prompt"].as<std::string>());
  // Out-of-range sampling values are passed through on purpose: the server
  // validates them and its INVALID_ARGUMENT message names the field.
  v1::SamplingParams* sampling = request.mutable_sampling();
  if (flags.count("max-new-tokens")) sampling->set_max_new_tokens(flags["max-new-tokens"].as<int64_t>());
  if (flags.count("temperature")) sampling->set_temperature(flags["temperature"].as<double>());
  if (flags.count("top-k")) sampling->set_top_k(flags["top-k"].as<int64_t>());
  if (flags.count("top-p")) sampling->set_top_p(flags["top-p"].as<double>());
  if (flags.count("seed")) sampling->set_seed(flags["seed"].as<uint64_t>());
  if (flags.count("stop")) {
    for (const std::string& s : flags["stop"].as<std::vector<std::string>>()) sampling->add_stop_strings(s);
  }
  sampling->set_ignore_eos(flags.count("ignore-eos") > 0);
  if (flags.count("request-id")) request.set_request_id(flags["request-id"].as<std::string>());

  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(server, grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::GenerationService::Stub> stub = v1::GenerationService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
  const Clock::time_point start = Clock::now();

  if (!stream) {
    v1::GenerateResponse response;
    grpc::Status status = stub->Generate(&context, request, &response);
    if (!status.ok()) return ReportRpcError("Generate", status);
    const double e2e_ms = MsSince(start);
    std::fwrite(response.text().data(), 1, response.text().size(), stdout);
    std::printf("\n");
    std::fflush(stdout);
    // A unary call delivers everything at once: its client-side TTFT is E2E.
    PrintSummary(response.request_id(), response.model_version(), response.finish_reason(), response.usage(),
                 response.timing(), e2e_ms, e2e_ms);
    return 0;
  }

  std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader =
      stub->GenerateStream(&context, request);
  v1::GenerateStreamResponse chunk;
  std::optional<double> ttft_ms;
  std::string request_id, model_version;
  v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  v1::Timing timing;
  while (reader->Read(&chunk)) {
    if (!ttft_ms && chunk.token_ids_size() > 0) ttft_ms = MsSince(start);
    std::fwrite(chunk.text().data(), 1, chunk.text().size(), stdout);
    std::fflush(stdout);
    if (!chunk.request_id().empty()) request_id = chunk.request_id();
    if (!chunk.model_version().empty()) model_version = chunk.model_version();
    if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      reason = chunk.finish_reason();
      usage = chunk.usage();
      timing = chunk.timing();
    }
  }
  grpc::Status status = reader->Finish();
  std::printf("\n");
  std::fflush(stdout);
  if (!status.ok()) return ReportRpcError("GenerateStream", status);
  if (reason == v1::FINISH_REASON_UNSPECIFIED) {
    std::fprintf(stderr, "lcd client: GenerateStream ended without a final message (no finish reason)\n");
    return 1;
  }
  const double e2e_ms = MsSince(start);
  PrintSummary(request_id, model_version, reason, usage, timing, ttft_ms.value_or(e2e_ms), e2e_ms);
  return 0;
}

}  // namespace

LCD_REGISTER_SUBCOMMAND(client, "client", "send one Generate/GenerateStream call to a running lcd-server",
                        RunClient);

}  // namespace lcd::tools

#endif  // LCD_WITH_SERVER
