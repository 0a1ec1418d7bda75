#include "train/stop_signals.h"

#include <pthread.h>

#include <array>
#include <atomic>
#include <csignal>
#include <thread>

namespace polysketch::train {

namespace {

constexpr std::array<int, 3> kSignals{SIGINT, SIGTERM, SIGHUP};
std::atomic<bool> g_in_scope{false};
std::atomic<int> g_signal{0};
std::array<bool, 3> g_ignored{};  // ignored when watching began (nohup): stay ignored outside a scope

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kSignals) sigaddset(&set, s);
  return set;
}

// The signal's default action, on this thread only: the process ends as if never watched.
[[noreturn]] void die_by(int sig) {
  std::signal(sig, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  pthread_kill(pthread_self(), sig);
  std::_Exit(128 + sig);  // not reached: the default action of these signals ends the process
}

void watch() {
  const sigset_t set = stop_set();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (g_in_scope) {
      int none = 0;
      g_signal.compare_exchange_strong(none, sig);
      continue;
    }
    for (size_t i = 0; i < kSignals.size(); ++i)
      if (kSignals[i] == sig && !g_ignored[i]) die_by(sig);
  }
}

}  // namespace

void watch_stop_signals() {
  static std::atomic<bool> started{false};
  if (started.exchange(true)) return;
  for (size_t i = 0; i < kSignals.size(); ++i) {
    struct sigaction old {};
    sigaction(kSignals[i], nullptr, &old);
    g_ignored[i] = old.sa_handler == SIG_IGN;
  }
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread(watch).detach();
}

StopScope::StopScope() {
  g_signal = 0;
  g_in_scope = true;
}

void StopScope::end() {
  if (!active_) return;
  active_ = false;
  g_in_scope = false;
}

int stop_signal() { return g_signal; }

}  // namespace polysketch::train
