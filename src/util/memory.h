// Process memory: peak resident set (VmHWM) and the machine's physical memory.
#pragma once

#include <cstdint>

namespace polysketch::util {

double peak_rss_mb();      // VmHWM of this process, MiB
void reset_peak_rss();     // so the next peak_rss_mb() covers only what follows (Linux >= 4.0)
uint64_t physical_memory_bytes();

}  // namespace polysketch::util
