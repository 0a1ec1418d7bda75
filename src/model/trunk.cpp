#include "model/trunk.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "kernels/vec.h"
#include "model/layers.h"

namespace polysketch::model {

template <typename T>
void run_trunk(const ComputeContext& ctx, const Weights<T>& w, const ModelConfig& cfg, const TrunkPass<T>& pass, TrunkMemory<T>& mem) {
  const int64_t batch = pass.batch, len = pass.len, n = batch * len, d = cfg.width,
                h = cfg.heads, hd = cfg.head_dim();
  for (int64_t i = 0; i < n; ++i)
    if (pass.tokens[i] < 0 || pass.tokens[i] >= cfg.vocab)
      throw Error(fmt::format("token id {} at position {} is outside the vocabulary [0, {})",
                              pass.tokens[i], i, cfg.vocab));
  if (mem.pe_len != len || mem.pe_t0 != pass.t0) {
    mem.pe = sinusoidal_positions<T>(len, d, pass.t0);
    mem.pe_len = len;
    mem.pe_t0 = pass.t0;
  }
  auto& x = mem.x;
  x.resize(static_cast<size_t>(n * d));
  embedding_forward(x.data(), pass.tokens, w.embedding.value.data(),
                    static_cast<T>(std::sqrt(static_cast<double>(d))), mem.pe.data(), batch, len, d);
  const AttentionShape shape{batch, h, len, hd, hd, pass.documents, pass.documents_before};
  // Never shrunk: a training cache's layers outlive a pass that does not keep them.
  mem.layers.resize(std::max(mem.layers.size(), pass.keep ? w.layers.size() : 1));
  for (size_t li = 0; li < w.layers.size(); ++li) {
    const auto& l = w.layers[li];
    auto& a = mem.layers[pass.keep ? li : 0];
    const Attend<T> attend = [&](T* qkv, T* merged) {
      for (auto* t : {&a.q, &a.k, &a.v, &a.o}) t->resize(x.size());
      split_heads(qkv, a.q.data(), a.k.data(), a.v.data(), batch, len, h, hd);
      rope_forward(a.q.data(), batch * h, len, hd, pass.t0);
      rope_forward(a.k.data(), batch * h, len, hd, pass.t0);
      l.attn->forward(shape, a.q.data(), a.k.data(), a.v.data(), a.o.data(),
                      pass.keep || pass.hook ? &a.saved : nullptr, pass.exchange);
      if (pass.hook) (*pass.hook)(li, a.q.data(), a.k.data(), a.v.data(), a.o.data(), a.saved);
      merge_heads(merged, a.o.data(), batch, len, h, hd);
    };
    if (pass.states_only && li + 1 == w.layers.size()) {
      block_attend(ctx, l, n, x.data(), a.block, mem.scratch, attend);
      return;
    }
    const int64_t seq_len = pass.seq_len > 0 ? pass.seq_len : len;
    dropout_mask(a.block.mask1, batch, len, d, pass.dropout, pass.dropout_seed, 2 * li, pass.t0, seq_len);
    dropout_mask(a.block.mask2, batch, len, d, pass.dropout, pass.dropout_seed, 2 * li + 1, pass.t0, seq_len);
    block_forward(ctx, l, n, x.data(), a.block, mem.scratch, pass.keep, attend);
  }
  mem.xf.resize(x.size());
  kernels::layernorm_forward(n, d, x.data(), w.final_scale.value.data(), w.final_bias.value.data(),
                             mem.xf.data());
}

template void run_trunk<float>(const ComputeContext&, const Weights<float>&, const ModelConfig&, const TrunkPass<float>&, TrunkMemory<float>&);
template void run_trunk<double>(const ComputeContext&, const Weights<double>&, const ModelConfig&, const TrunkPass<double>&, TrunkMemory<double>&);

}  // namespace polysketch::model
