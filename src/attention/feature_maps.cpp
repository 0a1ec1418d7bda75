#include "attention/feature_maps.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "attention/mechanism.h"
#include "kernels/gemm.h"
#include "kernels/rng.h"

namespace polysketch::attention {

namespace {

// The degree-m sketch is a tree (the paper's Algorithm 1): sketch(X, 2m) =
// sqrt(1/r) (sketch_1(X, m) G1) * (sketch_2(X, m) G2) with two *independent* degree-m sketches,
// which makes E[<phi(q), phi(k)>] = <q,k>^(2m) exactly. Matrices are stored in pre-order:
// [subtree 1, subtree 2, G1, G2]; matrices_for(m) counts those of a degree-m subtree.
int matrices_for(int m) { return m <= 1 ? 0 : 2 * matrices_for(m / 2) + 2; }

// Gaussian: i.i.d. N(0,1). Hadamard: G[i][c] = sign_i * H[i][col_c] with H the +-1 Sylvester
// Hadamard matrix of size in_dim and columns drawn as successive random permutations, so that
// E[G G^T] = r I as for the Gaussian and the estimator stays unbiased.
template <typename T>
std::vector<T> draw_matrix(SketchType type, int64_t in_dim, int64_t r, kernels::Rng& rng) {
  std::vector<T> g(static_cast<size_t>(in_dim * r));
  if (type == SketchType::gaussian) {
    for (auto& x : g) x = static_cast<T>(rng.normal());
    return g;
  }
  std::vector<int> sign(static_cast<size_t>(in_dim));
  for (auto& s : sign) s = (rng.next_u64() >> 63) ? 1 : -1;
  std::vector<int64_t> perm(static_cast<size_t>(in_dim));
  for (int64_t c = 0; c < r; ++c) {
    const int64_t slot = c % in_dim;
    if (slot == 0) {
      std::iota(perm.begin(), perm.end(), 0);
      for (int64_t i = in_dim - 1; i > 0; --i)
        std::swap(perm[i], perm[rng.below(static_cast<uint64_t>(i + 1))]);
    }
    const int64_t col = perm[slot];
    for (int64_t i = 0; i < in_dim; ++i) {
      const int h = (__builtin_popcountll(static_cast<uint64_t>(i & col)) & 1) ? -1 : 1;
      g[i * r + c] = static_cast<T>(sign[i] * h);
    }
  }
  return g;
}

template <typename T>
void draw_tree(const AttentionConfig& cfg, int m, int64_t head_dim, kernels::Rng& rng,
               std::vector<std::vector<T>>& out) {
  if (m <= 1) return;
  draw_tree(cfg, m / 2, head_dim, rng, out);
  draw_tree(cfg, m / 2, head_dim, rng, out);
  const int64_t in = m == 2 ? head_dim : cfg.r;
  out.push_back(draw_matrix<T>(cfg.sketch, in, cfg.r, rng));
  out.push_back(draw_matrix<T>(cfg.sketch, in, cfg.r, rng));
}

}  // namespace

template <typename T>
std::vector<std::vector<T>> draw_random_sketch(const AttentionConfig& cfg, int64_t head_dim) {
  std::vector<std::vector<T>> sketch;
  auto rng = kernels::Rng::derive(cfg.seed, static_cast<uint64_t>(cfg.layer), 0x5ce7c4);
  draw_tree(cfg, cfg.p / 2, head_dim, rng, sketch);
  return sketch;
}

namespace {

template <typename T>
struct TreeWalk {
  const FeatureMap<T>& fm;
  int64_t rows;
  const T* x;
  T scale() const { return static_cast<T>(1.0 / std::sqrt(static_cast<double>(fm.out_dim))); }
  int64_t in_of(int m) const { return m == 2 ? fm.in_dim : fm.out_dim; }

  // out [rows x r] = sketch of degree m whose matrices start at `at`; also returns the two
  // products P1 = Y1 G1, P2 = Y2 G2 and sub-sketches Y1, Y2 when asked (for backward).
  void forward(int m, size_t at, T* out, std::vector<T>* p1s = nullptr,
               std::vector<T>* p2s = nullptr, std::vector<T>* y1s = nullptr,
               std::vector<T>* y2s = nullptr) const {
    const int64_t r = fm.out_dim, in = in_of(m);
    const size_t sub = static_cast<size_t>(matrices_for(m / 2));
    const auto& g = *fm.sketch;
    std::vector<T> y1, y2, p1(static_cast<size_t>(rows * r)), p2(p1.size());
    const T* in1 = x;
    const T* in2 = x;
    if (m > 2) {
      y1.resize(static_cast<size_t>(rows * r));
      y2.resize(y1.size());
      forward(m / 2, at, y1.data());
      forward(m / 2, at + sub, y2.data());
      in1 = y1.data();
      in2 = y2.data();
    }
    kernels::gemm<T>(*fm.ctx, false, false, rows, r, in, T(1), in1, in, g[at + 2 * sub].data(), r, T(0),
                     p1.data(), r);
    kernels::gemm<T>(*fm.ctx, false, false, rows, r, in, T(1), in2, in, g[at + 2 * sub + 1].data(), r,
                     T(0), p2.data(), r);
    const T s = scale();
    for (size_t i = 0; i < p1.size(); ++i) out[i] = s * p1[i] * p2[i];
    if (p1s) {
      *p1s = std::move(p1);
      *p2s = std::move(p2);
      *y1s = std::move(y1);
      *y2s = std::move(y2);
    }
  }

  // dx += J^T dout for the degree-m subtree at `at`.
  void backward(int m, size_t at, const T* dout, T* dx) const {
    const int64_t r = fm.out_dim, in = in_of(m);
    const size_t sub = static_cast<size_t>(matrices_for(m / 2));
    const auto& g = *fm.sketch;
    std::vector<T> p1, p2, y1, y2, tmp(static_cast<size_t>(rows * r));
    forward(m, at, tmp.data(), &p1, &p2, &y1, &y2);
    const T s = scale();
    std::vector<T> t1(p1.size()), t2(p1.size());
    for (size_t i = 0; i < p1.size(); ++i) {
      t1[i] = s * dout[i] * p2[i];  // dL/dP1
      t2[i] = s * dout[i] * p1[i];  // dL/dP2
    }
    if (m == 2) {
      kernels::gemm<T>(*fm.ctx, false, true, rows, in, r, T(1), t1.data(), r, g[at].data(), r, T(1), dx, in);
      kernels::gemm<T>(*fm.ctx, false, true, rows, in, r, T(1), t2.data(), r, g[at + 1].data(), r, T(1), dx,
                       in);
      return;
    }
    std::vector<T> dy(static_cast<size_t>(rows * r));
    kernels::gemm<T>(*fm.ctx, false, true, rows, r, r, T(1), t1.data(), r, g[at + 2 * sub].data(), r, T(0),
                     dy.data(), r);
    backward(m / 2, at, dy.data(), dx);
    kernels::gemm<T>(*fm.ctx, false, true, rows, r, r, T(1), t2.data(), r, g[at + 2 * sub + 1].data(), r,
                     T(0), dy.data(), r);
    backward(m / 2, at + sub, dy.data(), dx);
  }
};

}  // namespace

template <typename T>
FeatureMap<T> make_feature_map(const ComputeContext& ctx, const AttentionConfig& cfg, int64_t in_dim, int64_t out_dim,
                               const std::vector<std::vector<T>>& sketch,
                               const std::vector<Param<T>>& params) {
  return {&ctx, &cfg, in_dim, out_dim, &sketch,
          is_learned(cfg.mechanism) ? &params[learned_index(cfg.mechanism)] : nullptr};
}

template <typename T>
void phi_forward(const FeatureMap<T>& fm, int64_t rows, const T* x, T* out) {
  if (fm.learned) {
    learned_phi_forward(fm, rows, x, out);
  } else if (fm.sketch->empty()) {  // p == 2: phi is the identity
    std::copy(x, x + rows * fm.in_dim, out);
  } else {
    TreeWalk<T>{fm, rows, x}.forward(fm.cfg->p / 2, 0, out);
  }
}

template <typename T>
void phi_backward(const FeatureMap<T>& fm, int64_t rows, const T* x, const T* dphi, T* dx,
                  std::vector<T>* dlearned) {
  if (fm.learned) {
    learned_phi_backward(fm, rows, x, dphi, dx, dlearned);
  } else if (fm.sketch->empty()) {
    for (int64_t i = 0; i < rows * fm.in_dim; ++i) dx[i] += dphi[i];
  } else {
    TreeWalk<T>{fm, rows, x}.backward(fm.cfg->p / 2, 0, dphi, dx);
  }
}

template std::vector<std::vector<float>> draw_random_sketch<float>(const AttentionConfig&, int64_t);
template std::vector<std::vector<double>> draw_random_sketch<double>(const AttentionConfig&, int64_t);
template FeatureMap<float> make_feature_map<float>(const ComputeContext&, const AttentionConfig&, int64_t, int64_t,
                                                   const std::vector<std::vector<float>>&,
                                                   const std::vector<Param<float>>&);
template FeatureMap<double> make_feature_map<double>(const ComputeContext&, const AttentionConfig&, int64_t, int64_t,
                                                     const std::vector<std::vector<double>>&,
                                                     const std::vector<Param<double>>&);
template void phi_forward<float>(const FeatureMap<float>&, int64_t, const float*, float*);
template void phi_forward<double>(const FeatureMap<double>&, int64_t, const double*, double*);
template void phi_backward<float>(const FeatureMap<float>&, int64_t, const float*, const float*,
                                  float*, std::vector<float>*);
template void phi_backward<double>(const FeatureMap<double>&, int64_t, const double*,
                                   const double*, double*, std::vector<double>*);

}  // namespace polysketch::attention
