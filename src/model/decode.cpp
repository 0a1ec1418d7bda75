// Decoding with the model: prefill (a prompt through the block algorithm, into a state) and
// step, one token for each of B sequences in one batched pass (the dense layers as [B x ...]
// products, the attention of each sequence and head against its own state).
#include <fmt/format.h>
#include <omp.h>

#include <cmath>

#include "attention/decode.h"
#include "attention/mechanism.h"
#include "kernels/vec.h"
#include "model/block.h"
#include "model/decode_state.h"
#include "model/layers.h"
#include "model/trunk.h"
#include "util/parallel.h"

namespace polysketch {

template <typename T>
std::vector<T> ModelT<T>::prefill(DecodeStateT<T>& state, const int32_t* tokens, int64_t n,
                                  WorkspaceT<T>* ws) const {
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
  reserve_kv(config_, &one, 1, n - done);
  // Chunks (a multiple of b) keep the prefill's working memory independent of n.
  const int64_t chunk = sketch ? b * std::max<int64_t>(1, state.prefill_chunk / b) : n;
  const int64_t h = config_.heads, hd = config_.head_dim();
  auto& heads = DecodeAccess::impl(state).heads;
  WorkspaceT<T> own;  // when the caller passed none
  auto& mem = (ws ? *ws : own).impl_->trunk;
  for (; done < n; done += chunk) {
    const int64_t len = std::min(chunk, n - done);
    const bool earlier = state.position() > 0;
    const model::AttentionHook<T> hook = [&](size_t li, const T* q, const T* k, const T* v, T* o,
                                             AttentionSaved<T>& saved) {
      const auto& attn = *weights_->layers[li].attn;
      const int64_t r = attn.feature_dim();
      T* den = saved.row_stat.data();
      util::parallel_for(h, omp_in_parallel() ? 1 : omp_get_max_threads(), [&](int64_t hh, int) {
        auto& hs = heads[li * h + hh];
        const int64_t at = hh * len * hd;
        // Learned sketches: phi(q), phi(k) of this head as the forward pass saved them.
        const T* phi = saved.features.empty() ? nullptr : saved.features.data() + hh * 2 * len * r;
        if (earlier) attention::add_earlier_tokens(attn, hd, hs, len, q + at, o + at, den + hh * len, phi);
        attention::append_tokens(attn, hd, hs, len, k + at, v + at, phi ? phi + len * r : nullptr);
      });
    };
    model::TrunkPass<T> pass{tokens + done, 1, len};
    pass.t0 = state.position();
    pass.hook = &hook;
    model::run_trunk(ctx_, *weights_, config_, pass, mem);
    DecodeAccess::advance(state, len);
  }
  model::output_logits(ctx_, *weights_, mem.xf.data() + mem.xf.size() - config_.width, 1, DecodeAccess::impl(state).logits);
  return state.last_logits();
}

template <typename T>
std::vector<T> ModelT<T>::step(DecodeStateT<T>* const* states, const int32_t* tokens, int64_t batch) const {
  const auto& w = *weights_;
  const auto& cfg = config_;
  const int64_t d = cfg.width, nh = cfg.heads, hd = cfg.head_dim(), v = cfg.vocab;
  if (batch < 1) throw Error(fmt::format("step needs at least one sequence, got {}", batch));
  for (int64_t b = 0; b < batch; ++b) {
    if (!states[b]) throw Error("step: null decoding state");
    check_decode_state(cfg, *states[b]);
    for (int64_t c = 0; c < b; ++c)
      if (states[c] == states[b]) throw Error("step: the same decoding state appears twice in one batch");
    if (tokens[b] < 0 || tokens[b] >= v)
      throw Error(fmt::format("token id {} is outside the vocabulary [0, {})", tokens[b], v));
  }
  reserve_kv(cfg, states, batch, 1);
  std::vector<T> x(static_cast<size_t>(batch * d));
  const T scale = static_cast<T>(std::sqrt(static_cast<double>(d)));
  for (int64_t b = 0; b < batch; ++b) {
    T* row = &x[b * d];
    model::sinusoidal_row(states[b]->position(), d, row);
    const T* e = w.embedding.value.data() + static_cast<int64_t>(tokens[b]) * d;
    for (int64_t i = 0; i < d; ++i) row[i] += scale * e[i];
  }
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  std::vector<std::vector<T>> head_scratch(static_cast<size_t>(threads));
  model::BlockActs<T> acts;
  model::BlockScratch<T> scratch;
  const bool sketch = attention::uses_sketch(cfg.attention.mechanism);
  std::vector<attention::StepFeatures<T>> features(static_cast<size_t>(sketch ? batch : 0));
  for (size_t li = 0; li < w.layers.size(); ++li) {
    const auto& attn = *w.layers[li].attn;
    // Each row against its own sequence's state, head by head.
    const model::Attend<T> attend = [&](T* qkv, T* merged) {
      for (int64_t b = 0; b < batch; ++b)  // q and k of every head: rows [b][0:d] and [b][d:2d]
        model::rope_forward(&qkv[b * 3 * d], 2 * nh, 1, hd, states[b]->position());
      // Sketch mechanisms: each sequence's features, all heads in one product (the same rows in
      // every call, so a sequence's arithmetic does not depend on the batch).
      if (sketch)
        util::parallel_for_balanced(batch, threads, [&](int64_t b, int) {
          attention::step_features(attn, hd, nh, &qkv[b * 3 * d], &qkv[b * 3 * d + d], features[static_cast<size_t>(b)]);
        });
      util::parallel_for_balanced(batch * nh, threads, [&](int64_t i, int thread) {
        const int64_t b = i / nh, hh = i % nh;
        const T* row = &qkv[b * 3 * d];
        attention::step_head(attn, hd, DecodeAccess::impl(*states[b]).heads[li * nh + hh], row + hh * hd,
                             row + d + hh * hd, row + 2 * d + hh * hd, &merged[b * d + hh * hd],
                             head_scratch[static_cast<size_t>(thread)], sketch ? &features[static_cast<size_t>(b)] : nullptr, hh);
      });
    };
    model::block_forward(ctx_, w.layers[li], batch, x.data(), acts, scratch, false, attend,
                         panels_ ? &panels_->layers[li] : nullptr);
  }
  std::vector<T> y(x.size());
  kernels::layernorm_forward(batch, d, x.data(), w.final_scale.value.data(), w.final_bias.value.data(), y.data());
  std::vector<T> logits;
  model::output_logits(ctx_, w, y.data(), batch, logits);
  for (int64_t b = 0; b < batch; ++b) {
    DecodeAccess::advance(*states[b], 1);
    DecodeAccess::impl(*states[b]).logits.assign(logits.begin() + b * v, logits.begin() + (b + 1) * v);
  }
  return logits;
}

#define POLYSKETCH_INSTANTIATE(T)                                                               \
  template std::vector<T> ModelT<T>::prefill(DecodeStateT<T>&, const int32_t*, int64_t,         \
                                             WorkspaceT<T>*) const;                             \
  template std::vector<T> ModelT<T>::step(DecodeStateT<T>* const*, const int32_t*, int64_t) const;
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE
}  // namespace polysketch
