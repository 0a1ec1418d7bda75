// Argument checks shared by the library's entry points and the CLI: each throws Error naming the
// flag (or field), the allowed range and the value given. NaN and infinities never pass.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <cstdint>

#include "polysketch/error.h"

namespace polysketch::util {

inline void check_range(const char* name, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) throw Error(fmt::format("{} must be in [{}, {}], got {}", name, lo, hi, v));
}

inline void check_range(const char* name, double v, double lo, double hi) {
  if (!std::isfinite(v) || v < lo || v > hi)
    throw Error(fmt::format("{} must be a finite number in [{}, {}], got {}", name, lo, hi, v));
}

inline void check_positive(const char* name, double v, double hi) {
  if (!std::isfinite(v) || v <= 0 || v > hi)
    throw Error(fmt::format("{} must be a finite number in (0, {}], got {}", name, hi, v));
}

}  // namespace polysketch::util
