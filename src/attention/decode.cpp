#include "attention/decode.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "attention/mechanism.h"
#include "attention/normalizer.h"
#include "kernels/gemm.h"
#include "kernels/packing.h"
#include "kernels/vec.h"

namespace polysketch::attention {

bool has_constant_state(Mechanism m) { return uses_sketch(m); }

namespace {

template <typename T>
void layernorm(const AttentionT<T>& att, LayerNormSlots ln, int64_t rows, int64_t h, const T* x, T* y) {
  const auto& p = att.params();
  kernels::layernorm_forward(rows, h, x, p[ln.scale].value.data(), p[ln.bias].value.data(), y);
}

template <typename T>
T power(T x, int p) {
  T y = 1;
  for (int i = 0; i < p; ++i) y *= x;
  return y;
}

// z += pack(feats)^T [vals | 1] for m rows of features [m x r] and values [m x d]: one product
// folds any number of complete blocks (the sum of their per-block products).
template <typename T>
void fold_rows(const ComputeContext& ctx, HeadState<T>& s, int64_t m, int64_t r, int64_t d, const T* feats, const T* vals,
               std::vector<T>& scratch) {
  const int64_t rp = kernels::packed_size(r);
  scratch.resize(static_cast<size_t>(m * (rp + d + 1)));
  T* packed = scratch.data();
  T* c = packed + m * rp;
  kernels::pack_self_tensor(m, r, feats, r, packed);
  append_ones(m, d, vals, c);
  kernels::gemm<T>(ctx, true, false, rp, d + 1, m, T(1), packed, rp, c, d + 1, T(1), s.z.data(), d + 1);
}

}  // namespace

// The state layout stores values of the head's width: other value widths are refused, not
// misread.
template <typename T>
void check_decodable(const AttentionT<T>& att, int64_t h) {
  if (att.head_dim() != h || att.value_dim() != h)
    throw Error(fmt::format("decoding needs q, k and v of one width; this attention has head_dim {} "
                            "and value_dim {} (called with {})", att.head_dim(), att.value_dim(), h));
}

template <typename T>
void init_head_state(const AttentionConfig& cfg, int64_t h, HeadState<T>& s) {
  const int64_t d = h, b = cfg.block, r = feature_dim(cfg, h);
  s = HeadState<T>();
  if (!uses_sketch(cfg.mechanism)) return;
  s.z.assign(static_cast<size_t>(kernels::packed_size(r) * (d + 1)), T(0));
  s.feats.assign(static_cast<size_t>(b * r), T(0));
  s.vals.assign(static_cast<size_t>(b * d), T(0));
  if (is_local(cfg.mechanism)) s.keys.assign(static_cast<size_t>(b * h), T(0));
}

template <typename T>
void append_tokens(const AttentionT<T>& att, int64_t h, HeadState<T>& s, int64_t n, const T* k,
                   const T* v, const T* phi_k) {
  const auto& cfg = att.config();
  const Mechanism m = cfg.mechanism;
  const int64_t d = h;
  check_decodable(att, h);
  if (!uses_sketch(m)) {  // a KV cache
    const auto old = static_cast<size_t>(s.count * h);
    s.keys.resize(old + static_cast<size_t>(n * h));
    if (m == Mechanism::softmax)
      std::copy(k, k + n * h, s.keys.begin() + static_cast<int64_t>(old));
    else
      layernorm(att, ln_k_slots(m), n, h, k, s.keys.data() + old);
    s.vals.insert(s.vals.end(), v, v + n * d);
    s.count += n;
    return;
  }
  if (s.count != 0) throw Error("append_tokens: the sketch state is not at a block boundary");
  const int64_t b = cfg.block, r = att.feature_dim(), full = n / b * b;
  std::vector<T> kn(static_cast<size_t>(n * h)), computed, scratch;
  layernorm(att, ln_k_slots(m), n, h, k, kn.data());
  if (!phi_k) {
    computed.resize(static_cast<size_t>(n * r));
    att.feature_map(n, kn.data(), computed.data());
  }
  const T* feats = phi_k ? phi_k : computed.data();
  if (full > 0) fold_rows(att.context(), s, full, r, d, feats, v, scratch);
  s.count = n - full;
  std::copy(feats + full * r, feats + n * r, s.feats.begin());
  std::copy(v + full * d, v + n * d, s.vals.begin());
  if (is_local(m)) std::copy(kn.begin() + full * h, kn.end(), s.keys.begin());
}

template <typename T>
void add_earlier_tokens(const AttentionT<T>& att, int64_t h, const HeadState<T>& s, int64_t n,
                        const T* q, T* out, T* den, const T* phi_q) {
  const int64_t d = h, r = att.feature_dim(), rp = kernels::packed_size(r);
  check_decodable(att, h);
  std::vector<T> computed, ap(static_cast<size_t>(n * rp)), extra(static_cast<size_t>(n * (d + 1)));
  if (!phi_q) {
    std::vector<T> qn(static_cast<size_t>(n * h));
    computed.resize(static_cast<size_t>(n * r));
    layernorm(att, ln_q_slots(), n, h, q, qn.data());
    att.feature_map(n, qn.data(), computed.data());
  }
  kernels::pack_self_tensor(n, r, phi_q ? phi_q : computed.data(), r, ap.data());
  kernels::gemm<T>(att.context(), false, false, n, d + 1, rp, T(1), ap.data(), rp, s.z.data(), d + 1, T(0), extra.data(), d + 1);
  for (int64_t i = 0; i < n; ++i) {
    const T* e = &extra[i * (d + 1)];
    T* o = out + i * d;
    const T total = den[i] + e[d];
    for (int64_t c = 0; c < d; ++c) o[c] = (o[c] * den[i] + e[c]) / total;
    den[i] = total;
  }
}

template <typename T>
void step_features(const AttentionT<T>& att, int64_t h, int64_t n, const T* q, const T* k, StepFeatures<T>& f) {
  const Mechanism m = att.config().mechanism;
  if (!uses_sketch(m)) throw Error("step_features: sketch mechanisms only");
  const int64_t r = att.feature_dim();
  f.qn.resize(static_cast<size_t>(n * h));
  f.kn.resize(f.qn.size());
  f.phi_q.resize(static_cast<size_t>(n * r));
  f.phi_k.resize(f.phi_q.size());
  layernorm(att, ln_q_slots(), n, h, q, f.qn.data());
  layernorm(att, ln_k_slots(m), n, h, k, f.kn.data());
  att.feature_map(n, f.qn.data(), f.phi_q.data());
  att.feature_map(n, f.kn.data(), f.phi_k.data());
}

template <typename T>
void step_head(const AttentionT<T>& att, int64_t h, HeadState<T>& s, const T* q, const T* k,
               const T* v, T* out, std::vector<T>& scratch, const StepFeatures<T>* f, int64_t row) {
  const auto& cfg = att.config();
  const Mechanism m = cfg.mechanism;
  const int64_t d = h;
  check_decodable(att, h);
  // w [rows] = x . keys[0:rows]^T, then num [d+1] (+)= [w^T vals[0:rows] | sum w]: two
  // matrix-vector products per head (kernels::mat_vec, kernels::vec_mat).
  auto scores = [&](int64_t rows, const T* x, const T* keys, int64_t dim, T scale) {
    scratch.resize(static_cast<size_t>(rows));
    kernels::mat_vec(rows, dim, keys, dim, x, scratch.data());
    if (scale != T(1))
      for (auto& w : scratch) w *= scale;
    return scratch.data();
  };
  auto weighted = [&](int64_t rows, const T* w, const T* vals, T beta, T* num) {
    kernels::vec_mat(rows, d, w, vals, d, beta, num);
    T sum = 0;
    for (int64_t i = 0; i < rows; ++i) sum += w[i];
    num[d] = beta * num[d] + sum;
  };
  std::vector<T> num(static_cast<size_t>(d + 1), T(0));
  if (m == Mechanism::softmax) {
    append_tokens(att, h, s, 1, k, v);
    const int64_t n = s.count;
    T* w = scores(n, q, s.keys.data(), h, T(1) / std::sqrt(static_cast<T>(h)));
    const T mx = *std::max_element(w, w + n);
    for (int64_t j = 0; j < n; ++j) w[j] = std::exp(w[j] - mx);
    weighted(n, w, s.vals.data(), T(0), num.data());
    for (int64_t c = 0; c < d; ++c) out[c] = num[c] / num[d];
    return;
  }
  if (m == Mechanism::polynomial) {
    std::vector<T> qn(static_cast<size_t>(h));
    layernorm(att, ln_q_slots(), 1, h, q, qn.data());
    append_tokens(att, h, s, 1, k, v);  // keeps LN_k(k)
    const int64_t n = s.count;
    T* w = scores(n, qn.data(), s.keys.data(), h, T(1));
    for (int64_t j = 0; j < n; ++j) w[j] = power(w[j], cfg.p);
    weighted(n, w, s.vals.data(), T(0), num.data());
  } else {
    const int64_t r = att.feature_dim(), rp = kernels::packed_size(r), b = cfg.block;
    StepFeatures<T> own;
    if (!f) {
      step_features(att, h, 1, q, k, own);
      f = &own;
      row = 0;
    }
    const T* qn = f->qn.data() + row * h;
    const T* kn = f->kn.data() + row * h;
    const T* a = f->phi_q.data() + row * r;
    std::vector<T> ap(static_cast<size_t>(rp));
    const int64_t rows = ++s.count;
    std::copy(f->phi_k.data() + row * r, f->phi_k.data() + (row + 1) * r, &s.feats[(rows - 1) * r]);
    std::copy(v, v + d, &s.vals[(rows - 1) * d]);
    if (is_local(m)) std::copy(kn, kn + h, &s.keys[(rows - 1) * h]);
    // Earlier blocks through z, then this block's tokens exactly as the block algorithm's
    // diagonal product: <phi q, phi k>^2, or the exact local <qn, kn>^p.
    kernels::pack_self_tensor(1, r, a, r, ap.data());
    kernels::vec_mat(rp, d + 1, ap.data(), s.z.data(), d + 1, T(0), num.data());
    T* w = is_local(m) ? scores(rows, qn, s.keys.data(), h, T(1))
                       : scores(rows, a, s.feats.data(), r, T(1));
    const int p = is_local(m) ? cfg.p : 2;
    for (int64_t i = 0; i < rows; ++i) w[i] = power(w[i], p);
    weighted(rows, w, s.vals.data(), T(1), num.data());
    if (s.count == b) {
      fold_rows(att.context(), s, b, r, d, s.feats.data(), s.vals.data(), scratch);
      s.count = 0;
    }
  }
  T den;
  normalize_rows(1, d, num.data(), out, &den);
}

#define POLYSKETCH_INSTANTIATE(T)                                                                 \
  template void init_head_state<T>(const AttentionConfig&, int64_t, HeadState<T>&);              \
  template void append_tokens<T>(const AttentionT<T>&, int64_t, HeadState<T>&, int64_t, const T*, \
                                 const T*, const T*);                                              \
  template void add_earlier_tokens<T>(const AttentionT<T>&, int64_t, const HeadState<T>&, int64_t, \
                                      const T*, T*, T*, const T*);                                 \
  template void step_features<T>(const AttentionT<T>&, int64_t, int64_t, const T*, const T*,     \
                                 StepFeatures<T>&);                                              \
  template void step_head<T>(const AttentionT<T>&, int64_t, HeadState<T>&, const T*, const T*,   \
                             const T*, T*, std::vector<T>&, const StepFeatures<T>*, int64_t);
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE

}  // namespace polysketch::attention
