// Learned sketch: phi(x) = sqrt(r) tanh(f(x) * g(x) / sqrt(r)), where f and g are chains of
// `sketch_levels` blocks LN -> Dense(in -> hidden, no bias) -> GELU -> Dense(hidden -> r, no bias).
// Parameters, chain c in {f, g}, level l: sketch.<c>.<l>.{ln.scale, ln.bias, w1, w2}.
#include <fmt/format.h>

#include <cmath>

#include "attention/feature_maps.h"
#include "kernels/gemm.h"
#include "kernels/rng.h"
#include "kernels/vec.h"
#include "util/buffer.h"

namespace polysketch::attention {

namespace {

struct Dims {
  int64_t in, hidden, r;
  int levels;
  int64_t level_in(int l) const { return l == 0 ? in : r; }
};

template <typename T>
Dims dims_of(const FeatureMap<T>& fm) {
  return {fm.in_dim, static_cast<int64_t>(fm.cfg->hidden_mult) * fm.cfg->r, fm.cfg->r,
          fm.cfg->sketch_levels};
}

// Activations of one chain for a set of rows: per level its LN output, pre-GELU u, GELU a, the
// tanh term of the GELU (for backward) and output y (the next level's input). Grow-only buffers
// reused from call to call on each thread (thread_local below): fresh ones cost a zero-fill and
// page faults on every call.
template <typename T>
struct ChainActs {
  std::vector<std::vector<T>> ln, u, a, t, y;
  void reserve(const Dims& d, int64_t rows) {
    for (auto* v : {&ln, &u, &a, &t, &y})
      if (static_cast<int>(v->size()) < d.levels) v->resize(static_cast<size_t>(d.levels));
    for (int l = 0; l < d.levels; ++l) {
      util::grown(ln[l], rows * d.level_in(l));
      for (auto* v : {&u, &a, &t}) util::grown((*v)[l], rows * d.hidden);
      util::grown(y[l], rows * d.r);
    }
  }
  const T* input(int l, const T* x) const { return l == 0 ? x : y[l - 1].data(); }
  const T* out(const Dims& d) const { return y[d.levels - 1].data(); }
};

template <typename T>
void chain_forward(const ComputeContext& ctx, const Dims& d, const Param<T>* p, int64_t rows, const T* x, ChainActs<T>& acts) {
  acts.reserve(d, rows);
  for (int l = 0; l < d.levels; ++l) {
    const int64_t din = d.level_in(l);
    const Param<T>* lp = p + 4 * l;
    kernels::layernorm_forward(rows, din, acts.input(l, x), lp[0].value.data(), lp[1].value.data(),
                               acts.ln[l].data());
    kernels::gemm<T>(ctx, false, false, rows, d.hidden, din, T(1), acts.ln[l].data(), din,
                     lp[2].value.data(), d.hidden, T(0), acts.u[l].data(), d.hidden);
    kernels::gelu_forward(rows * d.hidden, acts.u[l].data(), acts.a[l].data(), acts.t[l].data());
    kernels::gemm<T>(ctx, false, false, rows, d.r, d.hidden, T(1), acts.a[l].data(), d.hidden,
                     lp[3].value.data(), d.r, T(0), acts.y[l].data(), d.r);
  }
}

template <typename T>
struct BackScratch {
  std::vector<T> dy, da, dln;
};

// dy [rows x r] (overwritten) -> dx [rows x in] (+=), parameter gradients (+=) into
// dp[0..4*levels).
template <typename T>
void chain_backward(const ComputeContext& ctx, const Dims& d, const Param<T>* p, int64_t rows, const T* x,
                    const ChainActs<T>& acts, T* dy, T* dx, std::vector<T>* dp,
                    BackScratch<T>& sc) {
  for (int l = d.levels - 1; l >= 0; --l) {
    const int64_t din = d.level_in(l);
    const Param<T>* lp = p + 4 * l;
    std::vector<T>* lg = dp + 4 * l;
    // y = a W2
    kernels::gemm<T>(ctx, true, false, d.hidden, d.r, rows, T(1), acts.a[l].data(), d.hidden, dy, d.r,
                     T(1), lg[3].data(), d.r);
    T* da = util::grown(sc.da, rows * d.hidden);
    kernels::gemm<T>(ctx, false, true, rows, d.hidden, d.r, T(1), dy, d.r, lp[3].value.data(), d.r,
                     T(0), da, d.hidden);
    kernels::gelu_backward_saved(rows * d.hidden, acts.u[l].data(), acts.t[l].data(), da, da);
    // u = ln W1
    kernels::gemm<T>(ctx, true, false, din, d.hidden, rows, T(1), acts.ln[l].data(), din, da, d.hidden,
                     T(1), lg[2].data(), d.hidden);
    T* dln = util::grown(sc.dln, rows * din);
    kernels::gemm<T>(ctx, false, true, rows, din, d.hidden, T(1), da, d.hidden, lp[2].value.data(),
                     d.hidden, T(0), dln, din);
    kernels::layernorm_backward(rows, din, acts.input(l, x), lp[0].value.data(), dln, dln,
                                lg[0].data(), lg[1].data());
    if (l == 0) {
      for (int64_t i = 0; i < rows * din; ++i) dx[i] += dln[i];
    } else {
      std::copy(dln, dln + rows * din, dy);  // din == r above level 0
    }
  }
}

// Per-thread working memory of the learned sketch.
template <typename T>
struct LearnedScratch {
  ChainActs<T> f, g;
  std::vector<T> t, df, dg;
  BackScratch<T> back;
};

template <typename T>
LearnedScratch<T>& scratch() {
  thread_local LearnedScratch<T> s;
  return s;
}

}  // namespace

template <typename T>
void init_learned_sketch(const AttentionConfig& cfg, int64_t head_dim,
                         std::vector<Param<T>>& params) {
  const Dims d{head_dim, static_cast<int64_t>(cfg.hidden_mult) * cfg.r, cfg.r, cfg.sketch_levels};
  auto rng = kernels::Rng::derive(cfg.seed, static_cast<uint64_t>(cfg.layer), 0x1ea4ed);
  auto dense = [&](int64_t fan_in, int64_t fan_out) {
    std::vector<T> w(static_cast<size_t>(fan_in * fan_out));
    const double sd = 1.0 / std::sqrt(static_cast<double>(fan_in));
    for (auto& x : w) x = static_cast<T>(sd * rng.normal());
    return w;
  };
  for (const char* chain : {"f", "g"}) {
    for (int l = 0; l < d.levels; ++l) {
      const int64_t din = d.level_in(l);
      const std::string pre = fmt::format("sketch.{}.{}.", chain, l);
      params.push_back({pre + "ln.scale", {din}, std::vector<T>(static_cast<size_t>(din), T(1))});
      params.push_back({pre + "ln.bias", {din}, std::vector<T>(static_cast<size_t>(din), T(0))});
      params.push_back({pre + "w1", {din, d.hidden}, dense(din, d.hidden)});
      params.push_back({pre + "w2", {d.hidden, d.r}, dense(d.hidden, d.r)});
    }
  }
}

int64_t learned_sketch_size(const AttentionConfig& cfg, int64_t head_dim) {
  const Dims d{head_dim, static_cast<int64_t>(cfg.hidden_mult) * cfg.r, cfg.r, cfg.sketch_levels};
  int64_t n = 0;
  for (int l = 0; l < d.levels; ++l) n += 2 * d.level_in(l) + d.level_in(l) * d.hidden + d.hidden * d.r;
  return 2 * n;  // chains f and g
}

namespace {
// phi = sqrt(r) tanh(F * G / sqrt(r)); returns t = tanh(.) in `t` for backward.
template <typename T>
void combine(int64_t n, int64_t r, const T* f, const T* g, T* t, T* out) {
  const T inv = static_cast<T>(1.0 / std::sqrt(static_cast<double>(r)));
  for (int64_t i = 0; i < n; ++i) t[i] = f[i] * g[i] * inv;
  kernels::tanh_inplace(n, t);
  const T sr = static_cast<T>(std::sqrt(static_cast<double>(r)));
  if (out)
    for (int64_t i = 0; i < n; ++i) out[i] = sr * t[i];
}
}  // namespace

template <typename T>
void learned_phi_forward(const FeatureMap<T>& fm, int64_t rows, const T* x, T* out) {
  const Dims d = dims_of(fm);
  auto& s = scratch<T>();
  chain_forward(*fm.ctx, d, fm.learned, rows, x, s.f);
  chain_forward(*fm.ctx, d, fm.learned + 4 * d.levels, rows, x, s.g);
  combine(rows * d.r, d.r, s.f.out(d), s.g.out(d), util::grown(s.t, rows * d.r), out);
}

template <typename T>
void learned_phi_backward(const FeatureMap<T>& fm, int64_t rows, const T* x, const T* dphi, T* dx,
                          std::vector<T>* dlearned) {
  const Dims d = dims_of(fm);
  auto& s = scratch<T>();
  chain_forward(*fm.ctx, d, fm.learned, rows, x, s.f);
  chain_forward(*fm.ctx, d, fm.learned + 4 * d.levels, rows, x, s.g);
  const int64_t n = rows * d.r;
  T* t = util::grown(s.t, n);
  const T* f = s.f.out(d);
  const T* g = s.g.out(d);
  combine<T>(n, d.r, f, g, t, nullptr);
  // d phi / dF = (1 - t^2) G, d phi / dG = (1 - t^2) F.
  T* df = util::grown(s.df, n);
  T* dg = util::grown(s.dg, n);
  for (int64_t i = 0; i < n; ++i) {
    const T sl = dphi[i] * (T(1) - t[i] * t[i]);
    df[i] = sl * g[i];
    dg[i] = sl * f[i];
  }
  chain_backward(*fm.ctx, d, fm.learned, rows, x, s.f, df, dx, dlearned, s.back);
  chain_backward(*fm.ctx, d, fm.learned + 4 * d.levels, rows, x, s.g, dg, dx, dlearned + 4 * d.levels,
                 s.back);
}

#define POLYSKETCH_INSTANTIATE(T)                                                               \
  template void init_learned_sketch<T>(const AttentionConfig&, int64_t, std::vector<Param<T>>&); \
  template void learned_phi_forward<T>(const FeatureMap<T>&, int64_t, const T*, T*);            \
  template void learned_phi_backward<T>(const FeatureMap<T>&, int64_t, const T*, const T*, T*,  \
                                        std::vector<T>*);
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE

}  // namespace polysketch::attention
