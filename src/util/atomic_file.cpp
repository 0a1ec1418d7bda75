#include "util/atomic_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "polysketch/error.h"

namespace polysketch::util {

AtomicWriter::AtomicWriter(std::string path)
    : path_(std::move(path)), tmp_(fmt::format("{}.tmp.{}", path_, getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd_ < 0) throw Error(fmt::format("cannot write {}: {}", path_, std::strerror(errno)));
}

AtomicWriter::~AtomicWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicWriter::fail(int err) {
  ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  throw Error(fmt::format("cannot write {}: {}", path_, std::strerror(err)));
}

void AtomicWriter::append(std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t w = ::write(fd_, data.data() + done, data.size() - done);
    if (w < 0) fail(errno);
    done += static_cast<size_t>(w);
  }
}

void AtomicWriter::write_at(uint64_t offset, std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t w = ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (w < 0) fail(errno);
    done += static_cast<size_t>(w);
  }
}

void AtomicWriter::commit() {
  if (::fsync(fd_) != 0) fail(errno);
  if (::close(fd_) != 0) {
    fd_ = -1;
    ::unlink(tmp_.c_str());
    throw Error(fmt::format("cannot write {}: {}", path_, std::strerror(errno)));
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw Error(fmt::format("cannot write {}: {}", path_, std::strerror(err)));
  }
}

void write_file_atomic(const std::string& path, std::string_view data) {
  AtomicWriter w(path);
  w.append(data);
  w.commit();
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(fmt::format("cannot read {}: it is a directory, expected a file", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(fmt::format("cannot read {}", path));
  return ss.str();
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: the renames themselves are already atomic
  ::fsync(fd);
  ::close(fd);
}

bool exchange_paths(const std::string& a, const std::string& b) {
  return ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0;
}

}  // namespace polysketch::util
