// Threading helpers. Work is split statically (cyclically) so that, for a fixed thread
// count, every item always runs on the same thread and every reduction happens in the same
// order: results are deterministic.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace polysketch::util {

namespace detail {
template <bool balanced, typename F>
void for_items(int64_t count, int threads, F&& body) {
  if (threads <= 1 || count <= 1) {
    for (int64_t i = 0; i < count; ++i) body(i, 0);
    return;
  }
  if constexpr (balanced) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t i = 0; i < count; ++i) body(i, omp_get_thread_num());
  } else {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int64_t i = 0; i < count; ++i) body(i, omp_get_thread_num());
  }
}
}  // namespace detail

// body(item, thread) for item in [0, count) on `threads` threads (no region when threads == 1,
// so it nests inside an outer parallel loop at no cost).
template <typename F>
void parallel_for(int64_t count, int threads, F&& body) {
  detail::for_items<false>(count, threads, body);
}

// The same for items whose results do not depend on the thread that runs them (no per-thread
// accumulation): handed out as threads become free, so a core slowed by its neighbours (a VM's
// steal, memory contention) does not hold the others at the end of the loop.
template <typename F>
void parallel_for_balanced(int64_t count, int threads, F&& body) {
  detail::for_items<true>(count, threads, body);
}

// Threads for an elementwise pass over `work` values: every core outside our parallel regions
// when the pass is large enough to pay for waking them, else one.
inline int elementwise_threads(int64_t work) {
  return work >= (int64_t{1} << 16) && !omp_in_parallel() ? omp_get_max_threads() : 1;
}

// body(begin, end, thread): [0, count) split into one contiguous range per thread (static, so the
// split, and any per-thread partial result, depends only on the thread count).
template <typename F>
void parallel_ranges(int64_t count, int threads, F&& body) {
  if (threads <= 1 || count <= 1) {
    body(int64_t{0}, count, 0);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    body(count * t / nt, count * (t + 1) / nt, t);
  }
}

// One accumulation buffer per thread; thread 0 writes straight into `primary`.
template <typename T>
class PerThread {
 public:
  PerThread(int threads, int64_t size, T* primary) : size_(size), primary_(primary) {
    std::fill(primary, primary + size, T(0));
    extra_.assign(static_cast<size_t>(std::max(threads - 1, 0)), std::vector<T>());
  }
  T* get(int thread) {
    if (thread == 0) return primary_;
    auto& buf = extra_[static_cast<size_t>(thread - 1)];
    if (buf.empty()) buf.assign(static_cast<size_t>(size_), T(0));
    return buf.data();
  }
  void reduce_into(T* dst) const {
    for (const auto& buf : extra_)
      if (!buf.empty())
        for (int64_t i = 0; i < size_; ++i) dst[i] += buf[static_cast<size_t>(i)];
  }

 private:
  int64_t size_;
  T* primary_;
  std::vector<std::vector<T>> extra_;
};

}  // namespace polysketch::util
