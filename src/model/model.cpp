// ModelT: the weights, the training forward and the hand-written backward, evaluation.
#include "polysketch/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "attention/mechanism.h"
#include "kernels/rng.h"
#include "kernels/vec.h"
#include "model/block.h"
#include "model/layers.h"
#include "model/trunk.h"
#include "util/parallel.h"

namespace polysketch {

using kernels::gemm;

template <typename T>
WorkspaceT<T>::WorkspaceT() : impl_(std::make_unique<Impl>()) {}
template <typename T>
WorkspaceT<T>::~WorkspaceT() = default;
template <typename T>
WorkspaceT<T>::WorkspaceT(WorkspaceT&&) noexcept = default;
template <typename T>
WorkspaceT<T>& WorkspaceT<T>::operator=(WorkspaceT&&) noexcept = default;
template <typename T>
TrainCacheT<T>::TrainCacheT() : impl_(std::make_unique<Impl>()) {}
template <typename T>
TrainCacheT<T>::~TrainCacheT() = default;
template <typename T>
TrainCacheT<T>::TrainCacheT(TrainCacheT&&) noexcept = default;
template <typename T>
TrainCacheT<T>& TrainCacheT<T>::operator=(TrainCacheT&&) noexcept = default;

namespace {
template <typename T>
Param<T> filled(std::string name, std::vector<int64_t> shape, T value) {
  int64_t size = 1;
  for (auto s : shape) size *= s;
  return {std::move(name), std::move(shape), std::vector<T>(static_cast<size_t>(size), value)};
}
// N(0, 1/fan_in), fan_in = shape[0]
template <typename T>
Param<T> normal(std::string name, std::vector<int64_t> shape, kernels::Rng& rng, int64_t fan_in) {
  auto p = filled<T>(std::move(name), std::move(shape), T(0));
  const double sd = 1.0 / std::sqrt(static_cast<double>(fan_in));
  for (auto& x : p.value) x = static_cast<T>(sd * rng.normal());
  return p;
}
template <typename T>
void add_into(std::vector<T>& dst, const std::vector<T>& src) {
  for (size_t i = 0; i < dst.size(); ++i) dst[i] += src[i];
}
void check_targets(const int32_t* targets, int64_t n, int64_t vocab, bool some_scored) {
  if (some_scored && std::count(targets, targets + n, kIgnoreTarget) == n)
    throw Error("forward: no scored position (every target is ignored)");
  for (int64_t i = 0; i < n; ++i)
    if ((targets[i] < 0 || targets[i] >= vocab) && targets[i] != kIgnoreTarget)
      throw Error(fmt::format("target id {} is outside the vocabulary [0, {}) (and is not {}, "
                              "which skips a position)", targets[i], vocab, kIgnoreTarget));
}
void check_rows(int64_t batch, int64_t len) {
  if (batch < 1 || len < 1)
    throw Error(fmt::format("the model needs batch, len >= 1; got batch={} len={}", batch, len));
}
}  // namespace

template <typename T>
ModelT<T>::ModelT(const ModelConfig& config, const ComputeContext& ctx) : config_(config), ctx_(ctx) {
  config_.validate();
  config_.check_fits_in_memory(0);
  weights_ = std::make_unique<model::Weights<T>>();
  const int64_t d = config_.width, f = config_.glu_hidden(), v = config_.vocab;
  auto rng = kernels::Rng::derive(config_.seed, 0x30de1, 0);
  auto& w = *weights_;
  // Construction order is the order of the random draws.
  w.embedding = normal<T>("embedding", {v, d}, rng, d);
  w.output_bias = filled<T>("output_bias", {v}, T(0));
  for (int64_t l = 0; l < config_.layers; ++l) {
    const std::string pre = fmt::format("layers.{}.", l);
    auto& b = w.layers.emplace_back();
    b.ln1_scale = filled<T>(pre + "ln1.scale", {d}, T(1));
    b.ln1_bias = filled<T>(pre + "ln1.bias", {d}, T(0));
    b.qkv = normal<T>(pre + "attn.qkv", {d, 3 * d}, rng, d);
    b.out = normal<T>(pre + "attn.out", {d, d}, rng, d);
    b.ln2_scale = filled<T>(pre + "ln2.scale", {d}, T(1));
    b.ln2_bias = filled<T>(pre + "ln2.bias", {d}, T(0));
    b.glu_in = normal<T>(pre + "glu.in", {d, 2 * f}, rng, d);
    b.glu_out = normal<T>(pre + "glu.out", {f, d}, rng, f);
    AttentionConfig ac = config_.attention;
    ac.seed = config_.seed;
    ac.layer = static_cast<int>(l);
    b.attn = std::make_unique<AttentionT<T>>(ac, config_.head_dim(), config_.head_dim(), ctx_);
    for (auto& p : b.attn->params()) p.name = pre + "attn." + p.name;
  }
  w.final_scale = filled<T>("final_ln.scale", {d}, T(1));
  w.final_bias = filled<T>("final_ln.bias", {d}, T(0));
}

template <typename T>
ModelT<T>::~ModelT() = default;

template <typename T>
void ModelT<T>::prepare_decoding() {
  if constexpr (std::is_same_v<T, float>) {
    auto panels = std::make_unique<model::DecodePanels>();
    auto pack = [](const Param<float>& w) {
      return kernels::pack_panels(w.shape[0], w.shape[1], w.value.data(), w.shape[1]);
    };
    for (const auto& l : weights_->layers)
      panels->layers.push_back({pack(l.qkv), pack(l.out), pack(l.glu_in), pack(l.glu_out)});
    panels_ = std::move(panels);
  }
}

template <typename T>
std::vector<Param<T>*> ModelT<T>::params() {
  panels_.reset();  // the weights may change through these pointers
  std::vector<Param<T>*> ps;
  model::for_each_tensor(*weights_, [&](Param<T>& p, int) { ps.push_back(&p); });
  return ps;
}

template <typename T>
std::vector<const Param<T>*> ModelT<T>::params() const {
  std::vector<const Param<T>*> ps;
  model::for_each_tensor(std::as_const(*weights_), [&](const Param<T>& p, int) { ps.push_back(&p); });
  return ps;
}

template <typename T>
std::vector<std::vector<T>> ModelT<T>::zero_grads() const {
  std::vector<std::vector<T>> g;
  for (auto* p : params()) g.emplace_back(p->value.size(), T(0));
  return g;
}

template <typename T>
int64_t ModelT<T>::parameter_count() const {
  int64_t n = 0;
  for (auto* p : params()) n += static_cast<int64_t>(p->value.size());
  return n;
}

namespace {
// A context chunk's fields against its len tokens. Document ids go with chunks in time only
// (context parallelism's ranks do not pass document starts on).
template <typename T>
void check_chunk(const ContextChunkT<T>* chunk, int64_t len, const int32_t* documents, const char* who) {
  if (!chunk) return;
  if (documents && !(chunk->exchange && chunk->exchange->sequential()))
    throw Error(fmt::format("{}: context chunks do not take document ids (chunks run without document "
                            "masking)", who));
  if (chunk->documents_before && !documents)
    throw Error(fmt::format("{}: a context chunk's documents_before needs the chunk's document ids", who));
  if (!chunk->exchange || chunk->offset < 0 || chunk->seq_len < chunk->offset + len || chunk->scored < 1)
    throw Error(fmt::format("{}: invalid context chunk (offset {}, sequence length {}, scored {}) for {} "
                            "tokens", who, chunk->offset, chunk->seq_len, chunk->scored, len));
}
}  // namespace

template <typename T>
double ModelT<T>::forward(TrainCacheT<T>& cache, const int32_t* tokens, const int32_t* targets,
                          int64_t batch, int64_t len, uint64_t dropout_seed,
                          const ContextChunkT<T>* chunk, const int32_t* documents) const {
  check_rows(batch, len);
  check_chunk(chunk, len, documents, "forward");
  const int64_t n = batch * len;
  check_targets(targets, n, config_.vocab, !chunk);
  auto& c = *cache.impl_;
  c.ready = false;
  c.chunk = chunk ? *chunk : ContextChunkT<T>{};
  if (documents) {
    c.documents.assign(documents, documents + n);
  } else {
    c.documents.clear();
  }
  if (chunk && chunk->documents_before) {  // the backward reads them after the caller's call
    c.documents_before.assign(chunk->documents_before, chunk->documents_before + batch);
    c.chunk.documents_before = c.documents_before.data();
  }
  auto pass = model::chunk_pass(tokens, batch, len, documents, chunk ? &c.chunk : nullptr);
  pass.keep = true;
  pass.dropout = config_.dropout;
  pass.dropout_seed = dropout_seed;
  model::run_trunk(ctx_, *weights_, config_, pass, c.trunk);
  model::output_logits(ctx_, *weights_, c.trunk.xf.data(), n, c.dlogits);
  // d loss / d logits in place
  const double loss = model::cross_entropy(c.dlogits.data(), targets, n, config_.vocab,
                                           c.dlogits.data(), chunk ? chunk->scored : 0);
  c.tokens.assign(tokens, tokens + n);
  c.batch = batch;
  c.len = len;
  c.ready = true;
  return loss;
}

template <typename T>
void ModelT<T>::pass_states(TrainCacheT<T>& cache, const int32_t* tokens, int64_t batch, int64_t len,
                            uint64_t dropout_seed, const ContextChunkT<T>& chunk,
                            const int32_t* documents) const {
  check_rows(batch, len);
  check_chunk(&chunk, len, documents, "pass_states");
  auto& c = *cache.impl_;
  c.ready = false;  // its activations are overwritten
  auto pass = model::chunk_pass(tokens, batch, len, documents, &chunk);
  pass.states_only = true;
  pass.dropout = config_.dropout;
  pass.dropout_seed = dropout_seed;
  model::run_trunk(ctx_, *weights_, config_, pass, c.trunk);
}

template <typename T>
typename ModelT<T>::Score ModelT<T>::score(const int32_t* tokens, const int32_t* targets,
                                           int64_t batch, int64_t len, WorkspaceT<T>* ws,
                                           bool by_position, const int32_t* documents,
                                           const ContextChunkT<T>* chunk) const {
  check_rows(batch, len);
  check_chunk(chunk, len, documents, "score");
  const int64_t n = batch * len, v = config_.vocab;
  check_targets(targets, n, v, !chunk);
  // Whether row i's sequence continues, at the chunk's first token, the document of the token
  // before the chunk (whose start is then chunk->document_starts).
  auto continues = [&](int64_t i) {
    return chunk && chunk->documents_before && chunk->documents_before[i / len] == documents[i];
  };
  if (by_position && chunk && chunk->documents_before && !chunk->document_starts)
    throw Error("score: per-position losses of a chunk under document masking need the context "
                "chunk's document_starts");
  WorkspaceT<T> own;  // when the caller passed none
  auto& mem = (ws ? *ws : own).impl_->trunk;
  model::run_trunk(ctx_, *weights_, config_, model::chunk_pass(tokens, batch, len, documents, chunk), mem);
  std::vector<T> logits;
  model::output_logits(ctx_, *weights_, mem.xf.data(), n, logits);
  Score s;
  const bool none = std::all_of(targets, targets + n, [](int32_t t) { return t == kIgnoreTarget; });
  s.loss = none ? 0.0 : model::cross_entropy(logits.data(), targets, n, v, static_cast<T*>(nullptr));
  // Positions in the whole sequences: a chunk's rows start at its offset.
  const int64_t base = chunk ? chunk->offset : 0, positions = chunk ? chunk->seq_len : len;
  if (by_position) {
    s.position_loss.assign(static_cast<size_t>(positions), 0.0);
    s.position_scored.assign(static_cast<size_t>(positions), 0);
  }
  int64_t doc_start = 0;  // of row i's document, as a position in its sequence
  for (int64_t i = 0; i < n; ++i) {
    if (i % len == 0) {
      doc_start = !documents ? 0 : continues(i) && by_position ? chunk->document_starts[i / len] : base;
      if (doc_start < 0 || doc_start > base)
        throw Error(fmt::format("score: document start {} of sequence {} is outside [0, {}]", doc_start,
                                i / len, base));
    } else if (documents && documents[i] != documents[i - 1])
      doc_start = base + i % len;
    if (targets[i] == kIgnoreTarget) continue;
    const T* row = logits.data() + i * v;
    s.correct += std::max_element(row, row + v) - row == targets[i];
    ++s.scored;
    if (!by_position) continue;
    const auto t = static_cast<size_t>(base + i % len - doc_start);
    s.position_loss[t] += kernels::log_sum_exp(v, row) - row[targets[i]];
    ++s.position_scored[t];
  }
  return s;
}

template <typename T>
std::vector<T> ModelT<T>::logits(const int32_t* tokens, int64_t batch, int64_t len, WorkspaceT<T>* ws) const {
  check_rows(batch, len);
  WorkspaceT<T> own;  // when the caller passed none
  auto& mem = (ws ? *ws : own).impl_->trunk;
  model::run_trunk(ctx_, *weights_, config_, model::TrunkPass<T>{tokens, batch, len}, mem);
  std::vector<T> out;
  model::output_logits(ctx_, *weights_, mem.xf.data(), batch * len, out);
  return out;
}

template <typename T>
std::vector<double> ModelT<T>::sketch_error(const int32_t* tokens, int64_t batch, int64_t len,
                                            WorkspaceT<T>* ws) const {
  const Mechanism mech = config_.attention.mechanism;
  if (!attention::uses_sketch(mech))
    throw Error(fmt::format("the sketch error needs a sketch mechanism; {} is exact", mechanism_name(mech)));
  check_rows(batch, len);
  const AttentionShape shape{batch, config_.heads, len, config_.head_dim(), config_.head_dim()};
  std::vector<double> error(weights_->layers.size());
  std::vector<T> exact;
  const model::AttentionHook<T> hook = [&](size_t li, const T* q, const T* k, const T* v, T* o,
                                           AttentionSaved<T>&) {
    exact.resize(static_cast<size_t>(batch * len * config_.width));
    weights_->layers[li].attn->exact_forward(shape, q, k, v, exact.data());
    double diff = 0, norm = 0;
    for (size_t i = 0; i < exact.size(); ++i) {
      diff += (static_cast<double>(o[i]) - exact[i]) * (static_cast<double>(o[i]) - exact[i]);
      norm += static_cast<double>(exact[i]) * exact[i];
    }
    error[li] = norm > 0 ? std::sqrt(diff / norm) : 0.0;
  };
  WorkspaceT<T> own;
  model::TrunkPass<T> pass{tokens, batch, len};
  pass.hook = &hook;
  model::run_trunk(ctx_, *weights_, config_, pass, (ws ? *ws : own).impl_->trunk);
  return error;
}

template <typename T>
void ModelT<T>::backward(TrainCacheT<T>& cache, std::vector<std::vector<T>>& grads,
                         const std::function<void(size_t, size_t)>& ready) const {
  auto& c = *cache.impl_;
  if (!c.ready) throw Error("backward() needs a preceding training forward() with this cache");
  const auto& w = *weights_;
  const auto g = model::bind_grads(w, grads);
  const auto runs = model::tensor_runs(w);
  auto report = [&](int group) {
    if (ready)
      for (const auto& run : runs)
        if (run.group == group) ready(run.begin, run.end);
  };
  const int64_t batch = c.batch, len = c.len, n = batch * len, d = config_.width,
                h = config_.heads, hd = config_.head_dim(), v = config_.vocab;
  const T* dl = c.dlogits.data();
  util::parallel_ranges(v, util::elementwise_threads(n * v), [&](int64_t j0, int64_t j1, int) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = j0; j < j1; ++j) (*g.output_bias)[j] += dl[i * v + j];
  });
  gemm<T>(ctx_, true, false, v, d, n, T(1), dl, v, c.trunk.xf.data(), d, T(1), g.embedding->data(), d);
  c.dx.resize(static_cast<size_t>(n * d));
  auto& tmp = c.back.tmp;
  tmp.resize(c.dx.size());
  gemm<T>(ctx_, false, false, n, d, v, T(1), dl, v, w.embedding.value.data(), d, T(0), tmp.data(), d);
  kernels::layernorm_backward(n, d, c.trunk.x.data(), w.final_scale.value.data(), tmp.data(),
                              c.dx.data(), g.final_scale->data(), g.final_bias->data());
  const AttentionShape shape{batch, h, len, hd, hd, c.documents.empty() ? nullptr : c.documents.data(),
                             c.chunk.documents_before};
  for (auto* t : {&c.dq, &c.dk, &c.dv}) t->resize(c.dx.size());
  for (size_t li = w.layers.size(); li-- > 0;) {
    const auto& l = w.layers[li];
    const auto& a = c.trunk.layers[li];
    const model::AttendBackward<T> attend_backward = [&](T* dmerged, T* dout, T* dqkv) {
      model::split_heads_grad(dout, dmerged, batch, len, h, hd);
      auto attn_grads = l.attn->zero_grads();
      l.attn->backward(shape, a.q.data(), a.k.data(), a.v.data(), a.o.data(), dout, a.saved,
                       c.dq.data(), c.dk.data(), c.dv.data(), &attn_grads, c.chunk.exchange);
      for (size_t p = 0; p < attn_grads.size(); ++p) add_into(*g.layers[li].attn[p], attn_grads[p]);
      model::rope_backward(c.dq.data(), batch * h, len, hd, c.chunk.offset);
      model::rope_backward(c.dk.data(), batch * h, len, hd, c.chunk.offset);
      model::merge_qkv_grads(dqkv, c.dq.data(), c.dk.data(), c.dv.data(), batch, len, h, hd);
    };
    model::block_backward(ctx_, l, g.layers[li], a.block, n, c.dx.data(), c.back, attend_backward);
    report(static_cast<int>(li));
  }
  model::embedding_backward(g.embedding->data(), c.dx.data(), c.tokens.data(),
                            static_cast<T>(std::sqrt(static_cast<double>(d))), n, d);
  report(model::kOuterGroup);
  c.ready = false;
}

template class WorkspaceT<float>;
template class WorkspaceT<double>;
template class TrainCacheT<float>;
template class TrainCacheT<double>;
template class ModelT<float>;
template class ModelT<double>;

}  // namespace polysketch
