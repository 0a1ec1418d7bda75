// The run directory's bookkeeping besides the checkpoints themselves: an exclusive lock (one
// trainer per directory), removal of what killed trainers left behind, and metrics.jsonl.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace polysketch::train {

// Holds an flock on ROOT/.lock for its lifetime (released by the kernel even on SIGKILL). A
// second trainer on the same directory gets an Error naming the holder's pid.
class RunLock {
 public:
  explicit RunLock(const std::string& root);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// Removes temporaries of interrupted saves (.step-*.tmp-*, .latest.tmp-*, *.tmp.<pid>). Only
// call while holding the RunLock. Returns how many entries were removed.
int remove_orphans(const std::string& root);

// ROOT/metrics.jsonl, one JSON object per line, each appended with a single write(). Opening
// rewrites the file atomically keeping only complete records with step <= `keep_through` (the
// step training restarts from), so a resumed run's log never has torn lines or records of
// steps that are about to be redone.
class MetricsLog {
 public:
  MetricsLog(const std::string& path, int64_t keep_through);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& record);

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace polysketch::train
