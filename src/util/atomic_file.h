// Files written atomically: the data goes to a temporary file beside the target, is flushed to
// disk, then renamed over the target, so a crash leaves either the old file or the new one.
#pragma once

#include <string>
#include <string_view>

namespace polysketch::util {

void write_file_atomic(const std::string& path, std::string_view data);
std::string read_file(const std::string& path);  // throws Error naming the file

}  // namespace polysketch::util
