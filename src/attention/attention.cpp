// AttentionT: validation, parameters, and the per-head orchestration of every mechanism.
// Threads go over (batch x heads) when there are enough heads, otherwise inside each head
// (query/key tiles, blocks, row ranges), so that batch 1 with few heads uses every core too.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "attention/block_scan.h"
#include "attention/dense_tiles.h"
#include "attention/feature_maps.h"
#include "attention/mechanism.h"
#include "attention/normalizer.h"
#include "util/parallel.h"
#include "attention/softmax.h"
#include "kernels/packing.h"
#include "kernels/vec.h"
#include "util/buffer.h"
#include "util/memory.h"

namespace polysketch {

using namespace attention;
using util::parallel_for;

template <typename T>
AttentionT<T>::AttentionT(const AttentionConfig& config, int64_t head_dim, int64_t value_dim,
                          const ComputeContext& ctx)
    : config_(config), ctx_(ctx), head_dim_(head_dim), value_dim_(value_dim) {
  validate_config(config, head_dim, value_dim);
  const Mechanism m = config.mechanism;
  if (m == Mechanism::softmax) return;
  auto layernorm = [&](const std::string& name) {
    params_.push_back({name + ".scale", {head_dim}, std::vector<T>(head_dim, T(1))});
    params_.push_back({name + ".bias", {head_dim}, std::vector<T>(head_dim, T(0))});
  };
  if (is_local(m)) {
    layernorm("ln_q");
    layernorm("ln_k");
  } else {
    layernorm("ln_qk");
  }
  if (!uses_sketch(m)) return;
  if (is_learned(m))
    init_learned_sketch<T>(config, head_dim, params_);
  else
    sketch_ = draw_random_sketch<T>(config, head_dim);
  feature_dim_ = attention::feature_dim(config, head_dim);
}

template <typename T>
std::vector<std::vector<T>> AttentionT<T>::zero_grads() const {
  std::vector<std::vector<T>> g;
  for (const auto& p : params_) g.emplace_back(p.value.size(), T(0));
  return g;
}

template <typename T>
void AttentionT<T>::feature_map(int64_t rows, const T* x, T* phi) const {
  if (!uses_sketch(config_.mechanism))
    throw Error(fmt::format("{} has no sketch feature map", mechanism_name(config_.mechanism)));
  phi_forward(make_feature_map(ctx_, config_, head_dim_, feature_dim_, sketch_, params_), rows, x, phi);
}

template <typename T>
void AttentionT<T>::validate_shape(const AttentionShape& s) const {
  if (s.batch < 1 || s.heads < 1 || s.n < 1)
    throw Error(fmt::format("attention shape must have batch, heads, n >= 1; got batch={} "
                            "heads={} n={}",
                            s.batch, s.heads, s.n));
  if (s.head_dim != head_dim_)
    throw Error(fmt::format("shape mismatch: q/k head_dim={} but the attention was built for {}",
                            s.head_dim, head_dim_));
  if (s.value_dim != value_dim_)
    throw Error(fmt::format("shape mismatch: v value_dim={} but the attention was built for {}",
                            s.value_dim, value_dim_));
  if (s.segments) {
    if (!config_.causal)
      throw Error("document segments (AttentionShape::segments) need causal attention");
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t t = 1; t < s.n; ++t)
        if (s.segments[b * s.n + t] < s.segments[b * s.n + t - 1])
          throw Error(fmt::format("document segments must not decrease along a sequence: sequence "
                                  "{} has {} at position {} after {}", b, s.segments[b * s.n + t],
                                  t, s.segments[b * s.n + t - 1]));
    if (s.segments_before)
      for (int64_t b = 0; b < s.batch; ++b)
        if (s.segments[b * s.n] < s.segments_before[b])
          throw Error(fmt::format("document segments must not decrease along a sequence: sequence "
                                  "{} starts its chunk with {} after {}", b, s.segments[b * s.n],
                                  s.segments_before[b]));
  } else if (s.segments_before) {
    throw Error("AttentionShape::segments_before needs segments");
  }
  // Working memory: per-head buffers on every thread, plus the saved row statistics.
  const double per_head = static_cast<double>(s.n) *
                          (2.0 * head_dim_ + 4.0 * std::max<int64_t>(feature_dim_, 1) +
                           3.0 * (value_dim_ + 1));
  const int threads = config_.threads > 0 ? config_.threads : omp_get_max_threads();
  const double bytes =
      sizeof(T) * (per_head * threads + static_cast<double>(s.batch) * s.heads * s.n);
  const double total = static_cast<double>(util::physical_memory_bytes());
  const double elements = static_cast<double>(s.batch) * s.heads * s.n *
                          std::max(head_dim_, value_dim_);
  if (elements > 9.0e18 || (total > 0 && bytes > total))
    throw Error(fmt::format("attention of batch={} heads={} n={} needs {:.1f} GiB of working "
                            "memory, more than this machine's {:.1f} GiB",
                            s.batch, s.heads, s.n, bytes / (1 << 30), total / (1 << 30)));
}

namespace {

template <typename T>
struct HeadContext {
  const ComputeContext& ctx;
  const AttentionConfig& cfg;
  int64_t n, h, d;
  const std::vector<Param<T>>& params;
  const std::vector<std::vector<T>>& sketch;
  int64_t feature_dim;
  int threads;  // threads inside this head

  int64_t rows_per_task() const { return std::max<int64_t>(cfg.block, 64); }
  int64_t tasks() const { return (n + rows_per_task() - 1) / rows_per_task(); }
  FeatureMap<T> feature_map() const {
    return make_feature_map(ctx, cfg, h, feature_dim, sketch, params);
  }
  // body(row0, rows, thread) over row ranges, in parallel.
  template <typename F>
  void over_rows(F&& body) const {
    parallel_for(tasks(), threads, [&](int64_t t, int thread) {
      const int64_t r0 = t * rows_per_task();
      body(r0, std::min(rows_per_task(), n - r0), thread);
    });
  }
  // qn = LN_q(q), kn = LN_k(k)
  void normalize(const T* q, const T* k, T* qn, T* kn) const {
    const auto lq = ln_q_slots(), lk = ln_k_slots(cfg.mechanism);
    over_rows([&](int64_t r0, int64_t rows, int) {
      kernels::layernorm_forward(rows, h, q + r0 * h, params[lq.scale].value.data(),
                                 params[lq.bias].value.data(), qn + r0 * h);
      kernels::layernorm_forward(rows, h, k + r0 * h, params[lk.scale].value.data(),
                                 params[lk.bias].value.data(), kn + r0 * h);
    });
  }
  void features(const T* qn, const T* kn, T* a, T* b) const {
    const auto fm = feature_map();
    over_rows([&](int64_t r0, int64_t rows, int) {
      phi_forward(fm, rows, qn + r0 * h, a + r0 * feature_dim);
      phi_forward(fm, rows, kn + r0 * h, b + r0 * feature_dim);
    });
  }
  SketchHead<T> sketch_head(const T* a, const T* b, const T* v, const T* qn, const T* kn) const {
    SketchHead<T> s{&ctx, n, feature_dim, d, cfg.block, a, b, v, cfg.causal};
    if (is_local(cfg.mechanism)) {
      s.qn = qn;
      s.kn = kn;
      s.h = h;
      s.p = cfg.p;
    }
    return s;
  }
  // dx = LN backward of the mechanism's q (or k) LayerNorm, in place in dx; parameter gradients
  // into grads[slot + thread].
  void layernorm_backward(const T* x, LayerNormSlots ln, T* dx, std::vector<std::vector<T>>* grads,
                          int slot) const {
    over_rows([&](int64_t r0, int64_t rows, int thread) {
      auto& g = grads[slot + thread];
      kernels::layernorm_backward(rows, h, x + r0 * h, params[ln.scale].value.data(), dx + r0 * h,
                                  dx + r0 * h, g[ln.scale].data(), g[ln.bias].data());
    });
  }
};

// Per-thread buffers reused from head to head and from call to call: fresh multi-megabyte
// allocations per head cost page faults (~15% of the time at n = 65536), and so would per-call
// ones past glibc's 32 MB mmap threshold (mapped and zero-filled on every forward and backward).
// Grow-only, on the calling thread (with parallelism inside a head, the caller's); every buffer
// is fully written before it is read.
template <typename T>
struct Workspace {
  std::vector<T> qn, kn, a, b, da, db, c, num, g;
};

template <typename T>
Workspace<T>& thread_workspace() {
  thread_local Workspace<T> w;
  return w;
}

// The document ids of the sequence that head i (of batch * heads) belongs to; null without.
const int32_t* sequence_segments(const AttentionShape& shape, int64_t i) {
  return shape.segments ? shape.segments + (i / shape.heads) * shape.n : nullptr;
}
// Whether a document starts at the first token of head i's chunk (AttentionShape::segments_before).
bool starts_document(const AttentionShape& shape, int64_t i) {
  const int64_t b = i / shape.heads;
  return shape.segments_before && shape.segments_before[b] != shape.segments[b * shape.n];
}

// C = [v | 1]
template <typename T>
T* ones_column(Workspace<T>& ws, int64_t n, int64_t d, const T* v) {
  T* c = util::grown(ws.c, n * (d + 1));
  append_ones(n, d, v, c);
  return c;
}

// `features`, if not null, receives phi(q), phi(k) [2 x n x r] for backward.
// exact: the polynomial path for any non-softmax mechanism (AttentionT::exact_forward).
// z_in: context parallelism, the earlier chunks' key state; features_ready: `features` already
// holds phi (computed by the pass before). z_out (chunks in sequence): receives the state after
// this chunk. seg: the sequence's document ids (null: one document).
template <typename T>
void head_forward(const HeadContext<T>& hc, Workspace<T>& ws, const T* q, const T* k, const T* v,
                  const int32_t* seg, bool starts, T* out, T* stat, T* features, bool exact, const T* z_in,
                  bool features_ready, T* z_out) {
  const auto& cfg = hc.cfg;
  const int64_t n = hc.n, h = hc.h, d = hc.d;
  if (cfg.mechanism == Mechanism::softmax) {
    softmax_forward(hc.ctx, n, h, d, q, k, v, cfg.causal, seg, hc.threads, out, stat);
    return;
  }
  T* qn = util::grown(ws.qn, n * h);
  T* kn = util::grown(ws.kn, n * h);
  hc.normalize(q, k, qn, kn);
  if (cfg.mechanism == Mechanism::polynomial || exact) {
    const T* c = ones_column(ws, n, d, v);
    T* num = util::grown(ws.num, n * (d + 1));
    poly_attention_forward(hc.ctx, n, h, qn, kn, c, d + 1, cfg.p, cfg.causal, seg, hc.threads, num);
    normalize_rows(n, d, num, out, stat);
    return;
  }
  T* a = features ? features : util::grown(ws.a, n * hc.feature_dim);
  T* b = features ? features + n * hc.feature_dim : util::grown(ws.b, n * hc.feature_dim);
  if (!features_ready) hc.features(qn, kn, a, b);
  auto sh = hc.sketch_head(a, b, v, qn, kn);
  sh.z_in = z_in;
  sh.z_out = z_out;
  sh.seg = seg;
  sh.starts_document = starts;
  sketch_forward(sh, hc.threads, out, stat);
}

template <typename T>
void head_backward(const HeadContext<T>& hc, Workspace<T>& ws, const T* q, const T* k, const T* v,
                   const int32_t* seg, bool starts, const T* out, const T* dout, const T* stat, const T* features, T* dq, T* dk,
                   T* dv, std::vector<std::vector<T>>* grads, int slot, const T* z_in,
                   const T* u_in, T* u_out) {
  const auto& cfg = hc.cfg;
  const int64_t n = hc.n, h = hc.h, d = hc.d;
  if (cfg.mechanism == Mechanism::softmax) {
    softmax_backward(hc.ctx, n, h, d, q, k, v, out, dout, stat, cfg.causal, seg, hc.threads, dq, dk, dv);
    return;
  }
  T* qn = util::grown(ws.qn, n * h);
  T* kn = util::grown(ws.kn, n * h);
  hc.normalize(q, k, qn, kn);
  // dq, dk first hold the gradients w.r.t. the LayerNormed qn, kn.
  std::fill(dq, dq + n * h, T(0));
  std::fill(dk, dk + n * h, T(0));
  if (cfg.mechanism == Mechanism::polynomial) {
    const T* c = ones_column(ws, n, d, v);
    T* g = util::grown(ws.g, n * (d + 1));
    T* dc = util::grown(ws.num, n * (d + 1));
    normalizer_grad(n, d, out, dout, stat, g);
    poly_attention_backward(hc.ctx, n, h, qn, kn, c, d + 1, cfg.p, cfg.causal, seg, hc.threads, g, dq, dk, dc);
    for (int64_t i = 0; i < n; ++i) std::copy(dc + i * (d + 1), dc + i * (d + 1) + d, dv + i * d);
  } else {
    const int64_t r = hc.feature_dim;
    const T* a = features;  // saved by forward (learned sketches), else recomputed
    const T* b = features ? features + n * r : nullptr;
    if (!features) {
      T* wa = util::grown(ws.a, n * r);
      T* wb = util::grown(ws.b, n * r);
      hc.features(qn, kn, wa, wb);
      a = wa;
      b = wb;
    }
    T* da = util::grown(ws.da, n * r);
    T* db = util::grown(ws.db, n * r);
    auto sh = hc.sketch_head(a, b, v, qn, kn);
    sh.z_in = z_in;
    sh.u_in = u_in;
    sh.u_out = u_out;
    sh.seg = seg;
    sh.starts_document = starts;
    sketch_backward(sh, hc.threads, out, dout, stat, da, db, dv, dq, dk);
    const auto fm = hc.feature_map();
    const size_t li = learned_index(cfg.mechanism);
    hc.over_rows([&](int64_t r0, int64_t rows, int thread) {
      std::vector<T>* dl = fm.learned ? &grads[slot + thread][li] : nullptr;
      phi_backward(fm, rows, qn + r0 * h, da + r0 * r, dq + r0 * h, dl);
      phi_backward(fm, rows, kn + r0 * h, db + r0 * r, dk + r0 * h, dl);
    });
  }
  hc.layernorm_backward(q, ln_q_slots(), dq, grads, slot);
  hc.layernorm_backward(k, ln_k_slots(cfg.mechanism), dk, grads, slot);
}

}  // namespace

template <typename T>
void AttentionT<T>::forward(const AttentionShape& shape, const T* q, const T* k, const T* v,
                            T* out, AttentionSaved<T>* saved, ChunkExchangeT<T>* chunks) const {
  forward_impl(shape, q, k, v, out, saved, false, chunks);
}

template <typename T>
void AttentionT<T>::check_chunk(const AttentionShape& shape, const ChunkExchangeT<T>* chunks) const {
  if (chunks) {
    if (const auto problem = chunk_layout_problem(config_, shape.n); !problem.empty())
      throw Error("context parallelism " + problem);
    // Each rank's own state pass (exclusive_sum) does not restart at document starts.
    if (shape.segments && !chunks->sequential())
      throw Error("context parallelism does not take document segments (pass whole sequences, or "
                  "no segments)");
  } else if (shape.segments_before) {
    throw Error("AttentionShape::segments_before is for chunks of longer sequences (pass a ChunkExchange)");
  }
}

template <typename T>
void AttentionT<T>::exact_forward(const AttentionShape& shape, const T* q, const T* k, const T* v,
                                  T* out) const {
  if (config_.mechanism == Mechanism::softmax)
    throw Error("exact_forward: softmax has no polynomial attention to compare with");
  forward_impl(shape, q, k, v, out, nullptr, true, nullptr);
}

template <typename T>
void AttentionT<T>::forward_impl(const AttentionShape& shape, const T* q, const T* k, const T* v,
                                 T* out, AttentionSaved<T>* saved, bool exact,
                                 ChunkExchangeT<T>* chunks) const {
  validate_shape(shape);
  check_chunk(shape, chunks);
  AttentionSaved<T> local_saved;  // context parallelism keeps phi between its two passes
  if (chunks && !saved) saved = &local_saved;
  const int threads = config_.threads > 0 ? config_.threads : omp_get_max_threads();
  const int64_t heads = shape.batch * shape.heads, n = shape.n, h = head_dim_, d = value_dim_;
  const int outer = heads >= threads ? threads : 1;
  const HeadContext<T> hc{ctx_, config_, n, h, d, params_, sketch_, feature_dim_,
                          outer == 1 ? threads : 1};
  std::vector<T> local_stat;
  std::vector<T>& stat = saved ? saved->row_stat : local_stat;
  stat.assign(static_cast<size_t>(heads * n), T(0));
  const int64_t per_head = 2 * n * feature_dim_;  // saved phi(q), phi(k)
  T* features = nullptr;
  if (saved) {
    saved->features.clear();
    if (is_learned(config_.mechanism) || chunks) {
      saved->features.resize(static_cast<size_t>(heads * per_head));
      features = saved->features.data();
    }
    saved->state_in.clear();
  }
  const int64_t ss = kernels::packed_size(feature_dim_) * (d + 1);  // state per head
  const bool in_time = chunks && chunks->sequential();
  std::vector<T> state_out;  // chunks in sequence: the state after this chunk, per head
  if (in_time) {
    saved->state_in.resize(static_cast<size_t>(heads * ss));
    chunks->incoming(saved->state_in.data(), heads * ss, false);
    state_out.resize(static_cast<size_t>(heads * ss));
  } else if (chunks) {
    // Pass 1: phi and this chunk's key state per head; the group's exclusive prefix sum turns
    // them into the earlier chunks' state, where pass 2 (the block algorithm) starts.
    saved->state_in.resize(static_cast<size_t>(heads * ss));
    parallel_for(heads, outer, [&](int64_t i, int) {
      auto& w = thread_workspace<T>();
      T* qn = util::grown(w.qn, n * h);
      T* kn = util::grown(w.kn, n * h);
      hc.normalize(q + i * n * h, k + i * n * h, qn, kn);
      T* a = features + i * per_head;
      hc.features(qn, kn, a, a + n * feature_dim_);
      sketch_key_state(hc.sketch_head(a, a + n * feature_dim_, v + i * n * d, qn, kn), hc.threads,
                       saved->state_in.data() + i * ss);
    });
    chunks->exclusive_sum(saved->state_in.data(), heads * ss, false);
  }
  parallel_for(heads, outer, [&](int64_t i, int) {
    head_forward(hc, thread_workspace<T>(), q + i * n * h, k + i * n * h, v + i * n * d,
                 sequence_segments(shape, i), starts_document(shape, i), out + i * n * d, stat.data() + i * n, features ? features + i * per_head : nullptr,
                 exact, chunks ? saved->state_in.data() + i * ss : nullptr, chunks && !in_time,
                 in_time ? state_out.data() + i * ss : nullptr);
  });
  if (in_time) chunks->outgoing(state_out.data(), heads * ss, false);
}

template <typename T>
void AttentionT<T>::backward(const AttentionShape& shape, const T* q, const T* k, const T* v,
                             const T* out, const T* dout, const AttentionSaved<T>& saved, T* dq,
                             T* dk, T* dv, std::vector<std::vector<T>>* dparams,
                             ChunkExchangeT<T>* chunks) const {
  validate_shape(shape);
  check_chunk(shape, chunks);
  const int threads = config_.threads > 0 ? config_.threads : omp_get_max_threads();
  const int64_t heads = shape.batch * shape.heads, n = shape.n, h = head_dim_, d = value_dim_;
  if (static_cast<int64_t>(saved.row_stat.size()) != heads * n)
    throw Error(fmt::format("backward: saved state has {} rows, expected batch*heads*n = {} "
                            "(pass the AttentionSaved of the matching forward call)",
                            saved.row_stat.size(), heads * n));
  if (!params_.empty()) {
    if (!dparams || dparams->size() != params_.size())
      throw Error(fmt::format("backward: dparams must hold {} gradient buffers (zero_grads())",
                              params_.size()));
    for (size_t i = 0; i < params_.size(); ++i)
      if ((*dparams)[i].size() != params_[i].value.size())
        throw Error(fmt::format("backward: gradient buffer for '{}' has {} values, expected {}",
                                params_[i].name, (*dparams)[i].size(), params_[i].value.size()));
  }
  const int64_t per_head = 2 * n * feature_dim_;
  const T* features = saved.features.empty() ? nullptr : saved.features.data();
  if (features && static_cast<int64_t>(saved.features.size()) != heads * per_head)
    throw Error("backward: saved features do not match the shape (pass the AttentionSaved of the "
                "matching forward call)");
  const int outer = heads >= threads ? threads : 1;
  const HeadContext<T> hc{ctx_, config_, n, h, d, params_, sketch_, feature_dim_,
                          outer == 1 ? threads : 1};
  const int64_t ss = kernels::packed_size(feature_dim_) * (d + 1);  // state per head
  std::vector<T> grad_in;  // context parallelism: the later chunks' gradient state, per head
  std::vector<T> grad_out;  // chunks in sequence: the gradient state passed to the earlier ones
  const bool in_time = chunks && chunks->sequential();
  if (chunks && (!features || static_cast<int64_t>(saved.state_in.size()) != heads * ss))
    throw Error("backward with context parallelism needs the AttentionSaved of a forward call "
                "with context parallelism");
  if (in_time) {
    grad_in.resize(static_cast<size_t>(heads * ss));
    chunks->incoming(grad_in.data(), heads * ss, true);
    grad_out.resize(static_cast<size_t>(heads * ss));
  } else if (chunks) {
    // Pass 1: this chunk's gradient state (= dL/dz_in) per head; the reverse exclusive prefix
    // sum gives the later chunks', where the backward scan over U starts.
    grad_in.resize(static_cast<size_t>(heads * ss));
    parallel_for(heads, outer, [&](int64_t i, int) {
      const T* a = features + i * per_head;
      sketch_grad_state(hc.sketch_head(a, a + n * feature_dim_, v + i * n * d, nullptr, nullptr),
                        hc.threads, out + i * n * d, dout + i * n * d,
                        saved.row_stat.data() + i * n, grad_in.data() + i * ss);
    });
    chunks->exclusive_sum(grad_in.data(), heads * ss, true);
  }
  // One parameter-gradient buffer per thread, summed in thread order: deterministic.
  std::vector<std::vector<std::vector<T>>> grads(static_cast<size_t>(threads), zero_grads());
  parallel_for(heads, outer, [&](int64_t i, int thread) {
    head_backward(hc, thread_workspace<T>(), q + i * n * h, k + i * n * h, v + i * n * d,
                  sequence_segments(shape, i), starts_document(shape, i), out + i * n * d, dout + i * n * d, saved.row_stat.data() + i * n,
                  features ? features + i * per_head : nullptr, dq + i * n * h, dk + i * n * h,
                  dv + i * n * d, grads.data(), outer == 1 ? 0 : thread,
                  chunks ? saved.state_in.data() + i * ss : nullptr,
                  chunks ? grad_in.data() + i * ss : nullptr, in_time ? grad_out.data() + i * ss : nullptr);
  });
  if (in_time) chunks->outgoing(grad_out.data(), heads * ss, true);
  for (const auto& g : grads)
    for (size_t p = 0; p < g.size(); ++p)
      for (size_t j = 0; j < g[p].size(); ++j) (*dparams)[p][j] += g[p][j];
}

template class AttentionT<float>;
template class AttentionT<double>;

}  // namespace polysketch
