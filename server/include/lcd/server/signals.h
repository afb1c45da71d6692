// Signal set-up both daemons share: SIGTERM and SIGINT are blocked in every
// thread (threads inherit the mask) and taken synchronously with sigwait, so
// there are no async-signal-safety concerns; SIGPIPE is ignored (a client
// that hangs up is an error on its call, not the end of the process). Call
// first thing in main, before any thread starts. Children must reset both
// (see jobs/worker_process.cc).
#ifndef LCD_SERVER_SIGNALS_H_
#define LCD_SERVER_SIGNALS_H_

#include <pthread.h>
#include <signal.h>

namespace lcd::server {

inline sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return signals;
}

}  // namespace lcd::server

#endif  // LCD_SERVER_SIGNALS_H_
