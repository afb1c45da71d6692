// lcd-server: the serving daemon. See lcd/server/config.h for settings and
// lcd/server/daemon.h for what runs. SIGTERM/SIGINT start the graceful
// shutdown; the process then exits 0. A signal during start-up is honoured
// too: a model load in progress stops at its next phase and the process
// exits 0 without serving.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/synchronization/notification.h"

#include "lcd/base/logging.h"
#include "lcd/server/config.h"
#include "lcd/server/daemon.h"
#include "lcd/server/signals.h"

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

  const sigset_t signals = lcd::server::BlockShutdownSignals();

  // One thread takes the signal, from start-up on; it sets `stop` (which
  // cancels a load in progress) and wakes the main thread.
  static std::atomic<bool> stop{false};
  static std::atomic<int> received{0};
  static absl::Notification signalled;
  std::thread waiter([signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    received = sig;
    stop = true;
    signalled.Notify();
  });
  waiter.detach();  // Blocked in sigwait until a signal; exit ends it.
  auto name = [] { return received.load() == SIGTERM ? "SIGTERM" : "SIGINT"; };

  auto daemon = lcd::server::Daemon::Start(*config, &stop);
  if (!daemon.ok()) {
    if (stop.load()) {
      LCD_LOG(INFO) << "lcd-server: received " << name() << " during start-up; stopped";
      return 0;
    }
    LCD_LOG(ERROR) << "lcd-server: failed to start: " << daemon.status();
    return 1;
  }
  signalled.WaitForNotification();
  LCD_LOG(INFO) << "lcd-server: received " << name();
  (*daemon)->Shutdown();
  daemon->reset();
  return 0;
}
