// `lcd jobs submit|get|list|watch|cancel`: a client of lcd.v1.JobService
// (lcd-jobs). `watch` (and `submit --watch`) draws a live progress bar on
// stderr and exits 0 only when the job SUCCEEDED. The bearer token comes from
// --token or LCD_JOBS_TOKEN. Errors print the status and exit 1; bad flags 2.
#ifdef LCD_WITH_SERVER

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <unistd.h>

#include "cxxopts.hpp"
#include "grpcpp/grpcpp.h"
#include "lcd/quantizer/methods.h"
#include "lcd/server/status_mapping.h"
#include "lcd/subcommand.h"
#include "lcd/v1/jobs.grpc.pb.h"

namespace lcd::tools {
namespace {

const char* StateName(lcd::v1::JobState s) {
  switch (s) {
    case lcd::v1::JOB_STATE_QUEUED: return "QUEUED";
    case lcd::v1::JOB_STATE_RUNNING: return "RUNNING";
    case lcd::v1::JOB_STATE_SUCCEEDED: return "SUCCEEDED";
    case lcd::v1::JOB_STATE_FAILED: return "FAILED";
    case lcd::v1::JOB_STATE_CANCELLED: return "CANCELLED";
    default: return "UNSPECIFIED";
  }
}

bool Terminal(lcd::v1::JobState s) {
  return s == lcd::v1::JOB_STATE_SUCCEEDED || s == lcd::v1::JOB_STATE_FAILED || s == lcd::v1::JOB_STATE_CANCELLED;
}

void PrintJob(const lcd::v1::Job& j) {
  std::printf("%-8s %-9s %s", j.id().c_str(), StateName(j.state()), j.spec().target_model().c_str());
  if (j.version() > 0) std::printf(" v%lld", static_cast<long long>(j.version()));
  std::printf("  %s b%d g%d  %3.0f%%  attempts %d", j.spec().method().c_str(), j.spec().bits(), j.spec().group_size(),
              100.0 * j.progress(), j.attempts());
  if (!j.phase().empty()) std::printf("  [%s]", j.phase().c_str());
  if (!j.reason().empty()) std::printf("  %s", j.reason().c_str());
  std::printf("\n");
}

int RpcError(const char* verb, const grpc::Status& st) {
  const std::string what = std::string("jobs ") + verb;
  return ReportError(what.c_str(), server::FromGrpcStatus(st));
}

// Streams the job's events, drawing a progress bar; returns the exit code.
int Watch(lcd::v1::JobService::Stub& stub, const std::string& id, int64_t after) {
  const bool tty = ::isatty(2) != 0;
  grpc::ClientContext ctx;
  lcd::v1::WatchJobRequest req;
  req.set_id(id);
  req.set_after_seq(after);
  std::unique_ptr<grpc::ClientReader<lcd::v1::JobEvent>> reader = stub.WatchJob(&ctx, req);
  lcd::v1::JobEvent e;
  lcd::v1::JobState last = lcd::v1::JOB_STATE_UNSPECIFIED;
  std::string last_message;
  while (reader->Read(&e)) {
    last = e.state();
    last_message = e.message();
    const int width = 30;
    const int filled = static_cast<int>(e.progress() * width + 0.5);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '-');
    std::string msg = e.message().substr(0, 70);
    std::fprintf(stderr, tty ? "\r\033[K%s [%s] %3.0f%% %-9s %s" : "%s [%s] %3.0f%% %-9s %s\n", id.c_str(),
                 bar.c_str(), 100.0 * e.progress(), StateName(e.state()), msg.c_str());
    std::fflush(stderr);
  }
  if (tty) std::fprintf(stderr, "\n");
  const grpc::Status st = reader->Finish();
  if (!st.ok()) return RpcError("watch", st);
  std::printf("%s %s%s%s\n", id.c_str(), StateName(last), last_message.empty() ? "" : ": ", last_message.c_str());
  return last == lcd::v1::JOB_STATE_SUCCEEDED ? 0 : 1;
}

int RunJobs(int argc, char** argv) {
  const std::string usage =
      "usage: lcd jobs submit|get|list|watch|cancel [flags]   (lcd jobs VERB --help)";
  if (argc < 2) {
    std::fprintf(stderr, "%s\n", usage.c_str());
    return 2;
  }
  const std::string verb = argv[1];
  cxxopts::Options options("lcd jobs " + verb, "Client of lcd-jobs (lcd.v1.JobService).");
  options.add_options()
      ("server", "lcd-jobs address", cxxopts::value<std::string>()->default_value("127.0.0.1:50061"))
      ("token", "Bearer token (default: $LCD_JOBS_TOKEN)", cxxopts::value<std::string>())
      ("source", "submit: source model, relative to lcd-jobs' model roots", cxxopts::value<std::string>())
      ("target", "submit: model name to publish under", cxxopts::value<std::string>())
      ("method", "submit: " + quantizer::MethodNames(), cxxopts::value<std::string>())
      ("bits", "submit: 2, 3 or 4", cxxopts::value<int>()->default_value("0"))
      ("group-size", "submit: columns per group", cxxopts::value<int>()->default_value("128"))
      ("calib", "submit: calibration text, relative to lcd-jobs' data roots", cxxopts::value<std::string>())
      ("calib-samples", "submit: teacher-generated samples", cxxopts::value<int64_t>()->default_value("0"))
      ("budget", "submit: time limit of one attempt in seconds (0: service default)",
       cxxopts::value<double>()->default_value("0"))
      ("idempotency-key", "submit: retries with the same key never make two jobs", cxxopts::value<std::string>())
      ("watch", "submit: then watch it")
      ("state", "list: QUEUED|RUNNING|SUCCEEDED|FAILED|CANCELLED", cxxopts::value<std::string>())
      ("model", "list: only jobs for this target model", cxxopts::value<std::string>())
      ("page-size", "list: jobs per page", cxxopts::value<int>()->default_value("50"))
      ("after", "watch: resume after this event sequence number", cxxopts::value<int64_t>()->default_value("0"))
      ("id", "get/watch/cancel: job id", cxxopts::value<std::string>())
      ("h,help", "Show this help");
  options.parse_positional({"id"});
  cxxopts::ParseResult flags;
  if (std::optional<int> exit = ParseFlags("jobs", options, argc - 1, argv + 1, {}, &flags)) return *exit;
  std::string token;
  if (flags.count("token")) {
    token = flags["token"].as<std::string>();
  } else if (const char* t = std::getenv("LCD_JOBS_TOKEN")) {
    token = t;
  }
  auto channel = grpc::CreateChannel(flags["server"].as<std::string>(), grpc::InsecureChannelCredentials());
  auto stub = lcd::v1::JobService::NewStub(channel);
  auto need = [&](const char* f) {
    if (flags.count(f)) return true;
    std::fprintf(stderr, "lcd jobs %s: --%s is required\n", verb.c_str(), f);
    return false;
  };
  auto authorize = [&](grpc::ClientContext& ctx) {
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  };

  if (verb == "submit") {
    if (!need("source") || !need("target") || !need("method") || !need("bits")) return 2;
    lcd::v1::SubmitJobRequest req;
    req.set_source_model(flags["source"].as<std::string>());
    req.set_target_model(flags["target"].as<std::string>());
    req.set_method(flags["method"].as<std::string>());
    req.set_bits(flags["bits"].as<int>());
    req.set_group_size(flags["group-size"].as<int>());
    if (flags.count("calib")) req.set_calibration_file(flags["calib"].as<std::string>());
    req.set_calibration_samples(flags["calib-samples"].as<int64_t>());
    req.set_budget_seconds(flags["budget"].as<double>());
    if (flags.count("idempotency-key")) req.set_idempotency_key(flags["idempotency-key"].as<std::string>());
    grpc::ClientContext ctx;
    authorize(ctx);
    lcd::v1::Job job;
    const grpc::Status st = stub->SubmitJob(&ctx, req, &job);
    if (!st.ok()) return RpcError("submit", st);
    PrintJob(job);
    return flags.count("watch") ? Watch(*stub, job.id(), 0) : 0;
  }
  if (verb == "get" || verb == "cancel") {
    if (!need("id")) return 2;
    grpc::ClientContext ctx;
    lcd::v1::Job job;
    grpc::Status st;
    if (verb == "get") {
      lcd::v1::GetJobRequest req;
      req.set_id(flags["id"].as<std::string>());
      st = stub->GetJob(&ctx, req, &job);
    } else {
      authorize(ctx);
      lcd::v1::CancelJobRequest req;
      req.set_id(flags["id"].as<std::string>());
      st = stub->CancelJob(&ctx, req, &job);
    }
    if (!st.ok()) return RpcError(verb.c_str(), st);
    PrintJob(job);
    return 0;
  }
  if (verb == "watch") {
    if (!need("id")) return 2;
    return Watch(*stub, flags["id"].as<std::string>(), flags["after"].as<int64_t>());
  }
  if (verb == "list") {
    lcd::v1::ListJobsRequest req;
    if (flags.count("state")) {
      lcd::v1::JobState s;
      if (!lcd::v1::JobState_Parse("JOB_STATE_" + flags["state"].as<std::string>(), &s)) {
        std::fprintf(stderr, "lcd jobs list: unknown --state\n");
        return 2;
      }
      req.set_state(s);
    }
    if (flags.count("model")) req.set_target_model(flags["model"].as<std::string>());
    req.set_page_size(flags["page-size"].as<int>());
    for (;;) {
      grpc::ClientContext ctx;
      lcd::v1::ListJobsResponse resp;
      const grpc::Status st = stub->ListJobs(&ctx, req, &resp);
      if (!st.ok()) return RpcError("list", st);
      for (const lcd::v1::Job& j : resp.jobs()) PrintJob(j);
      if (resp.next_page_token().empty()) return 0;
      req.set_page_token(resp.next_page_token());
    }
  }
  std::fprintf(stderr, "lcd jobs: unknown verb '%s'\n%s\n", verb.c_str(), usage.c_str());
  return 2;
}

}  // namespace

LCD_REGISTER_SUBCOMMAND(jobs, "jobs", "submit, list, watch and cancel quantization jobs on lcd-jobs", RunJobs);

}  // namespace lcd::tools

#endif  // LCD_WITH_SERVER
