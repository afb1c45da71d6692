// Minimal leveled logging for operators, written as one line per message to
// stderr:  "I20261123 11:22:33.123456 file.cc:42] message".
// Debian's Abseil predates absl/log, hence this small replacement.
//
//   LCD_LOG(INFO) << "loaded " << n << " tensors";
//   LCD_CHECK(ptr != nullptr) << "why this is a programmer error";
//
// LCD_CHECK is for programmer errors only: it aborts. User input is reported
// through absl::Status instead. Thread-safe: each message is written with a
// single write call.
#ifndef LCD_BASE_LOGGING_H_
#define LCD_BASE_LOGGING_H_

#include <sstream>
#include <string_view>

namespace lcd {

enum class LogSeverity { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kFatal = 4 };

// Messages below this severity are dropped. Defaults to kInfo, or to the
// value of the LCD_LOG_LEVEL environment variable (debug|info|warning|error).
void SetMinLogSeverity(LogSeverity severity);
LogSeverity MinLogSeverity();

namespace logging_internal {

class LogMessage {
 public:
  LogMessage(const char* file, int line, LogSeverity severity);
  ~LogMessage();  // Writes the line; aborts for kFatal.
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogSeverity severity_;
  std::ostringstream stream_;
};

// Swallows the stream expression when the message is disabled.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace logging_internal
}  // namespace lcd

#define LCD_LOG_SEVERITY_DEBUG ::lcd::LogSeverity::kDebug
#define LCD_LOG_SEVERITY_INFO ::lcd::LogSeverity::kInfo
#define LCD_LOG_SEVERITY_WARNING ::lcd::LogSeverity::kWarning
#define LCD_LOG_SEVERITY_ERROR ::lcd::LogSeverity::kError
#define LCD_LOG_SEVERITY_FATAL ::lcd::LogSeverity::kFatal

#define LCD_LOG(severity)                                                  \
  (LCD_LOG_SEVERITY_##severity < ::lcd::MinLogSeverity())                  \
      ? (void)0                                                            \
      : ::lcd::logging_internal::Voidify() &                               \
            ::lcd::logging_internal::LogMessage(__FILE__, __LINE__,        \
                                                LCD_LOG_SEVERITY_##severity) \
                .stream()

#define LCD_CHECK(cond)                                                       \
  (cond) ? (void)0                                                            \
         : ::lcd::logging_internal::Voidify() &                               \
               ::lcd::logging_internal::LogMessage(__FILE__, __LINE__,        \
                                                   ::lcd::LogSeverity::kFatal) \
                       .stream()                                              \
                   << "Check failed: " #cond " "

#endif  // LCD_BASE_LOGGING_H_
