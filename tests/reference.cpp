#include "reference.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>

namespace polysketch::test {

namespace {

const Param<double>* find(const std::vector<Param<double>>& ps, const std::string& name) {
  for (const auto& p : ps)
    if (p.name == name) return &p;
  return nullptr;
}

template <typename T>
std::vector<Param<double>> params_double(const AttentionT<T>& att) {
  std::vector<Param<double>> out;
  for (const auto& p : att.params())
    out.push_back({p.name, p.shape, std::vector<double>(p.value.begin(), p.value.end())});
  return out;
}

std::vector<double> layernorm(const std::vector<double>& x, const std::vector<double>& scale,
                              const std::vector<double>& bias) {
  const size_t n = x.size();
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= n;
  for (double v : x) var += (v - mean) * (v - mean);
  var /= n;
  std::vector<double> y(n);
  for (size_t i = 0; i < n; ++i) y[i] = (x[i] - mean) / std::sqrt(var + 1e-5) * scale[i] + bias[i];
  return y;
}

// x [in] times W [in x out]
std::vector<double> matvec(const std::vector<double>& x, const std::vector<double>& w,
                           size_t out) {
  std::vector<double> y(out, 0.0);
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t j = 0; j < out; ++j) y[j] += x[i] * w[i * out + j];
  return y;
}

double gelu(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

template <typename T>
std::vector<double> reference_phi(const AttentionT<T>& att, const std::vector<double>& x) {
  const auto& cfg = att.config();
  const size_t r = static_cast<size_t>(cfg.r);
  if (cfg.mechanism == Mechanism::polysketch_learned ||
      cfg.mechanism == Mechanism::polysketch_learned_local) {
    const auto ps = params_double(att);
    auto chain = [&](const char* c) {
      std::vector<double> y = x;
      for (int l = 0; l < cfg.sketch_levels; ++l) {
        const std::string pre = std::string("sketch.") + c + "." + std::to_string(l) + ".";
        const auto ln = layernorm(y, find(ps, pre + "ln.scale")->value, find(ps, pre + "ln.bias")->value);
        const size_t hidden = static_cast<size_t>(cfg.hidden_mult) * r;
        auto u = matvec(ln, find(ps, pre + "w1")->value, hidden);
        for (auto& e : u) e = gelu(e);
        y = matvec(u, find(ps, pre + "w2")->value, r);
      }
      return y;
    };
    const auto f = chain("f"), g = chain("g");
    std::vector<double> phi(r);
    for (size_t i = 0; i < r; ++i)
      phi[i] = std::sqrt(double(r)) * std::tanh(f[i] * g[i] / std::sqrt(double(r)));
    return phi;
  }
  // Random: sketch(X, 2m) = sqrt(1/r) (sketch_1(X,m) G1) * (sketch_2(X,m) G2), the two
  // degree-m sketches independent; matrices in pre-order [subtree 1, subtree 2, G1, G2].
  const auto& gs = att.sketch_matrices();
  size_t next = 0;
  std::function<std::vector<double>(int)> sketch = [&](int m) -> std::vector<double> {
    if (m == 1) return x;
    const auto y1 = sketch(m / 2), y2 = sketch(m / 2);
    const std::vector<double> g1(gs[next].begin(), gs[next].end());
    const std::vector<double> g2(gs[next + 1].begin(), gs[next + 1].end());
    next += 2;
    const auto a = matvec(y1, g1, r), b = matvec(y2, g2, r);
    std::vector<double> y(r);
    for (size_t i = 0; i < r; ++i) y[i] = a[i] * b[i] / std::sqrt(double(r));
    return y;
  };
  return sketch(cfg.p / 2);
}

template <typename T>
std::vector<double> reference_attention(const AttentionT<T>& att, const AttentionShape& s,
                                        const std::vector<T>& q, const std::vector<T>& k,
                                        const std::vector<T>& v) {
  const auto& cfg = att.config();
  const auto ps = params_double(att);
  const size_t n = s.n, h = s.head_dim, d = s.value_dim;
  const bool local = cfg.mechanism == Mechanism::polysketch_local ||
                     cfg.mechanism == Mechanism::polysketch_learned_local;
  std::vector<double> out(q.size() / h * d, 0.0);
  for (int64_t head = 0; head < s.batch * s.heads; ++head) {
    // Document masking: pairs of different documents get no weight.
    const int32_t* seg = s.segments ? s.segments + (head / s.heads) * s.n : nullptr;
    std::vector<std::vector<double>> qs(n), ks(n), phq(n), phk(n);
    for (size_t i = 0; i < n; ++i) {
      qs[i].assign(q.begin() + (head * n + i) * h, q.begin() + (head * n + i + 1) * h);
      ks[i].assign(k.begin() + (head * n + i) * h, k.begin() + (head * n + i + 1) * h);
      if (cfg.mechanism == Mechanism::softmax) continue;
      const auto* sq = find(ps, local ? "ln_q.scale" : "ln_qk.scale");
      const auto* bq = find(ps, local ? "ln_q.bias" : "ln_qk.bias");
      const auto* sk = find(ps, local ? "ln_k.scale" : "ln_qk.scale");
      const auto* bk = find(ps, local ? "ln_k.bias" : "ln_qk.bias");
      qs[i] = layernorm(qs[i], sq->value, bq->value);
      ks[i] = layernorm(ks[i], sk->value, bk->value);
      if (cfg.mechanism != Mechanism::polynomial) {
        phq[i] = reference_phi(att, qs[i]);
        phk[i] = reference_phi(att, ks[i]);
      }
    }
    // The n x n weights.
    std::vector<double> w(n * n, 0.0);
    for (size_t i = 0; i < n; ++i) {
      double mx = -INFINITY;
      for (size_t j = 0; j < n; ++j) {
        if (cfg.causal && j > i) continue;
        if (seg && seg[i] != seg[j]) continue;
        double x;
        switch (cfg.mechanism) {
          case Mechanism::softmax:
            x = dot(qs[i], ks[j]) / std::sqrt(double(h));
            mx = std::max(mx, x);
            break;
          case Mechanism::polynomial:
            x = std::pow(dot(qs[i], ks[j]), cfg.p);
            break;
          default:
            if (local && i / cfg.block == j / cfg.block) {
              x = std::pow(dot(qs[i], ks[j]), cfg.p);
            } else {
              x = std::pow(dot(phq[i], phk[j]), 2);
            }
        }
        w[i * n + j] = x;
      }
      if (cfg.mechanism == Mechanism::softmax)
        for (size_t j = 0; j < n; ++j)
          if (!(cfg.causal && j > i) && !(seg && seg[i] != seg[j]))
            w[i * n + j] = std::exp(w[i * n + j] - mx);
    }
    for (size_t i = 0; i < n; ++i) {
      double den = cfg.mechanism == Mechanism::softmax ? 0.0 : 1.0;
      for (size_t j = 0; j < n; ++j) den += w[i * n + j];
      for (size_t c = 0; c < d; ++c) {
        double num = 0;
        for (size_t j = 0; j < n; ++j) num += w[i * n + j] * v[(head * n + j) * d + c];
        out[(head * n + i) * d + c] = num / den;
      }
    }
  }
  return out;
}

std::vector<double> random_vector(size_t n, uint64_t seed, double scale) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> x(n);
  for (auto& e : x) e = dist(gen);
  return x;
}

double max_rel_error(const std::vector<double>& a, const std::vector<double>& b, double floor) {
  double err = 0, mag = floor;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    mag = std::max(mag, std::abs(b[i]));
  }
  return err / mag;
}

template std::vector<double> reference_attention<float>(const AttentionT<float>&,
                                                        const AttentionShape&,
                                                        const std::vector<float>&,
                                                        const std::vector<float>&,
                                                        const std::vector<float>&);
template std::vector<double> reference_attention<double>(const AttentionT<double>&,
                                                         const AttentionShape&,
                                                         const std::vector<double>&,
                                                         const std::vector<double>&,
                                                         const std::vector<double>&);
template std::vector<double> reference_phi<float>(const AttentionT<float>&,
                                                  const std::vector<double>&);
template std::vector<double> reference_phi<double>(const AttentionT<double>&,
                                                   const std::vector<double>&);

}  // namespace polysketch::test
