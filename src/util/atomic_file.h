// Files written atomically: the data goes to a temporary file beside the target, is flushed to
// disk, then renamed over the target, so a crash leaves either the old file or the new one.
#pragma once

#include <string>
#include <string_view>

namespace polysketch::util {

void write_file_atomic(const std::string& path, std::string_view data);
// Throws Error naming the file (a directory, a missing or unreadable file).
std::string read_file(const std::string& path);
// Flushes a directory's entries (renames, creations) to disk.
void fsync_dir(const std::string& dir);
// Atomically swaps two existing paths (Linux renameat2 RENAME_EXCHANGE); false where the file
// system does not support it.
bool exchange_paths(const std::string& a, const std::string& b);

}  // namespace polysketch::util
