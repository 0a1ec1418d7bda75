// The sketch feature maps phi: R^h -> R^r of the polysketch mechanisms.
//   random : the recursive degree-p/2 sketch of the paper's Algorithm 1 (Gaussian or Hadamard G)
//   learned: sqrt(r) tanh(f(x) * g(x) / sqrt(r)), f and g chains of LN-Dense-GELU-Dense blocks
#pragma once

#include <cstdint>
#include <vector>

#include "polysketch/attention.h"

namespace polysketch::attention {

// Random sketch matrices for (seed, layer): levels of {G1, G2}, level 0 of shape [head_dim x r],
// deeper levels [r x r]. Empty when p == 2 (phi is the identity).
template <typename T>
std::vector<std::vector<T>> draw_random_sketch(const AttentionConfig& cfg, int64_t head_dim);

// Learned sketch parameters appended to `params` (layout in learned_sketch.cpp).
template <typename T>
void init_learned_sketch(const AttentionConfig& cfg, int64_t head_dim, std::vector<Param<T>>& params);
// How many values those parameters hold (without building them).
int64_t learned_sketch_size(const AttentionConfig& cfg, int64_t head_dim);

// Everything phi needs, borrowed from the owning AttentionT.
template <typename T>
struct FeatureMap {
  const ComputeContext* ctx;
  const AttentionConfig* cfg;
  int64_t in_dim;   // head_dim
  int64_t out_dim;  // r, or head_dim when p == 2
  const std::vector<std::vector<T>>* sketch;  // random
  const Param<T>* learned;                    // first learned parameter, or null
};

// The feature map of a mechanism's configuration, sketch matrices and parameter list.
template <typename T>
FeatureMap<T> make_feature_map(const ComputeContext& ctx, const AttentionConfig& cfg, int64_t in_dim, int64_t out_dim,
                               const std::vector<std::vector<T>>& sketch,
                               const std::vector<Param<T>>& params);

// phi(x) for rows of x [rows x in_dim] -> out [rows x out_dim].
template <typename T>
void phi_forward(const FeatureMap<T>& fm, int64_t rows, const T* x, T* out);

// dx [rows x in_dim] += J^T dphi; learned parameter gradients added into dlearned (pointing at the
// gradient buffer of the first learned parameter), which may be null for random sketches.
template <typename T>
void phi_backward(const FeatureMap<T>& fm, int64_t rows, const T* x, const T* dphi, T* dx,
                  std::vector<T>* dlearned);

// Learned sketch (learned_sketch.cpp).
template <typename T>
void learned_phi_forward(const FeatureMap<T>& fm, int64_t rows, const T* x, T* out);
template <typename T>
void learned_phi_backward(const FeatureMap<T>& fm, int64_t rows, const T* x, const T* dphi, T* dx,
                          std::vector<T>* dlearned);

}  // namespace polysketch::attention
