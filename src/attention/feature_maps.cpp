#include "attention/feature_maps.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "attention/mechanism.h"
#include "kernels/gemm.h"
#include "kernels/rng.h"

namespace polysketch::attention {

namespace {

int levels_for(int p) {
  int levels = 0;
  for (int m = p / 2; m > 1; m /= 2) ++levels;
  return levels;
}

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

}  // namespace

template <typename T>
std::vector<std::vector<T>> draw_random_sketch(const AttentionConfig& cfg, int64_t head_dim) {
  std::vector<std::vector<T>> sketch;
  auto rng = kernels::Rng::derive(cfg.seed, static_cast<uint64_t>(cfg.layer), 0x5ce7c4);
  int64_t in = head_dim;
  for (int level = 0; level < levels_for(cfg.p); ++level) {
    sketch.push_back(draw_matrix<T>(cfg.sketch, in, cfg.r, rng));
    sketch.push_back(draw_matrix<T>(cfg.sketch, in, cfg.r, rng));
    in = cfg.r;
  }
  return sketch;
}

namespace {

// Level l: Y_{l+1} = sqrt(1/r) (Y_l G1) * (Y_l G2). Keeps every level's products for backward.
template <typename T>
struct RandomActs {
  std::vector<std::vector<T>> p1, p2;
};

template <typename T>
void random_forward(const FeatureMap<T>& fm, int64_t rows, const T* x, T* out, RandomActs<T>* acts) {
  const auto& g = *fm.sketch;
  const int64_t r = fm.out_dim;
  const int levels = static_cast<int>(g.size() / 2);
  if (levels == 0) {
    std::copy(x, x + rows * fm.in_dim, out);
    return;
  }
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(r)));
  std::vector<T> p1(static_cast<size_t>(rows * r)), p2(p1.size()), y;
  const T* in = x;
  int64_t in_dim = fm.in_dim;
  for (int l = 0; l < levels; ++l) {
    kernels::gemm<T>(false, false, rows, r, in_dim, T(1), in, in_dim, g[2 * l].data(), r, T(0),
                     p1.data(), r);
    kernels::gemm<T>(false, false, rows, r, in_dim, T(1), in, in_dim, g[2 * l + 1].data(), r, T(0),
                     p2.data(), r);
    T* dst = (l == levels - 1) ? out : nullptr;
    std::vector<T> next;
    if (!dst) {
      next.resize(p1.size());
      dst = next.data();
    }
    for (size_t i = 0; i < p1.size(); ++i) dst[i] = scale * p1[i] * p2[i];
    if (acts) {
      acts->p1.push_back(p1);
      acts->p2.push_back(p2);
    }
    if (l < levels - 1) {
      y = std::move(next);
      in = y.data();
      in_dim = r;
    }
  }
}

template <typename T>
void random_backward(const FeatureMap<T>& fm, int64_t rows, const T* x, const T* dphi, T* dx) {
  const auto& g = *fm.sketch;
  const int64_t r = fm.out_dim;
  const int levels = static_cast<int>(g.size() / 2);
  if (levels == 0) {
    for (int64_t i = 0; i < rows * fm.in_dim; ++i) dx[i] += dphi[i];
    return;
  }
  RandomActs<T> acts;
  std::vector<T> tmp(static_cast<size_t>(rows * r));
  random_forward(fm, rows, x, tmp.data(), &acts);
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(r)));
  std::vector<T> dy(dphi, dphi + rows * r), t1(tmp.size()), t2(tmp.size()), dprev;
  for (int l = levels - 1; l >= 0; --l) {
    const auto& p1 = acts.p1[l];
    const auto& p2 = acts.p2[l];
    for (size_t i = 0; i < t1.size(); ++i) {
      t1[i] = scale * dy[i] * p2[i];  // d/d p1
      t2[i] = scale * dy[i] * p1[i];  // d/d p2
    }
    const int64_t in_dim = l == 0 ? fm.in_dim : r;
    T* target;
    if (l == 0) {
      target = dx;
    } else {
      dprev.assign(static_cast<size_t>(rows * r), T(0));
      target = dprev.data();
    }
    kernels::gemm<T>(false, true, rows, in_dim, r, T(1), t1.data(), r, g[2 * l].data(), r, T(1),
                     target, in_dim);
    kernels::gemm<T>(false, true, rows, in_dim, r, T(1), t2.data(), r, g[2 * l + 1].data(), r,
                     T(1), target, in_dim);
    if (l > 0) dy.swap(dprev);
  }
}

}  // namespace

template <typename T>
void phi_forward(const FeatureMap<T>& fm, int64_t rows, const T* x, T* out) {
  if (fm.learned) {
    learned_phi_forward(fm, rows, x, out);
  } else {
    random_forward<T>(fm, rows, x, out, nullptr);
  }
}

template <typename T>
void phi_backward(const FeatureMap<T>& fm, int64_t rows, const T* x, const T* dphi, T* dx,
                  std::vector<T>* dlearned) {
  if (fm.learned) {
    learned_phi_backward(fm, rows, x, dphi, dx, dlearned);
  } else {
    random_backward(fm, rows, x, dphi, dx);
  }
}

template std::vector<std::vector<float>> draw_random_sketch<float>(const AttentionConfig&, int64_t);
template std::vector<std::vector<double>> draw_random_sketch<double>(const AttentionConfig&, int64_t);
template void phi_forward<float>(const FeatureMap<float>&, int64_t, const float*, float*);
template void phi_forward<double>(const FeatureMap<double>&, int64_t, const double*, double*);
template void phi_backward<float>(const FeatureMap<float>&, int64_t, const float*, const float*,
                                  float*, std::vector<float>*);
template void phi_backward<double>(const FeatureMap<double>&, int64_t, const double*,
                                   const double*, double*, std::vector<double>*);

}  // namespace polysketch::attention
