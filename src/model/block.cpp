#include "model/block.h"

#include <type_traits>

#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "model/layers.h"
#include "util/buffer.h"

namespace polysketch::model {

using kernels::gemm;

namespace {
template <typename T>
T* sized(std::vector<T>& buf, int64_t size) {
  buf.resize(static_cast<size_t>(size));
  return buf.data();
}
// y [n x cols] = x [n x rows] W for W [rows x cols]; from W's panels when given (float).
template <typename T>
void dense(const ComputeContext& ctx, int64_t n, const T* x, const Param<T>& w, const kernels::PanelMatrix* panels,
           T* y) {
  const int64_t rows = w.shape[0], cols = w.shape[1];
  if constexpr (std::is_same_v<T, float>) {
    if (panels) return kernels::gemm_panels(ctx, n, 1.f, x, rows, *panels, w.value.data(), 0.f, y, cols);
  }
  gemm<T>(ctx, false, false, n, cols, rows, T(1), x, rows, w.value.data(), cols, T(0), y, cols);
}
// x += proj (times the dropout mask, if any)
template <typename T>
void add_residual(T* x, const T* proj, const std::vector<T>& mask, int64_t count) {
  for (int64_t i = 0; i < count; ++i) x[i] += mask.empty() ? proj[i] : proj[i] * mask[i];
}
}  // namespace

template <typename T>
T* block_attend(const ComputeContext& ctx, const BlockWeights<T>& w, int64_t n, const T* x, BlockActs<T>& a,
                BlockScratch<T>& s, const Attend<T>& attend, const BlockPanels* panels) {
  const auto d = static_cast<int64_t>(w.ln1_scale.value.size());
  T* qkv = util::grown(s.qkv, n * 3 * d);
  T* ln1 = sized(a.ln1, n * d);
  kernels::layernorm_forward(n, d, x, w.ln1_scale.value.data(), w.ln1_bias.value.data(), ln1);
  dense(ctx, n, ln1, w.qkv, panels ? &panels->qkv : nullptr, qkv);
  T* merged = sized(a.merged, n * d);
  attend(qkv, merged);
  return merged;
}

template <typename T>
void block_forward(const ComputeContext& ctx, const BlockWeights<T>& w, int64_t n, T* x, BlockActs<T>& a, BlockScratch<T>& s,
                   bool keep, const Attend<T>& attend, const BlockPanels* panels) {
  const auto d = static_cast<int64_t>(w.ln1_scale.value.size()), f = w.glu_out.shape[0];
  if (keep) a.x_in.assign(x, x + n * d);
  const T* merged = block_attend(ctx, w, n, x, a, s, attend, panels);
  T* proj = util::grown(s.proj, n * d);
  dense(ctx, n, merged, w.out, panels ? &panels->out : nullptr, proj);
  add_residual(x, proj, a.mask1, n * d);
  if (keep) a.x_mid.assign(x, x + n * d);
  T* ln2 = sized(a.ln2, n * d);
  kernels::layernorm_forward(n, d, x, w.ln2_scale.value.data(), w.ln2_bias.value.data(), ln2);
  T* u = sized(a.u, n * 2 * f);
  dense(ctx, n, ln2, w.glu_in, panels ? &panels->glu_in : nullptr, u);
  T* g = sized(a.g, n * f);
  glu_forward(g, u, n, f);
  dense(ctx, n, g, w.glu_out, panels ? &panels->glu_out : nullptr, proj);
  add_residual(x, proj, a.mask2, n * d);
}

template <typename T>
void block_backward(const ComputeContext& ctx, const BlockWeights<T>& w, const BlockGrads<T>& g, const BlockActs<T>& a,
                    int64_t n, T* dx, BlockBackScratch<T>& s, const AttendBackward<T>& attend_backward) {
  const auto d = static_cast<int64_t>(w.ln1_scale.value.size()), f = w.glu_out.shape[0];
  // Every scratch buffer is fully overwritten before it is read.
  T* dy = sized(s.dy, n * d);
  T* tmp = sized(s.tmp, n * d);
  T* dg = sized(s.dg, n * f);
  T* du = sized(s.du, n * 2 * f);
  T* dqkv = sized(s.dqkv, n * 3 * d);
  // GLU branch
  for (int64_t i = 0; i < n * d; ++i) dy[i] = a.mask2.empty() ? dx[i] : dx[i] * a.mask2[i];
  gemm<T>(ctx, true, false, f, d, n, T(1), a.g.data(), f, dy, d, T(1), g.glu_out->data(), d);
  gemm<T>(ctx, false, true, n, f, d, T(1), dy, d, w.glu_out.value.data(), d, T(0), dg, f);
  glu_backward(du, dg, a.u.data(), n, f);
  gemm<T>(ctx, true, false, d, 2 * f, n, T(1), a.ln2.data(), d, du, 2 * f, T(1), g.glu_in->data(), 2 * f);
  gemm<T>(ctx, false, true, n, d, 2 * f, T(1), du, 2 * f, w.glu_in.value.data(), 2 * f, T(0), tmp, d);
  kernels::layernorm_backward(n, d, a.x_mid.data(), w.ln2_scale.value.data(), tmp, tmp,
                              g.ln2_scale->data(), g.ln2_bias->data());
  for (int64_t i = 0; i < n * d; ++i) dx[i] += tmp[i];
  // Attention branch
  for (int64_t i = 0; i < n * d; ++i) dy[i] = a.mask1.empty() ? dx[i] : dx[i] * a.mask1[i];
  gemm<T>(ctx, true, false, d, d, n, T(1), a.merged.data(), d, dy, d, T(1), g.out->data(), d);
  gemm<T>(ctx, false, true, n, d, d, T(1), dy, d, w.out.value.data(), d, T(0), tmp, d);
  attend_backward(tmp, dy, dqkv);
  gemm<T>(ctx, true, false, d, 3 * d, n, T(1), a.ln1.data(), d, dqkv, 3 * d, T(1), g.qkv->data(), 3 * d);
  gemm<T>(ctx, false, true, n, d, 3 * d, T(1), dqkv, 3 * d, w.qkv.value.data(), 3 * d, T(0), tmp, d);
  kernels::layernorm_backward(n, d, a.x_in.data(), w.ln1_scale.value.data(), tmp, tmp,
                              g.ln1_scale->data(), g.ln1_bias->data());
  for (int64_t i = 0; i < n * d; ++i) dx[i] += tmp[i];
}

#define POLYSKETCH_INSTANTIATE(T)                                                                 \
  template T* block_attend<T>(const ComputeContext&, const BlockWeights<T>&, int64_t, const T*, BlockActs<T>&, \
                              BlockScratch<T>&, const Attend<T>&, const BlockPanels*);             \
  template void block_forward<T>(const ComputeContext&, const BlockWeights<T>&, int64_t, T*, BlockActs<T>&,              \
                                 BlockScratch<T>&, bool, const Attend<T>&, const BlockPanels*);   \
  template void block_backward<T>(const ComputeContext&, const BlockWeights<T>&, const BlockGrads<T>&,                   \
                                  const BlockActs<T>&, int64_t, T*, BlockBackScratch<T>&,         \
                                  const AttendBackward<T>&);
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE

}  // namespace polysketch::model
