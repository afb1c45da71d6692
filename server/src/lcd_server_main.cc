// lcd-server: the serving daemon. See lcd/server/config.h for settings and
// lcd/server/daemon.h for what runs. SIGTERM/SIGINT start the graceful
// shutdown; the process then exits 0.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "lcd/base/logging.h"
#include "lcd/server/config.h"
#include "lcd/server/daemon.h"

namespace {

lcd::LogSeverity ParseSeverity(const std::string& s) {
  if (s == "debug") return lcd::LogSeverity::kDebug;
  if (s == "warning") return lcd::LogSeverity::kWarning;
  if (s == "error") return lcd::LogSeverity::kError;
  return lcd::LogSeverity::kInfo;
}

}  // namespace

int main(int argc, char** argv) {
  auto config =
      lcd::server::LoadServerConfig(argc, argv, [](const char* n) { return std::getenv(n); });
  if (!config.ok()) {
    std::cerr << "lcd-server: bad configuration: " << config.status().message() << "\n"
              << "(run lcd-server --help for the settings)\n";
    return 2;
  }
  if (config->help_requested) {
    std::cout << lcd::server::ServerConfigHelp();
    return 0;
  }
  lcd::SetMinLogSeverity(ParseSeverity(config->log_level));
  LCD_LOG(INFO) << "lcd-server: config " << config->ToString();

  // Block the shutdown signals in every thread (threads inherit the mask)
  // and take them synchronously below: no async-signal-safety concerns.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto daemon = lcd::server::Daemon::Start(*config);
  if (!daemon.ok()) {
    LCD_LOG(ERROR) << "lcd-server: failed to start: " << daemon.status();
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  LCD_LOG(INFO) << "lcd-server: received " << (sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*daemon)->Shutdown();
  daemon->reset();
  return 0;
}
