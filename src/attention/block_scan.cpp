#include "attention/block_scan.h"

#include <algorithm>
#include <vector>

#include "attention/dense_tiles.h"
#include "attention/normalizer.h"
#include "util/buffer.h"
#include "util/parallel.h"
#include "kernels/gemm.h"
#include "kernels/packing.h"

namespace polysketch::attention {

using util::parallel_for;

namespace {

// Per-thread buffers (util::grown).
template <typename T>
struct Scratch {
  std::vector<T> c, g, packed, dpacked, n, dc, tile;
};

template <typename T>
struct Blocks {
  int64_t n, b, count;
  Blocks(int64_t n_, int64_t b_) : n(n_), b(b_), count((n_ + b_ - 1) / b_) {}
  int64_t begin(int64_t l) const { return l * b; }
  int64_t size(int64_t l) const { return std::min(b, n - l * b); }
};

// Visits every block once. contrib(l, H, thread) writes block l's state contribution H_l and
// returns whether the block resets the state (holds a document start: then the state after it is
// H_l alone); consume(l, state, thread) receives the exclusive state: causal, the combination of
// the contributions of the blocks visited before l (in scan direction); non-causal, the sum of all
// blocks but l (no resets). Blocks are split into one contiguous chunk per thread: a first pass
// combines each chunk's contributions, then every chunk sweeps its blocks from its own starting
// state. Deterministic for a thread count. `init` (causal only; may be null) is the state before
// the first block: what the earlier chunks of a context-parallel sequence contribute. `final`
// (causal only; may be null) receives the state after the last block: what this chunk passes on
// to the next when chunks run one after another.
template <typename T, typename Contrib, typename Consume>
void block_scan(int64_t count, int64_t state_size, bool causal, bool reverse, int threads,
                const T* init, T* final, Contrib&& contrib, Consume&& consume) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads, count));
  auto chunk_begin = [&](int64_t c) { return c * count / chunks; };
  auto block_at = [&](int64_t idx) { return reverse ? count - 1 - idx : idx; };
  const auto ss = static_cast<size_t>(state_size);
  // state <- reset ? h : state + h
  auto combine = [ss](std::vector<T>& state, const T* h, bool reset) {
    if (reset) {
      std::copy(h, h + ss, state.begin());
    } else {
      for (size_t i = 0; i < ss; ++i) state[i] += h[i];
    }
  };
  std::vector<std::vector<T>> sums(static_cast<size_t>(chunks), std::vector<T>(ss, T(0)));
  std::vector<char> resets(static_cast<size_t>(chunks), 0);
  std::vector<std::vector<T>> hbuf(static_cast<size_t>(chunks), std::vector<T>(ss));
  const bool need_sums = !causal || chunks > 1;
  if (need_sums) {
    parallel_for(chunks, static_cast<int>(chunks), [&](int64_t c, int thread) {
      if (causal && c == chunks - 1) return;  // nothing comes after the last chunk
      auto& h = hbuf[static_cast<size_t>(c)];
      for (int64_t idx = chunk_begin(c); idx < chunk_begin(c + 1); ++idx) {
        const bool reset = contrib(block_at(idx), h.data(), thread);
        combine(sums[static_cast<size_t>(c)], h.data(), reset);
        resets[static_cast<size_t>(c)] |= reset;
      }
    });
  }
  std::vector<std::vector<T>> start(static_cast<size_t>(chunks), std::vector<T>(ss, T(0)));
  if (init)
    for (auto& st : start) std::copy(init, init + ss, st.begin());
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t c2 = 0; c2 < (causal ? c : chunks); ++c2)
      combine(start[static_cast<size_t>(c)], sums[static_cast<size_t>(c2)].data(), resets[static_cast<size_t>(c2)]);
  parallel_for(chunks, static_cast<int>(chunks), [&](int64_t c, int thread) {
    auto& state = start[static_cast<size_t>(c)];
    auto& h = hbuf[static_cast<size_t>(c)];
    std::vector<T> excl(causal ? 0 : ss);
    for (int64_t idx = chunk_begin(c); idx < chunk_begin(c + 1); ++idx) {
      const int64_t l = block_at(idx);
      const bool wanted = !causal || idx < count - 1 || final;  // is the state after it read?
      const bool reset = wanted && contrib(l, h.data(), thread);
      if (causal) {
        consume(l, state.data(), thread);
        if (wanted) combine(state, h.data(), reset);
      } else {
        for (size_t i = 0; i < ss; ++i) excl[i] = state[i] - h[i];
        consume(l, excl.data(), thread);
      }
    }
    if (final && causal && c == chunks - 1) std::copy(state.begin(), state.end(), final);
  });
}

// Where documents start inside block [i0, i0 + m) of a head's sequence (positions p > 0 with
// seg[p] != seg[p - 1], and p = 0 when a document starts at a chunk's first token), relative to
// i0: the first (m if none) and the last (0 if none). Rows before `first` continue the document
// of the earlier blocks; keys from `last` on continue into the later ones.
struct DocStarts {
  int64_t first, last;
  bool any;  // the block holds a start: the state restarts
};
template <typename T>
DocStarts doc_starts(const SketchHead<T>& s, int64_t i0, int64_t m) {
  DocStarts d{m, 0, false};
  const int32_t* seg = s.seg;
  if (!seg) return d;
  for (int64_t t = 0; t < m; ++t)
    if (i0 + t > 0 ? seg[i0 + t] != seg[i0 + t - 1] : s.starts_document) {
      d.first = std::min(d.first, t);
      d.last = t;
      d.any = true;
    }
  return d;
}

// The diagonal block's mask: causal, and documents when there are any.
TileMask block_mask(const int32_t* seg, bool causal, int64_t i0) {
  return {causal, 0, seg ? seg + i0 : nullptr, seg ? seg + i0 : nullptr};
}

template <typename T>
T* build_c(Scratch<T>& s, const T* v, int64_t m, int64_t d) {
  T* c = util::grown(s.c, m * (d + 1));
  append_ones(m, d, v, c);
  return c;
}

template <typename T>
T* build_g(Scratch<T>& s, const T* out, const T* dout, const T* den, int64_t m, int64_t d) {
  T* g = util::grown(s.g, m * (d + 1));
  normalizer_grad(m, d, out, dout, den, g);
  return g;
}

int scan_threads(int threads, int64_t blocks) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, blocks)));
}

// h [rp x dc] = pack(x)^T y, for x [m x r] and y [m x dc].
template <typename T>
void packed_transpose_product(const ComputeContext& ctx, Scratch<T>& sc, int64_t m, int64_t r, const T* x, const T* y,
                              int64_t dc, T* h) {
  const int64_t rp = kernels::packed_size(r);
  T* xp = util::grown(sc.packed, m * rp);
  kernels::pack_self_tensor(m, r, x, r, xp);
  kernels::gemm<T>(ctx, true, false, rp, dc, m, T(1), xp, rp, y, dc, T(0), h, dc);
}

// The key-side state of block l: H_l = pack(B_l)^T C_l over its keys from its last document
// start on; returns whether it restarts the state.
template <typename T>
bool key_state(const SketchHead<T>& s, Scratch<T>& sc, int64_t l, T* h) {
  const int64_t j0 = l * s.block, m = std::min(s.block, s.n - j0);
  const auto ds = doc_starts(s, j0, m);
  const int64_t k0 = j0 + ds.last, mk = m - ds.last;
  const T* c = build_c(sc, s.v + k0 * s.d, mk, s.d);
  packed_transpose_product(*s.ctx, sc, mk, s.r, s.b + k0 * s.r, c, s.d + 1, h);
  return ds.any;
}

// state = sum over blocks of contrib(l, H_l): per-thread partial sums over contiguous block
// ranges, added in thread order (deterministic for a thread count).
template <typename T, typename Contrib>
void block_sum(int64_t count, int64_t state_size, int threads, Contrib&& contrib, T* state) {
  const auto ss = static_cast<size_t>(state_size);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, count));
  std::vector<std::vector<T>> sums(static_cast<size_t>(parts), std::vector<T>(ss, T(0)));
  parallel_for(parts, static_cast<int>(parts), [&](int64_t c, int thread) {
    std::vector<T> h(ss);
    for (int64_t l = c * count / parts; l < (c + 1) * count / parts; ++l) {
      contrib(l, h.data(), thread);
      for (size_t i = 0; i < ss; ++i) sums[static_cast<size_t>(c)][i] += h[i];
    }
  });
  std::fill(state, state + ss, T(0));
  for (const auto& part : sums)
    for (size_t i = 0; i < ss; ++i) state[i] += part[i];
}

// E_l = pack(A_l)^T G_l, the gradient-side state of block l, over its rows before its first
// document start (the later rows do not see earlier blocks); returns whether it restarts the
// state (for the scan in reverse).
template <typename T>
bool grad_state(const SketchHead<T>& s, Scratch<T>& sc, int64_t l, const T* out, const T* dout,
                const T* den, T* h) {
  const int64_t i0 = l * s.block, m = std::min(s.block, s.n - i0);
  const auto ds = doc_starts(s, i0, m);
  if (ds.first == 0) {
    std::fill(h, h + kernels::packed_size(s.r) * (s.d + 1), T(0));
    return ds.any;
  }
  const T* g = build_g(sc, out + i0 * s.d, dout + i0 * s.d, den + i0, ds.first, s.d);
  packed_transpose_product(*s.ctx, sc, ds.first, s.r, s.a + i0 * s.r, g, s.d + 1, h);
  return ds.any;
}

}  // namespace

template <typename T>
void sketch_key_state(const SketchHead<T>& s, int threads, T* state) {
  const Blocks<T> blocks(s.n, s.block);
  const int nt = scan_threads(threads, blocks.count);
  std::vector<Scratch<T>> scratch(static_cast<size_t>(nt));
  block_sum<T>(blocks.count, kernels::packed_size(s.r) * (s.d + 1), nt,
               [&](int64_t l, T* h, int thread) {
                 key_state(s, scratch[static_cast<size_t>(thread)], l, h);
               },
               state);
}

template <typename T>
void sketch_grad_state(const SketchHead<T>& s, int threads, const T* out, const T* dout,
                       const T* den, T* state) {
  const Blocks<T> blocks(s.n, s.block);
  const int nt = scan_threads(threads, blocks.count);
  std::vector<Scratch<T>> scratch(static_cast<size_t>(nt));
  block_sum<T>(blocks.count, kernels::packed_size(s.r) * (s.d + 1), nt,
               [&](int64_t l, T* h, int thread) {
                 grad_state(s, scratch[static_cast<size_t>(thread)], l, out, dout, den, h);
               },
               state);
}

template <typename T>
void sketch_forward(const SketchHead<T>& s, int threads, T* out, T* den) {
  const Blocks<T> blocks(s.n, s.block);
  const int64_t r = s.r, d = s.d, dc = d + 1, rp = kernels::packed_size(r);
  const int nt = scan_threads(threads, blocks.count);
  std::vector<Scratch<T>> scratch(static_cast<size_t>(nt));

  auto contrib = [&](int64_t l, T* h, int thread) {
    return key_state(s, scratch[static_cast<size_t>(thread)], l, h);
  };
  auto consume = [&](int64_t l, const T* z, int thread) {
    auto& sc = scratch[static_cast<size_t>(thread)];
    const int64_t i0 = blocks.begin(l), m = blocks.size(l);
    const int64_t mz = s.causal ? doc_starts(s, i0, m).first : m;  // rows that see z
    T* c = build_c(sc, s.v + i0 * d, m, d);
    T* nl = util::grown(sc.n, m * dc);
    std::fill(nl, nl + m * dc, T(0));
    const TileMask mask = block_mask(s.seg, s.causal, i0);
    if (s.qn) {
      poly_tile_forward<T>(*s.ctx, m, m, s.h, s.qn + i0 * s.h, s.h, s.kn + i0 * s.h, s.h, c, dc, s.p, mask,
                           nl, sc.tile);
    } else {
      poly_tile_forward<T>(*s.ctx, m, m, r, s.a + i0 * r, r, s.b + i0 * r, r, c, dc, 2, mask, nl, sc.tile);
    }
    if (mz > 0) {
      T* ap = util::grown(sc.packed, mz * rp);
      kernels::pack_self_tensor(mz, r, s.a + i0 * r, r, ap);
      kernels::gemm<T>(*s.ctx, false, false, mz, dc, rp, T(1), ap, rp, z, dc, T(1), nl, dc);
    }
    normalize_rows(m, d, nl, out + i0 * d, den + i0);
  };
  block_scan<T>(blocks.count, rp * dc, s.causal, false, nt, s.z_in, s.z_out, contrib, consume);
}

template <typename T>
void sketch_backward(const SketchHead<T>& s, int threads, const T* out, const T* dout,
                     const T* den, T* da, T* db, T* dv, T* dqn, T* dkn) {
  const Blocks<T> blocks(s.n, s.block);
  const int64_t r = s.r, d = s.d, dc = d + 1, rp = kernels::packed_size(r);
  const int nt = scan_threads(threads, blocks.count);
  std::vector<Scratch<T>> scratch(static_cast<size_t>(nt));
  std::fill(da, da + s.n * r, T(0));
  std::fill(db, db + s.n * r, T(0));
  std::fill(dv, dv + s.n * d, T(0));
  auto add_dv = [&](const T* dcl, int64_t i0, int64_t m) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t k = 0; k < d; ++k) dv[(i0 + i) * d + k] += dcl[i * dc + k];
  };

  // Scan 1, forward over Z: diagonal blocks, and dA from the off-diagonal part.
  auto contrib_z = [&](int64_t l, T* h, int thread) {
    return key_state(s, scratch[static_cast<size_t>(thread)], l, h);
  };
  auto consume_z = [&](int64_t l, const T* z, int thread) {
    auto& sc = scratch[static_cast<size_t>(thread)];
    const int64_t i0 = blocks.begin(l), m = blocks.size(l);
    const int64_t mz = s.causal ? doc_starts(s, i0, m).first : m;  // rows that saw z
    T* c = build_c(sc, s.v + i0 * d, m, d);
    T* g = build_g(sc, out + i0 * d, dout + i0 * d, den + i0, m, d);
    T* dcl = util::grown(sc.dc, m * dc);
    std::fill(dcl, dcl + m * dc, T(0));
    const TileMask mask = block_mask(s.seg, s.causal, i0);
    if (s.qn) {
      poly_tile_backward<T>(*s.ctx, m, m, s.h, s.qn + i0 * s.h, s.h, s.kn + i0 * s.h, s.h, c, dc, s.p,
                            mask, g, dqn + i0 * s.h, s.h, dkn + i0 * s.h, s.h, dcl, sc.tile);
    } else {
      poly_tile_backward<T>(*s.ctx, m, m, r, s.a + i0 * r, r, s.b + i0 * r, r, c, dc, 2, mask, g,
                            da + i0 * r, r, db + i0 * r, r, dcl, sc.tile);
    }
    add_dv(dcl, i0, m);
    if (mz == 0) return;
    T* dap = util::grown(sc.dpacked, mz * rp);  // d pack(A_l) = G_l Z^T
    kernels::gemm<T>(*s.ctx, false, true, mz, rp, dc, T(1), g, dc, z, dc, T(0), dap, rp);
    kernels::pack_self_tensor_backward(mz, r, s.a + i0 * r, r, dap, da + i0 * r, r);
  };
  block_scan<T>(blocks.count, rp * dc, s.causal, false, nt, s.z_in, static_cast<T*>(nullptr), contrib_z, consume_z);

  // Scan 2, backward over U = sum of pack(A_m)^T G_m of later blocks: dB and dC.
  auto contrib_u = [&](int64_t l, T* h, int thread) {
    return grad_state(s, scratch[static_cast<size_t>(thread)], l, out, dout, den, h);
  };
  auto consume_u = [&](int64_t l, const T* u, int thread) {
    auto& sc = scratch[static_cast<size_t>(thread)];
    const int64_t k0 = s.causal ? doc_starts(s, blocks.begin(l), blocks.size(l)).last : 0;
    const int64_t j0 = blocks.begin(l) + k0, m = blocks.size(l) - k0;  // keys the later rows see
    T* c = build_c(sc, s.v + j0 * d, m, d);
    T* bp = util::grown(sc.packed, m * rp);
    kernels::pack_self_tensor(m, r, s.b + j0 * r, r, bp);
    T* dbp = util::grown(sc.dpacked, m * rp);  // d pack(B_l) = C_l U^T
    kernels::gemm<T>(*s.ctx, false, true, m, rp, dc, T(1), c, dc, u, dc, T(0), dbp, rp);
    kernels::pack_self_tensor_backward(m, r, s.b + j0 * r, r, dbp, db + j0 * r, r);
    T* dcl = util::grown(sc.dc, m * dc);  // dC_l = pack(B_l) U
    kernels::gemm<T>(*s.ctx, false, false, m, dc, rp, T(1), bp, rp, u, dc, T(0), dcl, dc);
    add_dv(dcl, j0, m);
  };
  block_scan<T>(blocks.count, rp * dc, s.causal, true, nt, s.u_in, s.u_out, contrib_u, consume_u);
}

#define POLYSKETCH_INSTANTIATE(T)                                                           \
  template void sketch_forward<T>(const SketchHead<T>&, int, T*, T*);                       \
  template void sketch_backward<T>(const SketchHead<T>&, int, const T*, const T*, const T*, \
                                   T*, T*, T*, T*, T*);                                      \
  template void sketch_key_state<T>(const SketchHead<T>&, int, T*);                         \
  template void sketch_grad_state<T>(const SketchHead<T>&, int, const T*, const T*,        \
                                     const T*, T*);
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE

}  // namespace polysketch::attention
