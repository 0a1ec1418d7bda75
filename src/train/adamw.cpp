#include "train/adamw.h"

#include "util/parallel.h"

#include <cmath>
#include <numbers>

namespace polysketch::train {

AdamW::AdamW(const std::vector<Param<float>*>& params, AdamWConfig cfg) : cfg_(cfg) {
  for (auto* p : params) {
    decay_.push_back(p->shape.size() >= 2);  // matrices only
    m_.emplace_back(p->value.size(), 0.f);
    v_.emplace_back(p->value.size(), 0.f);
  }
}

void AdamW::step(const std::vector<Param<float>*>& params,
                 const std::vector<std::vector<float>>& grads, double lr) {
  ++t_;
  const double bc1 = 1 - std::pow(cfg_.beta1, static_cast<double>(t_));
  const double bc2 = 1 - std::pow(cfg_.beta2, static_cast<double>(t_));
  const float b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
  const float step_size = static_cast<float>(lr / bc1);
  const float inv_bc2 = static_cast<float>(1.0 / bc2);
  const float eps = static_cast<float>(cfg_.eps);
  for (size_t i = 0; i < params.size(); ++i) {
    auto& w = params[i]->value;
    const auto& g = grads[i];
    auto& m = m_[i];
    auto& v = v_[i];
    const float decay = decay_[i] ? static_cast<float>(1.0 - lr * cfg_.weight_decay) : 1.f;
    const auto size = static_cast<int64_t>(w.size());
    util::parallel_ranges(size, util::elementwise_threads(size), [&](int64_t j0, int64_t j1, int) {
      for (int64_t j = j0; j < j1; ++j) {
        m[j] = b1 * m[j] + (1 - b1) * g[j];
        v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
        w[j] = w[j] * decay - step_size * m[j] / (std::sqrt(v[j] * inv_bc2) + eps);
      }
    });
  }
}

double clip_grad_norm(std::vector<std::vector<float>>& grads, double max_norm) {
  double sum = 0;
  for (const auto& g : grads)
    for (float x : g) sum += static_cast<double>(x) * x;
  const double norm = std::sqrt(sum);
  if (max_norm > 0 && norm > max_norm) {
    const float s = static_cast<float>(max_norm / norm);
    for (auto& g : grads)
      for (float& x : g) x *= s;
  }
  return norm;
}

double learning_rate(int64_t step, int64_t total_steps, int64_t warmup, double peak,
                     double min_ratio) {
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double span = std::max<int64_t>(1, total_steps - warmup);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
  const double cosine = 0.5 * (1 + std::cos(std::numbers::pi * progress));
  return peak * (min_ratio + (1 - min_ratio) * cosine);
}

}  // namespace polysketch::train
