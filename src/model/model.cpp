// ModelT: parameters, forward (keeping activations) and the hand-written backward.
#include "polysketch/model.h"

#include <fmt/format.h>

#include <cmath>
#include <functional>
#include <memory>

#include "attention/mechanism.h"
#include "kernels/gemm.h"
#include "kernels/rng.h"
#include "kernels/vec.h"
#include "model/layers.h"
#include "model/decode_state.h"
#include "model/model_impl.h"
#include "util/buffer.h"
#include "util/parallel.h"

namespace polysketch {

using kernels::gemm;

namespace {
template <typename T>
Param<T> filled(std::string name, std::vector<int64_t> shape, T value) {
  int64_t size = 1;
  for (auto s : shape) size *= s;
  return {std::move(name), std::move(shape), std::vector<T>(static_cast<size_t>(size), value)};
}
template <typename T>
Param<T> normal(std::string name, std::vector<int64_t> shape, double sd, kernels::Rng& rng) {
  auto p = filled<T>(std::move(name), std::move(shape), T(0));
  for (auto& x : p.value) x = static_cast<T>(sd * rng.normal());
  return p;
}
template <typename T>
void add_into(std::vector<T>& dst, const std::vector<T>& src) {
  for (size_t i = 0; i < dst.size(); ++i) dst[i] += src[i];
}
}  // namespace

template <typename T>
ModelT<T>::ModelT(const ModelConfig& config) : config_(config) {
  config_.validate();
  config_.check_fits_in_memory(0);
  impl_ = std::make_unique<Impl>();
  const int64_t d = config_.width, f = config_.glu_hidden(), v = config_.vocab;
  auto rng = kernels::Rng::derive(config_.seed, 0x30de1, 0);
  auto& m = *impl_;
  m.embedding = normal<T>("embedding", {v, d}, 1.0 / std::sqrt(double(d)), rng);
  m.output_bias = filled<T>("output_bias", {v}, T(0));
  for (int64_t l = 0; l < config_.layers; ++l) {
    const std::string pre = fmt::format("layers.{}.", l);
    typename Impl::Layer layer;
    layer.ln1_scale = filled<T>(pre + "ln1.scale", {d}, T(1));
    layer.ln1_bias = filled<T>(pre + "ln1.bias", {d}, T(0));
    layer.qkv = normal<T>(pre + "attn.qkv", {d, 3 * d}, 1.0 / std::sqrt(double(d)), rng);
    layer.out = normal<T>(pre + "attn.out", {d, d}, 1.0 / std::sqrt(double(d)), rng);
    layer.ln2_scale = filled<T>(pre + "ln2.scale", {d}, T(1));
    layer.ln2_bias = filled<T>(pre + "ln2.bias", {d}, T(0));
    layer.glu_in = normal<T>(pre + "glu.in", {d, 2 * f}, 1.0 / std::sqrt(double(d)), rng);
    layer.glu_out = normal<T>(pre + "glu.out", {f, d}, 1.0 / std::sqrt(double(f)), rng);
    AttentionConfig ac = config_.attention;
    ac.seed = config_.seed;
    ac.layer = static_cast<int>(l);
    layer.attn = std::make_unique<AttentionT<T>>(ac, config_.head_dim(), config_.head_dim());
    for (auto& p : layer.attn->params()) p.name = pre + "attn." + p.name;
    m.layers.push_back(std::move(layer));
  }
  m.final_scale = filled<T>("final_ln.scale", {d}, T(1));
  m.final_bias = filled<T>("final_ln.bias", {d}, T(0));
}

template <typename T>
ModelT<T>::~ModelT() = default;

template <typename T>
std::vector<Param<T>*> ModelT<T>::params() {
  auto& m = *impl_;
  std::vector<Param<T>*> ps{&m.embedding, &m.output_bias};
  for (auto& l : m.layers) {
    for (auto* p : {&l.ln1_scale, &l.ln1_bias, &l.qkv, &l.out}) ps.push_back(p);
    for (auto& p : l.attn->params()) ps.push_back(&p);
    for (auto* p : {&l.ln2_scale, &l.ln2_bias, &l.glu_in, &l.glu_out}) ps.push_back(p);
  }
  ps.push_back(&m.final_scale);
  ps.push_back(&m.final_bias);
  return ps;
}

template <typename T>
std::vector<std::vector<T>> ModelT<T>::zero_grads() {
  std::vector<std::vector<T>> g;
  for (auto* p : params()) g.emplace_back(p->value.size(), T(0));
  return g;
}

template <typename T>
int64_t ModelT<T>::parameter_count() {
  int64_t n = 0;
  for (auto* p : params()) n += static_cast<int64_t>(p->value.size());
  return n;
}

namespace {

// Called by prefill after each layer's attention: q, k, v, out [1, heads, len, hd] (after RoPE)
// and the saved row statistics (the denominators, for the non-softmax mechanisms); it may adjust
// out in place (the earlier tokens of a chunked prefill) and records k, v in the decoding state.
template <typename T>
using AttentionHook = std::function<void(size_t layer, const T* q, const T* k, const T* v, T* out, T* stat,
                                         const AttentionSaved<T>& saved)>;

// Runs the network up to the final LayerNorm output xf [N x D]. When acts is non-null, keeps
// every activation backward needs.
template <typename T, typename Impl>
void run_trunk(Impl& m, const ModelConfig& cfg, const int32_t* tokens, int64_t batch, int64_t len,
               bool train, uint64_t dropout_seed, std::vector<typename Impl::LayerActs>* acts,
               std::vector<T>& x, std::vector<T>& xf, const AttentionHook<T>* hook = nullptr,
               int64_t t0 = 0, const ContextChunkT<T>* chunk = nullptr) {
  const int64_t n = batch * len, d = cfg.width, h = cfg.heads, hd = cfg.head_dim(),
                f = cfg.glu_hidden();
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab)
      throw Error(fmt::format("token id {} at position {} is outside the vocabulary [0, {})",
                              tokens[i], i, cfg.vocab));
  if (m.pe_len != len || m.pe_t0 != t0) {  // positions t0 .. t0+len-1
    m.pe = model::sinusoidal_positions<T>(len, d, t0);
    m.pe_len = len;
    m.pe_t0 = t0;
  }
  x.resize(static_cast<size_t>(n * d));
  model::embedding_forward(x.data(), tokens, m.embedding.value.data(),
                           static_cast<T>(std::sqrt(static_cast<double>(d))), m.pe.data(), batch,
                           len, d);
  const AttentionShape shape{batch, h, len, hd, hd};
  typename Impl::LayerActs scratch;
  T* qkv = util::grown(m.qkv, n * 3 * d);
  T* proj = util::grown(m.proj, n * d);
  for (size_t li = 0; li < m.layers.size(); ++li) {
    auto& l = m.layers[li];
    auto& a = acts ? (*acts)[li] : scratch;
    if (acts) a.x_in = x;
    a.ln1.resize(x.size());
    kernels::layernorm_forward(n, d, x.data(), l.ln1_scale.value.data(), l.ln1_bias.value.data(),
                               a.ln1.data());
    gemm<T>(false, false, n, 3 * d, d, T(1), a.ln1.data(), d, l.qkv.value.data(), 3 * d, T(0), qkv,
            3 * d);
    a.q.resize(x.size());
    a.k.resize(x.size());
    a.v.resize(x.size());
    model::split_heads(qkv, a.q.data(), a.k.data(), a.v.data(), batch, len, h, hd);
    model::rope_forward(a.q.data(), batch * h, len, hd, t0);
    model::rope_forward(a.k.data(), batch * h, len, hd, t0);
    a.o.resize(x.size());
    l.attn->forward(shape, a.q.data(), a.k.data(), a.v.data(), a.o.data(),
                    acts || hook ? &a.saved : nullptr, chunk ? chunk->exchange : nullptr);
    if (hook) (*hook)(li, a.q.data(), a.k.data(), a.v.data(), a.o.data(), a.saved.row_stat.data(), a.saved);
    a.merged.resize(x.size());
    model::merge_heads(a.merged.data(), a.o.data(), batch, len, h, hd);
    gemm<T>(false, false, n, d, d, T(1), a.merged.data(), d, l.out.value.data(), d, T(0), proj, d);
    const int64_t seq_len = chunk ? chunk->seq_len : len;
    model::dropout_mask(a.mask1, batch, len, d, train ? cfg.dropout : 0.0, dropout_seed, 2 * li,
                        t0, seq_len);
    for (int64_t i = 0; i < n * d; ++i) x[i] += a.mask1.empty() ? proj[i] : proj[i] * a.mask1[i];
    if (acts) a.x_mid = x;
    a.ln2.resize(x.size());
    kernels::layernorm_forward(n, d, x.data(), l.ln2_scale.value.data(), l.ln2_bias.value.data(),
                               a.ln2.data());
    a.u.resize(static_cast<size_t>(n * 2 * f));
    gemm<T>(false, false, n, 2 * f, d, T(1), a.ln2.data(), d, l.glu_in.value.data(), 2 * f, T(0),
            a.u.data(), 2 * f);
    a.g.resize(static_cast<size_t>(n * f));
    model::glu_forward(a.g.data(), a.u.data(), n, f);
    gemm<T>(false, false, n, d, f, T(1), a.g.data(), f, l.glu_out.value.data(), d, T(0), proj, d);
    model::dropout_mask(a.mask2, batch, len, d, train ? cfg.dropout : 0.0, dropout_seed,
                        2 * li + 1, t0, seq_len);
    for (int64_t i = 0; i < n * d; ++i) x[i] += a.mask2.empty() ? proj[i] : proj[i] * a.mask2[i];
  }
  xf.resize(x.size());
  kernels::layernorm_forward(n, d, x.data(), m.final_scale.value.data(),
                             m.final_bias.value.data(), xf.data());
}

}  // namespace

template <typename T>
double ModelT<T>::forward(const int32_t* tokens, const int32_t* targets, int64_t batch,
                          int64_t len, bool train, uint64_t dropout_seed,
                          const ContextChunkT<T>* chunk) {
  auto& m = *impl_;
  if (batch < 1 || len < 1)
    throw Error(fmt::format("forward needs batch, len >= 1; got batch={} len={}", batch, len));
  const int64_t n = batch * len, v = config_.vocab;
  if (chunk && (!chunk->exchange || chunk->offset < 0 || chunk->seq_len < chunk->offset + len ||
                chunk->scored < 1))
    throw Error(fmt::format("forward: invalid context chunk (offset {}, sequence length {}, "
                            "scored {}) for {} tokens", chunk->offset, chunk->seq_len,
                            chunk->scored, len));
  if (!chunk && std::count(targets, targets + n, kIgnoreTarget) == n)
    throw Error("forward: no scored position (every target is ignored)");
  for (int64_t i = 0; i < n; ++i)
    if ((targets[i] < 0 || targets[i] >= v) && targets[i] != kIgnoreTarget)
      throw Error(fmt::format("target id {} is outside the vocabulary [0, {}) (and is not {}, "
                              "which skips a position)", targets[i], v, kIgnoreTarget));
  m.acts.resize(m.layers.size());
  std::vector<T> x, xf;
  run_trunk<T>(m, config_, tokens, batch, len, train, dropout_seed, train ? &m.acts : nullptr, x,
               xf, nullptr, chunk ? chunk->offset : 0, chunk);
  auto& logits = m.dlogits;  // becomes d loss / d logits in place when training
  output_logits(m.embedding, m.output_bias, xf, n, config_.width, v, logits);
  const double loss = model::cross_entropy(logits.data(), targets, n, v,
                                           train ? logits.data() : static_cast<T*>(nullptr),
                                           chunk ? chunk->scored : 0);
  m.chunk = chunk ? *chunk : ContextChunkT<T>{};
  m.grads_ready = train;
  if (train) {
    m.x_final = std::move(x);
    m.xf = std::move(xf);
    m.tokens.assign(tokens, tokens + n);
    m.batch = batch;
    m.len = len;
  } else {
    m.acts.clear();
  }
  return loss;
}

template <typename T>
std::vector<T> ModelT<T>::logits(const int32_t* tokens, int64_t batch, int64_t len) {
  auto& m = *impl_;
  std::vector<T> x, xf;
  run_trunk<T>(m, config_, tokens, batch, len, false, 0, nullptr, x, xf);
  std::vector<T> out;
  output_logits(m.embedding, m.output_bias, xf, batch * len, config_.width, config_.vocab, out);
  return out;
}

template <typename T>
std::vector<double> ModelT<T>::sketch_error(const int32_t* tokens, int64_t batch, int64_t len) {
  const Mechanism mech = config_.attention.mechanism;
  if (!attention::uses_sketch(mech))
    throw Error(fmt::format("the sketch error needs a sketch mechanism; {} is exact", mechanism_name(mech)));
  auto& m = *impl_;
  const AttentionShape shape{batch, config_.heads, len, config_.head_dim(), config_.head_dim()};
  std::vector<double> error(m.layers.size());
  std::vector<T> exact;
  const AttentionHook<T> hook = [&](size_t li, const T* q, const T* k, const T* v, T* o, T*,
                                    const AttentionSaved<T>&) {
    exact.resize(static_cast<size_t>(batch * len * config_.width));
    m.layers[li].attn->exact_forward(shape, q, k, v, exact.data());
    double diff = 0, norm = 0;
    for (size_t i = 0; i < exact.size(); ++i) {
      diff += (static_cast<double>(o[i]) - exact[i]) * (static_cast<double>(o[i]) - exact[i]);
      norm += static_cast<double>(exact[i]) * exact[i];
    }
    error[li] = norm > 0 ? std::sqrt(diff / norm) : 0.0;
  };
  std::vector<T> x, xf;
  run_trunk<T>(m, config_, tokens, batch, len, false, 0, nullptr, x, xf, &hook);
  return error;
}

template <typename T>
std::vector<T> ModelT<T>::prefill(DecodeStateT<T>& state, const int32_t* tokens, int64_t n) {
  if (n < 1) throw Error(fmt::format("prefill needs at least one token, got {}", n));
  check_decode_state(config_, state);
  const bool sketch = attention::has_constant_state(config_.attention.mechanism);
  const int64_t b = config_.attention.block;
  DecodeStateT<T>* one = &state;
  int64_t done = 0;
  // A KV cache continues token by token; a sketch state steps to the next block boundary, from
  // where whole chunks go through the block algorithm.
  while (done < n && state.position() > 0 && (!sketch || state.position() % b != 0))
    step(&one, tokens + done++, 1);
  if (done == n) return state.last_logits();
  check_kv_room(config_, state, n - done);
  // Chunks (a multiple of b) keep the prefill's working memory independent of n.
  const int64_t chunk = sketch ? b * std::max<int64_t>(1, state.prefill_chunk / b) : n;
  auto& m = *impl_;
  const int64_t h = config_.heads, hd = config_.head_dim();
  auto& heads = state.impl().heads;
  std::vector<T> x, xf;
  for (; done < n; done += chunk) {
    const int64_t len = std::min(chunk, n - done);
    const bool earlier = state.position() > 0;
    const AttentionHook<T> hook = [&](size_t li, const T* q, const T* k, const T* v, T* o, T* den,
                                      const AttentionSaved<T>& saved) {
      const auto& attn = *m.layers[li].attn;
      const int64_t r = attn.feature_dim();
      util::parallel_for(h, omp_in_parallel() ? 1 : omp_get_max_threads(), [&](int64_t hh, int) {
        auto& hs = heads[li * h + hh];
        const int64_t at = hh * len * hd;
        // Learned sketches: phi(q), phi(k) of this head as the forward pass saved them.
        const T* phi = saved.features.empty() ? nullptr : saved.features.data() + hh * 2 * len * r;
        if (earlier) attention::add_earlier_tokens(attn, hd, hs, len, q + at, o + at, den + hh * len, phi);
        attention::append_tokens(attn, hd, hs, len, k + at, v + at, phi ? phi + len * r : nullptr);
      });
    };
    run_trunk<T>(m, config_, tokens + done, 1, len, false, 0, nullptr, x, xf, &hook, state.position());
    state.advance(len);
  }
  std::vector<T> last(xf.end() - config_.width, xf.end());
  output_logits(m.embedding, m.output_bias, last, 1, config_.width, config_.vocab, state.impl().logits);
  return state.last_logits();
}

template <typename T>
void ModelT<T>::backward(std::vector<std::vector<T>>& grads,
                         const std::function<void(size_t, size_t)>& ready) {
  auto& m = *impl_;
  if (!m.grads_ready) throw Error("backward() needs a preceding forward(train=true)");
  const int64_t batch = m.batch, len = m.len, n = batch * len, d = config_.width,
                h = config_.heads, hd = config_.head_dim(), f = config_.glu_hidden(),
                v = config_.vocab;
  // Gradient slots follow params(): embedding, output_bias, layers..., final scale, bias.
  size_t slot = 0;
  auto& g_emb = grads[slot++];
  auto& g_bias = grads[slot++];
  std::vector<size_t> layer_slot;
  for (auto& l : m.layers) {
    layer_slot.push_back(slot);
    slot += 8 + l.attn->params().size();
  }
  auto& g_fs = grads[slot];
  auto& g_fb = grads[slot + 1];

  const T* dl = m.dlogits.data();
  util::parallel_ranges(v, util::elementwise_threads(n * v), [&](int64_t j0, int64_t j1, int) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = j0; j < j1; ++j) g_bias[j] += dl[i * v + j];
  });
  gemm<T>(true, false, v, d, n, T(1), dl, v, m.xf.data(), d, T(1), g_emb.data(), d);
  // Every scratch buffer below is fully overwritten before it is read.
  auto scratch = [](std::vector<T>& buf, int64_t size) -> std::vector<T>& {
    buf.resize(static_cast<size_t>(size));
    return buf;
  };
  auto& dx = scratch(m.dx, n * d);
  auto& tmp = scratch(m.tmp, n * d);
  gemm<T>(false, false, n, d, v, T(1), dl, v, m.embedding.value.data(), d, T(0), tmp.data(), d);
  kernels::layernorm_backward(n, d, m.x_final.data(), m.final_scale.value.data(), tmp.data(),
                              dx.data(), g_fs.data(), g_fb.data());

  const AttentionShape shape{batch, h, len, hd, hd};
  auto& dg = scratch(m.dg, n * f);
  auto& du = scratch(m.du, n * 2 * f);
  auto& dy = scratch(m.dy, n * d);
  auto& dq = scratch(m.dq, n * d);
  auto& dk = scratch(m.dk, n * d);
  auto& dv = scratch(m.dv, n * d);
  auto& dqkv = scratch(m.dqkv, n * 3 * d);
  for (size_t li = m.layers.size(); li-- > 0;) {
    auto& l = m.layers[li];
    auto& a = m.acts[li];
    const size_t s = layer_slot[li];
    const size_t na = l.attn->params().size();
    // order: ln1.scale, ln1.bias, qkv, out, attn params..., ln2.scale, ln2.bias, glu.in, glu.out
    auto& g_ln1s = grads[s];
    auto& g_ln1b = grads[s + 1];
    auto& g_qkv = grads[s + 2];
    auto& g_out = grads[s + 3];
    auto& g_ln2s = grads[s + 4 + na];
    auto& g_ln2b = grads[s + 5 + na];
    auto& g_in = grads[s + 6 + na];
    auto& g_gout = grads[s + 7 + na];
    // GLU branch
    for (int64_t i = 0; i < n * d; ++i) dy[i] = a.mask2.empty() ? dx[i] : dx[i] * a.mask2[i];
    gemm<T>(true, false, f, d, n, T(1), a.g.data(), f, dy.data(), d, T(1), g_gout.data(), d);
    gemm<T>(false, true, n, f, d, T(1), dy.data(), d, l.glu_out.value.data(), d, T(0), dg.data(), f);
    model::glu_backward(du.data(), dg.data(), a.u.data(), n, f);
    gemm<T>(true, false, d, 2 * f, n, T(1), a.ln2.data(), d, du.data(), 2 * f, T(1), g_in.data(),
            2 * f);
    gemm<T>(false, true, n, d, 2 * f, T(1), du.data(), 2 * f, l.glu_in.value.data(), 2 * f, T(0),
            tmp.data(), d);
    kernels::layernorm_backward(n, d, a.x_mid.data(), l.ln2_scale.value.data(), tmp.data(),
                                tmp.data(), g_ln2s.data(), g_ln2b.data());
    for (int64_t i = 0; i < n * d; ++i) dx[i] += tmp[i];
    // Attention branch
    for (int64_t i = 0; i < n * d; ++i) dy[i] = a.mask1.empty() ? dx[i] : dx[i] * a.mask1[i];
    gemm<T>(true, false, d, d, n, T(1), a.merged.data(), d, dy.data(), d, T(1), g_out.data(), d);
    gemm<T>(false, true, n, d, d, T(1), dy.data(), d, l.out.value.data(), d, T(0), tmp.data(), d);
    model::split_heads_grad(dy.data(), tmp.data(), batch, len, h, hd);  // dy <- d o
    auto attn_grads = l.attn->zero_grads();
    l.attn->backward(shape, a.q.data(), a.k.data(), a.v.data(), a.o.data(), dy.data(), a.saved,
                     dq.data(), dk.data(), dv.data(), &attn_grads, m.chunk.exchange);
    for (size_t p = 0; p < na; ++p) add_into(grads[s + 4 + p], attn_grads[p]);
    model::rope_backward(dq.data(), batch * h, len, hd, m.chunk.offset);
    model::rope_backward(dk.data(), batch * h, len, hd, m.chunk.offset);
    model::merge_qkv_grads(dqkv.data(), dq.data(), dk.data(), dv.data(), batch, len, h, hd);
    gemm<T>(true, false, d, 3 * d, n, T(1), a.ln1.data(), d, dqkv.data(), 3 * d, T(1),
            g_qkv.data(), 3 * d);
    gemm<T>(false, true, n, d, 3 * d, T(1), dqkv.data(), 3 * d, l.qkv.value.data(), 3 * d, T(0),
            tmp.data(), d);
    kernels::layernorm_backward(n, d, a.x_in.data(), l.ln1_scale.value.data(), tmp.data(),
                                tmp.data(), g_ln1s.data(), g_ln1b.data());
    for (int64_t i = 0; i < n * d; ++i) dx[i] += tmp[i];
    if (ready) ready(s, s + 8 + na);
  }
  model::embedding_backward(g_emb.data(), dx.data(), m.tokens.data(),
                            static_cast<T>(std::sqrt(static_cast<double>(d))), n, d);
  if (ready) {
    ready(0, 2);              // embedding, output bias
    ready(slot, slot + 2);    // final LayerNorm
  }
  m.grads_ready = false;
}

template class ModelT<float>;
template class ModelT<double>;

}  // namespace polysketch
