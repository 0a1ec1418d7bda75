// Grow-only scratch buffers: reused across calls so that large working memory is allocated (and
// page-faulted in) once, not on every call. Contents are unspecified; callers write before reading.
#pragma once

#include <cstdint>
#include <vector>

namespace polysketch::util {

template <typename T>
T* grown(std::vector<T>& buf, int64_t size) {
  if (static_cast<int64_t>(buf.size()) < size) buf.resize(static_cast<size_t>(size));
  return buf.data();
}

}  // namespace polysketch::util
