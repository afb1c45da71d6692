// lcd-jobs: the quantization job daemon. See lcd/server/jobs/jobs_config.h
// for settings and lcd/server/jobs/jobs_daemon.h for what runs. SIGTERM and
// SIGINT stop it cleanly (running jobs resume at the next start); exit 0.
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <iostream>

#include "lcd/base/logging.h"
#include "lcd/server/jobs/jobs_config.h"
#include "lcd/server/jobs/jobs_daemon.h"
#include "lcd/server/signals.h"

int main(int argc, char** argv) {
  auto config = lcd::server::jobs::LoadJobsConfig(argc, argv, [](const char* n) { return std::getenv(n); });
  if (!config.ok()) {
    std::cerr << "lcd-jobs: bad configuration: " << config.status().message() << "\n"
              << "(run lcd-jobs --help for the settings)\n";
    return 2;
  }
  if (config->help_requested) {
    std::cout << lcd::server::jobs::JobsConfigHelp();
    return 0;
  }
  lcd::SetMinLogSeverity(config->log_level == "debug"     ? lcd::LogSeverity::kDebug
                         : config->log_level == "warning" ? lcd::LogSeverity::kWarning
                         : config->log_level == "error"   ? lcd::LogSeverity::kError
                                                          : lcd::LogSeverity::kInfo);
  const sigset_t signals = lcd::server::BlockShutdownSignals();
  auto daemon = lcd::server::jobs::JobsDaemon::Start(*config);
  if (!daemon.ok()) {
    LCD_LOG(ERROR) << "lcd-jobs: failed to start: " << daemon.status();
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  LCD_LOG(INFO) << "lcd-jobs: received " << (sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*daemon)->Shutdown();
  daemon->reset();
  return 0;
}
