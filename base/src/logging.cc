#include "lcd/base/logging.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace lcd {
namespace {

LogSeverity SeverityFromEnv() {
  const char* env = std::getenv("LCD_LOG_LEVEL");
  if (env == nullptr) return LogSeverity::kInfo;
  std::string v = absl::AsciiStrToLower(env);
  if (v == "debug") return LogSeverity::kDebug;
  if (v == "warning" || v == "warn") return LogSeverity::kWarning;
  if (v == "error") return LogSeverity::kError;
  return LogSeverity::kInfo;
}

std::atomic<int>& MinSeverityStorage() {
  static std::atomic<int> severity{static_cast<int>(SeverityFromEnv())};
  return severity;
}

const char* Basename(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

}  // namespace

void SetMinLogSeverity(LogSeverity severity) {
  MinSeverityStorage().store(static_cast<int>(severity));
}

LogSeverity MinLogSeverity() { return static_cast<LogSeverity>(MinSeverityStorage().load()); }

namespace logging_internal {

LogMessage::LogMessage(const char* file, int line, LogSeverity severity) : severity_(severity) {
  static constexpr char kLetters[] = {'D', 'I', 'W', 'E', 'F'};
  stream_ << kLetters[static_cast<int>(severity)]
          << absl::FormatTime("%Y%m%d %H:%M:%E6S", absl::Now(), absl::UTCTimeZone()) << ' '
          << Basename(file) << ':' << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string line = stream_.str();
  // One write() per line keeps lines from different threads whole.
  ssize_t unused = ::write(STDERR_FILENO, line.data(), line.size());
  (void)unused;
  if (severity_ == LogSeverity::kFatal) std::abort();
}

}  // namespace logging_internal
}  // namespace lcd
