#include "train/run_dir.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "polysketch/error.h"
#include "util/atomic_file.h"

namespace polysketch::train {

namespace fs = std::filesystem;

RunLock::RunLock(const std::string& root) {
  const std::string path = (fs::path(root) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(fmt::format("cannot create {}: {}", path, std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    const ssize_t got = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    const std::string holder = got > 0 ? fmt::format(" (pid {})", std::string(buf, got)) : "";
    throw Error(fmt::format("{} is in use by another trainer{}; wait for it to finish or choose "
                            "another --out",
                            root, holder));
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // The pid is only for the message above; the lock itself is held.
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

int remove_orphans(const std::string& root) {
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    const bool tmp_dir = name.rfind(".step-", 0) == 0 && name.find(".tmp-") != std::string::npos;
    const bool tmp_link = name.rfind(".latest.tmp-", 0) == 0;
    const bool tmp_file = name.find(".tmp.") != std::string::npos;
    if (tmp_dir || tmp_link || tmp_file) {
      fs::remove_all(e.path(), ec);
      ++removed;
    }
  }
  return removed;
}

MetricsLog::MetricsLog(const std::string& path, int64_t keep_through) : path_(path) {
  std::string kept;
  if (fs::exists(path)) {
    std::istringstream in(util::read_file(path));
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // no newline: a torn last record
      try {
        const auto j = nlohmann::json::parse(line);
        if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
            j["step"].get<int64_t>() <= keep_through)
          kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        // a damaged record: dropped
      }
    }
  }
  util::write_file_atomic(path, kept);
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) throw Error(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::write(const nlohmann::json& record) {
  const std::string line = record.dump() + "\n";
  if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    throw Error(fmt::format("cannot write {}: {}", path_, std::strerror(errno)));
}

}  // namespace polysketch::train
