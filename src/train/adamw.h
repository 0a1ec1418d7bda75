// AdamW with decoupled weight decay, applied only to matrices (never to LayerNorm scales and
// biases or the output bias), and global-norm gradient clipping.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "polysketch/param.h"

namespace polysketch::train {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

class AdamW {
 public:
  AdamW(const std::vector<Param<float>*>& params, AdamWConfig cfg);
  // One update with learning rate lr; grads are read (not modified).
  void step(const std::vector<Param<float>*>& params, const std::vector<std::vector<float>>& grads,
            double lr);
  int64_t steps() const { return t_; }
  std::vector<std::vector<float>>& m() { return m_; }
  std::vector<std::vector<float>>& v() { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  AdamWConfig cfg_;
  std::vector<bool> decay_;
  std::vector<std::vector<float>> m_, v_;
  int64_t t_ = 0;
};

// Scales grads so their global L2 norm is at most max_norm (if max_norm > 0); returns the norm
// before clipping.
double clip_grad_norm(std::vector<std::vector<float>>& grads, double max_norm);

// Linear warmup to peak, then cosine decay to peak * min_ratio at total_steps.
double learning_rate(int64_t step, int64_t total_steps, int64_t warmup, double peak,
                     double min_ratio);

}  // namespace polysketch::train
