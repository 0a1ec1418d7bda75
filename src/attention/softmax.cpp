#include "attention/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/bf16_gemm.h"
#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "util/parallel.h"

namespace polysketch::attention {

using util::parallel_for;
using util::PerThread;

namespace {
constexpr int64_t kTileQ = 128;
constexpr int64_t kTileK = 128;

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// Causal mask inside a tile: key j visible to query i iff j0 + j <= i0 + i (and, with document
// ids seg, seg[i0 + i] == seg[j0 + j]).
template <typename T>
void mask_tile(int64_t i0, int64_t mq, int64_t j0, int64_t mk, const int32_t* seg, T* s) {
  const bool diagonal = j0 + mk > i0 + 1, documents = seg && seg[j0] != seg[i0 + mq - 1];
  if (!diagonal && !documents) return;
  for (int64_t i = 0; i < mq; ++i) {
    T* si = s + i * mk;
    const int64_t first_hidden = std::clamp<int64_t>(i + i0 - j0 + 1, 0, mk);
    std::fill(si + first_hidden, si + mk, neg_inf<T>());
    if (documents)
      for (int64_t j = 0; j < first_hidden; ++j)
        if (seg[j0 + j] != seg[i0 + i]) si[j] = neg_inf<T>();
  }
}

// The first key tile start a query tile needs: its first query's document start, down to a tile.
int64_t first_key_tile(const int32_t* seg, int64_t i0) {
  if (!seg) return 0;
  const int64_t start = std::lower_bound(seg, seg + i0, seg[i0]) - seg;
  return start / kTileK * kTileK;
}
// The tile products of one head (q tile i: rows i0 .. i0+mq; key tile j: rows j0 .. j0+mk).
// gemm<T> on the operands as given; or, for float under bf16 precision on an AVX512-BF16 CPU,
// the bf16 kernel on Q, K, V (and dO) packed once per head: packing them per tile, as gemm does,
// took about half as long as the products themselves. The probability tiles are packed per tile.
template <typename T>
class TileProducts {
  static constexpr bool kFloat = std::is_same_v<T, float>;

 public:
  TileProducts(const ComputeContext& ctx, int64_t n, int64_t h, int64_t d, const T* q, const T* k,
               const T* v, const T* dout)
      : ctx_(ctx), h_(h), d_(d), q_(q), k_(k), v_(v), dout_(dout) {
    if constexpr (kFloat) {
      bf16_ = ctx.precision == Precision::bf16 && kernels::bf16_small_gemm_available();
      if (!bf16_) return;
      auto& p = packs();  // the calling thread's; tiles on other threads only read it
      kernels::pack_a_bf16(false, n, h, q, h, p.q_rows);
      kernels::pack_b_bf16(true, h, n, k, h, p.k_cols);
      kernels::pack_b_bf16(false, n, d, v, d, p.v_rows);
      if (dout) {
        kernels::pack_a_bf16(false, n, d, dout, d, p.dout_rows);
        kernels::pack_b_bf16(true, d, n, v, d, p.v_cols);
        kernels::pack_b_bf16(false, n, h, k, h, p.k_rows);
        kernels::pack_b_bf16(false, n, h, q, h, p.q_b);
        kernels::pack_b_bf16(false, n, d, dout, d, p.dout_b);
      }
      packed_ = &p;
    }
  }
  // s [mq x mk] = scale Q_i K_j^T
  void scores(int64_t i0, int64_t mq, int64_t j0, int64_t mk, T scale, T* s) const {
    if constexpr (kFloat)
      if (bf16_) return kernels::gemm_packed_bf16(mq, mk, h_, scale, packed_->q_rows, i0, packed_->k_cols, 0, j0, 0.f, s, mk);
    kernels::gemm<T>(ctx_, false, true, mq, mk, h_, scale, q_ + i0 * h_, h_, k_ + j0 * h_, h_, T(0), s, mk);
  }
  // acc [mq x d] += P V_j, P [mq x mk]
  void add_pv(int64_t mq, int64_t j0, int64_t mk, const T* p, T* acc) const {
    if constexpr (kFloat)
      if (bf16_) return kernels::gemm_packed_bf16(mq, d_, mk, 1.f, tile(false, mq, mk, p), 0, packed_->v_rows, j0, 0, 1.f, acc, d_);
    kernels::gemm<T>(ctx_, false, false, mq, d_, mk, T(1), p, mk, v_ + j0 * d_, d_, T(1), acc, d_);
  }
  // dv_j [mk x d] += P^T dO_i
  void add_pt_dout(int64_t i0, int64_t mq, int64_t mk, const T* p, T* dvj) const {
    if constexpr (kFloat)
      if (bf16_) return kernels::gemm_packed_bf16(mk, d_, mq, 1.f, tile(true, mk, mq, p), 0, packed_->dout_b, i0, 0, 1.f, dvj, d_);
    kernels::gemm<T>(ctx_, true, false, mk, d_, mq, T(1), p, mk, dout_ + i0 * d_, d_, T(1), dvj, d_);
  }
  // dp [mq x mk] = dO_i V_j^T
  void dout_vt(int64_t i0, int64_t mq, int64_t j0, int64_t mk, T* dp) const {
    if constexpr (kFloat)
      if (bf16_) return kernels::gemm_packed_bf16(mq, mk, d_, 1.f, packed_->dout_rows, i0, packed_->v_cols, 0, j0, 0.f, dp, mk);
    kernels::gemm<T>(ctx_, false, true, mq, mk, d_, T(1), dout_ + i0 * d_, d_, v_ + j0 * d_, d_, T(0), dp, mk);
  }
  // dq_i [mq x h] += scale dS K_j
  void add_ds_k(int64_t mq, int64_t j0, int64_t mk, T scale, const T* ds, T* dqi) const {
    if constexpr (kFloat)
      if (bf16_) return kernels::gemm_packed_bf16(mq, h_, mk, scale, tile(false, mq, mk, ds), 0, packed_->k_rows, j0, 0, 1.f, dqi, h_);
    kernels::gemm<T>(ctx_, false, false, mq, h_, mk, scale, ds, mk, k_ + j0 * h_, h_, T(1), dqi, h_);
  }
  // dk_j [mk x h] += scale dS^T Q_i
  void add_dst_q(int64_t i0, int64_t mq, int64_t mk, T scale, const T* ds, T* dkj) const {
    if constexpr (kFloat)
      if (bf16_) return kernels::gemm_packed_bf16(mk, h_, mq, scale, tile(true, mk, mq, ds), 0, packed_->q_b, i0, 0, 1.f, dkj, h_);
    kernels::gemm<T>(ctx_, true, false, mk, h_, mq, scale, ds, mk, q_ + i0 * h_, h_, T(1), dkj, h_);
  }

 private:
  struct Packs {
    kernels::PackedA q_rows, dout_rows;
    kernels::PackedB k_cols, v_rows, v_cols, k_rows, q_b, dout_b;
  };
  static Packs& packs() {
    thread_local Packs p;  // grow-only: no page faults per head
    return p;
  }
  // op(X) [rows x k] of a probability tile X [mq x mk] (ld mk), packed on the calling thread.
  static const kernels::PackedA& tile(bool trans, int64_t rows, int64_t k, const T* x) {
    thread_local kernels::PackedA a;
    if constexpr (kFloat) kernels::pack_a_bf16(trans, rows, k, x, trans ? rows : k, a);
    return a;
  }
  const ComputeContext& ctx_;
  int64_t h_, d_;
  const T *q_, *k_, *v_, *dout_;
  bool bf16_ = false;
  const Packs* packed_ = nullptr;
};
}  // namespace

template <typename T>
void softmax_forward(const ComputeContext& ctx, int64_t n, int64_t h, int64_t d, const T* q, const T* k, const T* v,
                     bool causal, const int32_t* seg, int threads, T* out, T* lse) {
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(h)));
  const int64_t qtiles = (n + kTileQ - 1) / kTileQ;
  const TileProducts<T> products(ctx, n, h, d, q, k, v, nullptr);
  parallel_for(qtiles, threads, [&](int64_t qt, int) {
    const int64_t i0 = qt * kTileQ, mq = std::min(kTileQ, n - i0);
    std::vector<T> s(static_cast<size_t>(kTileQ * kTileK)), m(mq, neg_inf<T>()), l(mq, T(0));
    T* acc = out + i0 * d;
    std::fill(acc, acc + mq * d, T(0));
    const int64_t kend = causal ? i0 + mq : n;
    for (int64_t j0 = first_key_tile(seg, i0); j0 < kend; j0 += kTileK) {
      const int64_t mk = std::min(kTileK, kend - j0);
      products.scores(i0, mq, j0, mk, scale, s.data());
      if (causal) mask_tile(i0, mq, j0, mk, seg, s.data());
      for (int64_t i = 0; i < mq; ++i) {
        T* si = s.data() + i * mk;
        T mx = m[i];
#pragma omp simd reduction(max : mx)  // in this form (not std::max) GCC vectorizes it
        for (int64_t j = 0; j < mk; ++j) mx = si[j] > mx ? si[j] : mx;
        if (mx == neg_inf<T>()) {  // row fully masked in this tile (another document)
          std::fill(si, si + mk, T(0));
          continue;
        }
#pragma omp simd
        for (int64_t j = 0; j < mk; ++j) si[j] -= mx;
        kernels::exp_inplace(mk, si);
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < mk; ++j) sum += si[j];
        const T corr = m[i] == neg_inf<T>() ? T(0) : std::exp(m[i] - mx);
        l[i] = l[i] * corr + sum;
        m[i] = mx;
        if (corr != T(1)) {
          T* ai = acc + i * d;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) ai[c] *= corr;
        }
      }
      products.add_pv(mq, j0, mk, s.data(), acc);
    }
    for (int64_t i = 0; i < mq; ++i) {
      const T inv = T(1) / l[i];
      for (int64_t c = 0; c < d; ++c) acc[i * d + c] *= inv;
      lse[i0 + i] = m[i] + std::log(l[i]);
    }
  });
}

template <typename T>
void softmax_backward(const ComputeContext& ctx, int64_t n, int64_t h, int64_t d, const T* q, const T* k, const T* v,
                      const T* out, const T* dout, const T* lse, bool causal, const int32_t* seg,
                      int threads, T* dq, T* dk, T* dv) {
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(h)));
  std::vector<T> delta(static_cast<size_t>(n));  // D_i = <dO_i, O_i>
  for (int64_t i = 0; i < n; ++i) {
    T acc = 0;
    for (int64_t c = 0; c < d; ++c) acc += dout[i * d + c] * out[i * d + c];
    delta[i] = acc;
  }
  const int64_t ktiles = (n + kTileK - 1) / kTileK;
  PerThread<T> dq_parts(threads, n * h, dq);
  const TileProducts<T> products(ctx, n, h, d, q, k, v, dout);
  parallel_for(ktiles, threads, [&](int64_t kt, int thread) {
    T* dqt = dq_parts.get(thread);
    const int64_t j0 = kt * kTileK, mk = std::min(kTileK, n - j0);
    std::vector<T> p(static_cast<size_t>(kTileQ * kTileK)), dp(p.size());
    T* dkj = dk + j0 * h;
    T* dvj = dv + j0 * d;
    std::fill(dkj, dkj + mk * h, T(0));
    std::fill(dvj, dvj + mk * d, T(0));
    const int64_t qstart = causal ? (j0 / kTileQ) * kTileQ : 0;
    for (int64_t i0 = qstart; i0 < n; i0 += kTileQ) {
      const int64_t mq = std::min(kTileQ, n - i0);
      if (causal && i0 + mq <= j0) continue;
      if (seg && seg[i0] > seg[j0 + mk - 1]) break;  // this and every later query tile: other documents
      products.scores(i0, mq, j0, mk, scale, p.data());
      if (causal) mask_tile(i0, mq, j0, mk, seg, p.data());
      for (int64_t i = 0; i < mq; ++i) {
        T* pi = p.data() + i * mk;
        const T li = lse[i0 + i];
#pragma omp simd
        for (int64_t j = 0; j < mk; ++j) pi[j] -= li;
        kernels::exp_inplace(mk, pi);
      }
      // dV_j += P^T dO_i ; dP = dO_i V_j^T ; dS = P (dP - D) ; dQ_i += s dS K_j ; dK_j += s dS^T Q_i
      products.add_pt_dout(i0, mq, mk, p.data(), dvj);
      products.dout_vt(i0, mq, j0, mk, dp.data());
      for (int64_t i = 0; i < mq; ++i) {
        T* pi = p.data() + i * mk;
        const T* dpi = dp.data() + i * mk;
        const T di = delta[i0 + i];
#pragma omp simd
        for (int64_t j = 0; j < mk; ++j) pi[j] *= dpi[j] - di;
      }
      products.add_ds_k(mq, j0, mk, scale, p.data(), dqt + i0 * h);
      products.add_dst_q(i0, mq, mk, scale, p.data(), dkj);
    }
  });
  dq_parts.reduce_into(dq);
}

#define POLYSKETCH_INSTANTIATE(T)                                                               \
  template void softmax_forward<T>(const ComputeContext&, int64_t, int64_t, int64_t, const T*, const T*, const T*,     \
                                   bool, const int32_t*, int, T*, T*);                          \
  template void softmax_backward<T>(const ComputeContext&, int64_t, int64_t, int64_t, const T*, const T*, const T*,    \
                                    const T*, const T*, const T*, bool, const int32_t*, int, T*, T*, T*);
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE

}  // namespace polysketch::attention
