// Files written atomically: the data goes to a temporary file beside the target, is flushed to
// disk, then renamed over the target, so a crash leaves either the old file or the new one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace polysketch::util {

void write_file_atomic(const std::string& path, std::string_view data);

// A file written in pieces, atomically: appended to a temporary file beside `path` that commit()
// flushes to disk and renames over `path`. Destroyed uncommitted (an error, an exception), the
// temporary is removed and `path` is untouched. Errors throw Error naming `path`.
class AtomicWriter {
 public:
  explicit AtomicWriter(std::string path);
  ~AtomicWriter();
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  void append(std::string_view data);
  void write_at(uint64_t offset, std::string_view data);  // overwrite bytes already appended
  void commit();
  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void fail(int err);
  std::string path_, tmp_;
  int fd_ = -1;
};
// Throws Error naming the file (a directory, a missing or unreadable file).
std::string read_file(const std::string& path);
// Flushes a directory's entries (renames, creations) to disk.
void fsync_dir(const std::string& dir);
// Atomically swaps two existing paths (Linux renameat2 RENAME_EXCHANGE); false where the file
// system does not support it.
bool exchange_paths(const std::string& a, const std::string& b);

}  // namespace polysketch::util
