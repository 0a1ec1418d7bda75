#include "attention/dense_tiles.h"

#include <algorithm>

#include "util/parallel.h"
#include "kernels/gemm.h"

namespace polysketch::attention {

using util::parallel_for;
using util::PerThread;

namespace {

constexpr int64_t kTile = 128;

// s -> s^p (p even) and, if dw is given, dw = dL/ds = g * p s^(p-1) for the incoming g in dw.
template <typename T>
void apply_power(int64_t mq, int64_t mk, int p, TileMask mask, T* s, T* dw) {
  const int half = p / 2;
  for (int64_t i = 0; i < mq; ++i) {
    T* si = s + i * mk;
    T* di = dw ? dw + i * mk : nullptr;
    const int64_t limit = mask.causal ? std::clamp<int64_t>(i + mask.diag_offset + 1, 0, mk) : mk;
#pragma omp simd
    for (int64_t j = 0; j < limit; ++j) {
      const T v = si[j], v2 = v * v;
      T wm1 = T(1);
      for (int k = 1; k < half; ++k) wm1 *= v2;
      if (di) di[j] *= static_cast<T>(p) * v * wm1;
      si[j] = wm1 * v2;
    }
    for (int64_t j = limit; j < mk; ++j) {
      si[j] = T(0);
      if (di) di[j] = T(0);
    }
    if (!mask.seg_q) continue;
    for (int64_t j = 0; j < limit; ++j)
      if (mask.seg_k[j] != mask.seg_q[i]) {
        si[j] = T(0);
        if (di) di[j] = T(0);
      }
  }
}

// Document masking: whether query tile [i0, i0+mq) and key tile [j0, j0+mk) share no document
// (ids non-decreasing: the keys' last id is below the queries' first).
bool disjoint(const int32_t* seg, int64_t i0, int64_t j0, int64_t mk) {
  return seg && seg[j0 + mk - 1] < seg[i0];
}
TileMask tile_mask(bool causal, const int32_t* seg, int64_t i0, int64_t j0) {
  return {causal, i0 - j0, seg ? seg + i0 : nullptr, seg ? seg + j0 : nullptr};
}

}  // namespace

template <typename T>
void poly_tile_forward(const ComputeContext& ctx, int64_t mq, int64_t mk, int64_t dim, const T* x, int64_t ldx, const T* y,
                       int64_t ldy, const T* c, int64_t dc, int p, TileMask mask, T* n,
                       std::vector<T>& scratch) {
  scratch.resize(static_cast<size_t>(mq * mk));
  T* s = scratch.data();
  kernels::gemm<T>(ctx, false, true, mq, mk, dim, T(1), x, ldx, y, ldy, T(0), s, mk);
  apply_power<T>(mq, mk, p, mask, s, nullptr);
  kernels::gemm<T>(ctx, false, false, mq, dc, mk, T(1), s, mk, c, dc, T(1), n, dc);
}

template <typename T>
void poly_tile_backward(const ComputeContext& ctx, int64_t mq, int64_t mk, int64_t dim, const T* x, int64_t ldx, const T* y,
                        int64_t ldy, const T* c, int64_t dc, int p, TileMask mask, const T* g,
                        T* dx, int64_t lddx, T* dy, int64_t lddy, T* dcout,
                        std::vector<T>& scratch) {
  scratch.resize(static_cast<size_t>(2 * mq * mk));
  T* s = scratch.data();
  T* ds = s + mq * mk;
  kernels::gemm<T>(ctx, false, true, mq, mk, dim, T(1), x, ldx, y, ldy, T(0), s, mk);
  kernels::gemm<T>(ctx, false, true, mq, mk, dc, T(1), g, dc, c, dc, T(0), ds, mk);  // dW = G C^T
  apply_power<T>(mq, mk, p, mask, s, ds);                                         // s <- W, ds <- dS
  kernels::gemm<T>(ctx, true, false, mk, dc, mq, T(1), s, mk, g, dc, T(1), dcout, dc);
  kernels::gemm<T>(ctx, false, false, mq, dim, mk, T(1), ds, mk, y, ldy, T(1), dx, lddx);
  kernels::gemm<T>(ctx, true, false, mk, dim, mq, T(1), ds, mk, x, ldx, T(1), dy, lddy);
}

template <typename T>
void poly_attention_forward(const ComputeContext& ctx, int64_t n, int64_t dim, const T* qn, const T* kn, const T* c,
                            int64_t dc, int p, bool causal, const int32_t* seg, int threads, T* nout) {
  const int64_t tiles = (n + kTile - 1) / kTile;
  parallel_for(tiles, threads, [&](int64_t qt, int) {
    std::vector<T> scratch;
    const int64_t i0 = qt * kTile, mq = std::min(kTile, n - i0);
    T* out = nout + i0 * dc;
    std::fill(out, out + mq * dc, T(0));
    const int64_t last = causal ? qt : tiles - 1;
    for (int64_t kt = 0; kt <= last; ++kt) {
      const int64_t j0 = kt * kTile, mk = std::min(kTile, n - j0);
      if (disjoint(seg, i0, j0, mk)) continue;
      poly_tile_forward<T>(ctx, mq, mk, dim, qn + i0 * dim, dim, kn + j0 * dim, dim, c + j0 * dc, dc, p,
                           tile_mask(causal, seg, i0, j0), out, scratch);
    }
  });
}

template <typename T>
void poly_attention_backward(const ComputeContext& ctx, int64_t n, int64_t dim, const T* qn, const T* kn, const T* c,
                             int64_t dc, int p, bool causal, const int32_t* seg, int threads, const T* g,
                             T* dqn, T* dkn, T* dc_out) {
  const int64_t tiles = (n + kTile - 1) / kTile;
  std::fill(dkn, dkn + n * dim, T(0));
  std::fill(dc_out, dc_out + n * dc, T(0));
  // Key tiles in parallel; each thread accumulates dq into its own buffer, summed in thread
  // order afterwards so the result depends only on the thread count.
  PerThread<T> dq_parts(threads, n * dim, dqn);
  parallel_for(tiles, threads, [&](int64_t kt, int thread) {
    std::vector<T> scratch;
    T* dq = dq_parts.get(thread);
    const int64_t j0 = kt * kTile, mk = std::min(kTile, n - j0);
    for (int64_t qt = causal ? kt : 0; qt < tiles; ++qt) {
      const int64_t i0 = qt * kTile, mq = std::min(kTile, n - i0);
      if (disjoint(seg, i0, j0, mk)) break;  // so are all later query tiles
      poly_tile_backward<T>(ctx, mq, mk, dim, qn + i0 * dim, dim, kn + j0 * dim, dim, c + j0 * dc, dc, p,
                            tile_mask(causal, seg, i0, j0), g + i0 * dc, dq + i0 * dim, dim, dkn + j0 * dim, dim,
                            dc_out + j0 * dc, scratch);
    }
  });
  dq_parts.reduce_into(dqn);
}

#define POLYSKETCH_INSTANTIATE(T)                                                                 \
  template void poly_tile_forward<T>(const ComputeContext&, int64_t, int64_t, int64_t, const T*, int64_t, const T*,     \
                                     int64_t, const T*, int64_t, int, TileMask, T*,              \
                                     std::vector<T>&);                                           \
  template void poly_tile_backward<T>(const ComputeContext&, int64_t, int64_t, int64_t, const T*, int64_t, const T*,    \
                                      int64_t, const T*, int64_t, int, TileMask, const T*, T*,   \
                                      int64_t, T*, int64_t, T*, std::vector<T>&);                \
  template void poly_attention_forward<T>(const ComputeContext&, int64_t, int64_t, const T*, const T*, const T*,        \
                                          int64_t, int, bool, const int32_t*, int, T*);          \
  template void poly_attention_backward<T>(const ComputeContext&, int64_t, int64_t, const T*, const T*, const T*,       \
                                           int64_t, int, bool, const int32_t*, int, const T*, T*, T*, T*);
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE

}  // namespace polysketch::attention
