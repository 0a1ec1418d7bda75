#include "util/memory.h"

#include <malloc.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace polysketch::util {

double peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  }
  return 0.0;
}

void reset_peak_rss() {
  malloc_trim(0);  // freed heap memory back to the system first, so that it does not count
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
}

uint64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

}  // namespace polysketch::util
