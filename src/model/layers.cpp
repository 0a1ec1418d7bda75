#include "model/layers.h"

#include <algorithm>
#include <cmath>

#include "kernels/rng.h"
#include "polysketch/model.h"
#include "kernels/vec.h"
#include "util/parallel.h"

namespace polysketch::model {

template <typename T>
void sinusoidal_row(int64_t t, int64_t width, T* pe) {
  for (int64_t i = 0; 2 * i < width; ++i) {
    const double w = std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(width));
    pe[2 * i] = static_cast<T>(std::sin(static_cast<double>(t) * w));
    if (2 * i + 1 < width) pe[2 * i + 1] = static_cast<T>(std::cos(static_cast<double>(t) * w));
  }
}

template <typename T>
std::vector<T> sinusoidal_positions(int64_t len, int64_t width, int64_t t0) {
  std::vector<T> pe(static_cast<size_t>(len * width));
  for (int64_t t = 0; t < len; ++t) sinusoidal_row(t0 + t, width, pe.data() + t * width);
  return pe;
}

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, T scale, const T* pe,
                       int64_t batch, int64_t len, int64_t width) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < len; ++t) {
      const T* e = table + static_cast<int64_t>(tokens[b * len + t]) * width;
      const T* p = pe + t * width;
      T* o = out + (b * len + t) * width;
      for (int64_t i = 0; i < width; ++i) o[i] = scale * e[i] + p[i];
    }
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, T scale, int64_t n,
                        int64_t width) {
  for (int64_t r = 0; r < n; ++r) {
    T* d = dtable + static_cast<int64_t>(tokens[r]) * width;
    const T* g = dout + r * width;
    for (int64_t i = 0; i < width; ++i) d[i] += scale * g[i];
  }
}

namespace {
template <typename T>
void rope_rotate(T* x, int64_t heads_total, int64_t len, int64_t hd, double sign, int64_t t0) {
  std::vector<double> freq(static_cast<size_t>(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i)
    freq[i] = std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
  for (int64_t t = 0; t < len; ++t)
    for (int64_t i = 0; i < hd / 2; ++i) {
      const T c = static_cast<T>(std::cos(static_cast<double>(t0 + t) * freq[i]));
      const T s = static_cast<T>(sign * std::sin(static_cast<double>(t0 + t) * freq[i]));
      for (int64_t h = 0; h < heads_total; ++h) {
        T* row = x + (h * len + t) * hd;
        const T x0 = row[2 * i], x1 = row[2 * i + 1];
        row[2 * i] = x0 * c - x1 * s;
        row[2 * i + 1] = x0 * s + x1 * c;
      }
    }
}
}  // namespace

template <typename T>
void rope_forward(T* x, int64_t heads_total, int64_t len, int64_t hd, int64_t t0) {
  rope_rotate(x, heads_total, len, hd, 1.0, t0);
}
template <typename T>
void rope_backward(T* dx, int64_t heads_total, int64_t len, int64_t hd, int64_t t0) {
  rope_rotate(dx, heads_total, len, hd, -1.0, t0);  // the rotation's transpose is its inverse
}

template <typename T>
void split_heads(const T* qkv, T* q, T* k, T* v, int64_t batch, int64_t len, int64_t heads,
                 int64_t hd) {
  const int64_t d = heads * hd;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < len; ++t) {
      const T* row = qkv + (b * len + t) * 3 * d;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t dst = ((b * heads + h) * len + t) * hd;
        std::copy(row + h * hd, row + (h + 1) * hd, q + dst);
        std::copy(row + d + h * hd, row + d + (h + 1) * hd, k + dst);
        std::copy(row + 2 * d + h * hd, row + 2 * d + (h + 1) * hd, v + dst);
      }
    }
}

template <typename T>
void merge_qkv_grads(T* dqkv, const T* dq, const T* dk, const T* dv, int64_t batch, int64_t len,
                     int64_t heads, int64_t hd) {
  const int64_t d = heads * hd;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < len; ++t) {
      T* row = dqkv + (b * len + t) * 3 * d;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t src = ((b * heads + h) * len + t) * hd;
        std::copy(dq + src, dq + src + hd, row + h * hd);
        std::copy(dk + src, dk + src + hd, row + d + h * hd);
        std::copy(dv + src, dv + src + hd, row + 2 * d + h * hd);
      }
    }
}

template <typename T>
void merge_heads(T* out, const T* o, int64_t batch, int64_t len, int64_t heads, int64_t hd) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t t = 0; t < len; ++t) {
        const T* src = o + ((b * heads + h) * len + t) * hd;
        std::copy(src, src + hd, out + (b * len + t) * heads * hd + h * hd);
      }
}

template <typename T>
void split_heads_grad(T* dout_heads, const T* dmerged, int64_t batch, int64_t len, int64_t heads,
                      int64_t hd) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t t = 0; t < len; ++t) {
        const T* src = dmerged + (b * len + t) * heads * hd + h * hd;
        std::copy(src, src + hd, dout_heads + ((b * heads + h) * len + t) * hd);
      }
}

template <typename T>
void glu_forward(T* g, const T* u, int64_t n, int64_t f) {
  util::parallel_ranges(n, util::elementwise_threads(n * f), [&](int64_t r0, int64_t r1, int) {
    std::vector<T> act(static_cast<size_t>(f));
    for (int64_t r = r0; r < r1; ++r) {
      const T* ur = u + r * 2 * f;
      kernels::gelu_forward(f, ur + f, act.data());
      for (int64_t i = 0; i < f; ++i) g[r * f + i] = ur[i] * act[i];
    }
  });
}

template <typename T>
void glu_backward(T* du, const T* dg, const T* u, int64_t n, int64_t f) {
  util::parallel_ranges(n, util::elementwise_threads(n * f), [&](int64_t r0, int64_t r1, int) {
    std::vector<T> act(static_cast<size_t>(f)), tmp(static_cast<size_t>(f));
    for (int64_t r = r0; r < r1; ++r) {
      const T* ur = u + r * 2 * f;
      const T* dgr = dg + r * f;
      T* dur = du + r * 2 * f;
      kernels::gelu_forward(f, ur + f, act.data());
      for (int64_t i = 0; i < f; ++i) {
        dur[i] = dgr[i] * act[i];
        tmp[i] = dgr[i] * ur[i];
      }
      kernels::gelu_backward(f, ur + f, tmp.data(), dur + f);
    }
  });
}

template <typename T>
void dropout_mask(std::vector<T>& mask, int64_t batch, int64_t len, int64_t width, double p,
                  uint64_t seed, uint64_t site, int64_t t0, int64_t seq_len) {
  if (p <= 0) {
    mask.clear();
    return;
  }
  if (seq_len == 0) seq_len = len;
  mask.resize(static_cast<size_t>(batch * len * width));
  const T keep = static_cast<T>(1.0 / (1.0 - p));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < len; ++t) {
      auto rng = kernels::Rng::derive(seed ^ 0xd409d409d409d409ULL, site,
                                      static_cast<uint64_t>(b * seq_len + t0 + t));
      T* row = mask.data() + (b * len + t) * width;
      for (int64_t i = 0; i < width; ++i) row[i] = rng.uniform() < p ? T(0) : keep;
    }
}

template <typename T>
double cross_entropy(const T* logits, const int32_t* targets, int64_t n, int64_t vocab,
                     T* dlogits, int64_t denominator) {
  if (denominator == 0) denominator = n - std::count(targets, targets + n, kIgnoreTarget);
  if (denominator <= 0) throw Error("cross-entropy: no scored position (every target is ignored)");
  const double inv = 1.0 / static_cast<double>(denominator);
  // Rows split over threads; per-thread sums added in thread order (deterministic).
  const int threads = util::elementwise_threads(n * vocab);
  std::vector<double> partial(static_cast<size_t>(threads), 0.0);
  util::parallel_ranges(n, threads, [&](int64_t r0, int64_t r1, int t) {
  double total = 0;
  std::vector<T> e(static_cast<size_t>(vocab));
  for (int64_t r = r0; r < r1; ++r) {
    if (targets[r] == kIgnoreTarget) {
      if (dlogits) std::fill(dlogits + r * vocab, dlogits + (r + 1) * vocab, T(0));
      continue;
    }
    const T* l = logits + r * vocab;
    const T mx = *std::max_element(l, l + vocab);
    for (int64_t i = 0; i < vocab; ++i) e[i] = l[i] - mx;
    kernels::exp_inplace(vocab, e.data());
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += e[i];
    total += std::log(sum) - static_cast<double>(l[targets[r]] - mx);
    if (dlogits) {
      T* d = dlogits + r * vocab;
      const T scale = static_cast<T>(inv / sum);
      for (int64_t i = 0; i < vocab; ++i) d[i] = e[i] * scale;
      d[targets[r]] -= static_cast<T>(inv);
    }
  }
  partial[static_cast<size_t>(t)] = total;
  });
  double total = 0;
  for (double p : partial) total += p;
  return total * inv;
}

#define POLYSKETCH_INSTANTIATE(T)                                                                  \
  template std::vector<T> sinusoidal_positions<T>(int64_t, int64_t, int64_t);                      \
  template void sinusoidal_row<T>(int64_t, int64_t, T*);                                           \
  template void embedding_forward<T>(T*, const int32_t*, const T*, T, const T*, int64_t, int64_t,  \
                                     int64_t);                                                     \
  template void embedding_backward<T>(T*, const T*, const int32_t*, T, int64_t, int64_t);          \
  template void rope_forward<T>(T*, int64_t, int64_t, int64_t, int64_t);                           \
  template void rope_backward<T>(T*, int64_t, int64_t, int64_t, int64_t);                          \
  template void split_heads<T>(const T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t);          \
  template void merge_qkv_grads<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t,    \
                                   int64_t);                                                       \
  template void merge_heads<T>(T*, const T*, int64_t, int64_t, int64_t, int64_t);                  \
  template void split_heads_grad<T>(T*, const T*, int64_t, int64_t, int64_t, int64_t);             \
  template void glu_forward<T>(T*, const T*, int64_t, int64_t);                                    \
  template void glu_backward<T>(T*, const T*, const T*, int64_t, int64_t);                         \
  template void dropout_mask<T>(std::vector<T>&, int64_t, int64_t, int64_t, double, uint64_t,      \
                                uint64_t, int64_t, int64_t);             \
  template double cross_entropy<T>(const T*, const int32_t*, int64_t, int64_t, T*, int64_t);
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE

}  // namespace polysketch::model
