// Learned sketch: phi(x) = sqrt(r) tanh(f(x) * g(x) / sqrt(r)), where f and g are chains of
// `sketch_levels` blocks LN -> Dense(in -> hidden, no bias) -> GELU -> Dense(hidden -> r, no bias).
// Parameters, chain c in {f, g}, level l: sketch.<c>.<l>.{ln.scale, ln.bias, w1, w2}.
#include <fmt/format.h>

#include <cmath>

#include "attention/feature_maps.h"
#include "kernels/gemm.h"
#include "kernels/rng.h"
#include "kernels/vec.h"

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

// Activations of one chain for a set of rows: per level its input, LN output, pre-GELU, GELU.
template <typename T>
struct ChainActs {
  std::vector<std::vector<T>> x, ln, u, a;
  std::vector<T> y;  // chain output [rows x r]
};

template <typename T>
void chain_forward(const Dims& d, const Param<T>* p, int64_t rows, const T* x, ChainActs<T>& acts) {
  acts.x.assign(d.levels, {});
  acts.ln.assign(d.levels, {});
  acts.u.assign(d.levels, {});
  acts.a.assign(d.levels, {});
  const T* in = x;
  for (int l = 0; l < d.levels; ++l) {
    const int64_t din = d.level_in(l);
    const Param<T>* lp = p + 4 * l;
    acts.x[l].assign(in, in + rows * din);
    acts.ln[l].resize(static_cast<size_t>(rows * din));
    kernels::layernorm_forward(rows, din, in, lp[0].value.data(), lp[1].value.data(),
                               acts.ln[l].data());
    acts.u[l].resize(static_cast<size_t>(rows * d.hidden));
    kernels::gemm<T>(false, false, rows, d.hidden, din, T(1), acts.ln[l].data(), din,
                     lp[2].value.data(), d.hidden, T(0), acts.u[l].data(), d.hidden);
    acts.a[l].resize(acts.u[l].size());
    kernels::gelu_forward(rows * d.hidden, acts.u[l].data(), acts.a[l].data());
    acts.y.resize(static_cast<size_t>(rows * d.r));
    kernels::gemm<T>(false, false, rows, d.r, d.hidden, T(1), acts.a[l].data(), d.hidden,
                     lp[3].value.data(), d.r, T(0), acts.y.data(), d.r);
    in = acts.y.data();
  }
}

// dy [rows x r] -> dx [rows x in] (+=), parameter gradients (+=) into dp[0..4*levels).
template <typename T>
void chain_backward(const Dims& d, const Param<T>* p, int64_t rows, const ChainActs<T>& acts,
                    std::vector<T> dy, T* dx, std::vector<T>* dp) {
  std::vector<T> da, dln;
  for (int l = d.levels - 1; l >= 0; --l) {
    const int64_t din = d.level_in(l);
    const Param<T>* lp = p + 4 * l;
    std::vector<T>* lg = dp + 4 * l;
    // y = a W2
    kernels::gemm<T>(true, false, d.hidden, d.r, rows, T(1), acts.a[l].data(), d.hidden, dy.data(),
                     d.r, T(1), lg[3].data(), d.r);
    da.resize(static_cast<size_t>(rows * d.hidden));
    kernels::gemm<T>(false, true, rows, d.hidden, d.r, T(1), dy.data(), d.r, lp[3].value.data(),
                     d.r, T(0), da.data(), d.hidden);
    kernels::gelu_backward(rows * d.hidden, acts.u[l].data(), da.data(), da.data());
    // u = ln W1
    kernels::gemm<T>(true, false, din, d.hidden, rows, T(1), acts.ln[l].data(), din, da.data(),
                     d.hidden, T(1), lg[2].data(), d.hidden);
    dln.resize(static_cast<size_t>(rows * din));
    kernels::gemm<T>(false, true, rows, din, d.hidden, T(1), da.data(), d.hidden,
                     lp[2].value.data(), d.hidden, T(0), dln.data(), din);
    kernels::layernorm_backward(rows, din, acts.x[l].data(), lp[0].value.data(), dln.data(),
                                dln.data(), lg[0].data(), lg[1].data());
    if (l == 0) {
      for (int64_t i = 0; i < rows * din; ++i) dx[i] += dln[i];
    } else {
      dy.swap(dln);
    }
  }
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
  ChainActs<T> f, g;
  chain_forward(d, fm.learned, rows, x, f);
  chain_forward(d, fm.learned + 4 * d.levels, rows, x, g);
  std::vector<T> t(f.y.size());
  combine(rows * d.r, d.r, f.y.data(), g.y.data(), t.data(), out);
}

template <typename T>
void learned_phi_backward(const FeatureMap<T>& fm, int64_t rows, const T* x, const T* dphi, T* dx,
                          std::vector<T>* dlearned) {
  const Dims d = dims_of(fm);
  ChainActs<T> f, g;
  chain_forward(d, fm.learned, rows, x, f);
  chain_forward(d, fm.learned + 4 * d.levels, rows, x, g);
  const int64_t n = rows * d.r;
  std::vector<T> t(static_cast<size_t>(n));
  combine<T>(n, d.r, f.y.data(), g.y.data(), t.data(), nullptr);
  // d phi / dF = (1 - t^2) G, d phi / dG = (1 - t^2) F.
  std::vector<T> df(static_cast<size_t>(n)), dg(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const T s = dphi[i] * (T(1) - t[i] * t[i]);
    df[i] = s * g.y[i];
    dg[i] = s * f.y[i];
  }
  chain_backward(d, fm.learned, rows, f, std::move(df), dx, dlearned);
  chain_backward(d, fm.learned + 4 * d.levels, rows, g, std::move(dg), dx, dlearned + 4 * d.levels);
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
