// Stop signals (SIGINT, SIGTERM, SIGHUP) without a signal handler on any compute thread.
//
// Why: Debian's oneDNN (2.6) points rsp at a heap buffer inside its JIT sgemm (oneDNN issue
// #4845). A handler that runs on a thread inside that kernel has the kernel's signal frame
// written into the heap, which aborts the process later ("corrupted size vs. prev_size"). So the
// signals are blocked in every thread and received by one watcher thread (sigwait): no handler
// ever runs, anywhere.
#pragma once

namespace polysketch::train {

// Call first in main, before any other thread exists (threads inherit the blocked mask: OpenMP,
// oneDNN, OpenMPI). Outside a StopScope the signals do what they did before the call: end the
// process (status 128 + signal), or nothing if they were ignored (nohup).
void watch_stop_signals();

// While one lives, a stop signal only records itself (stop_signal()); the trainer polls it.
// Without watch_stop_signals() (a library user) the scope records nothing.
class StopScope {
 public:
  StopScope();
  ~StopScope() { end(); }
  StopScope(const StopScope&) = delete;
  StopScope& operator=(const StopScope&) = delete;
  void end();  // signals end the process again from here

 private:
  bool active_ = true;
};

// The stop signal received during the current (or last) StopScope, else 0.
int stop_signal();

}  // namespace polysketch::train
