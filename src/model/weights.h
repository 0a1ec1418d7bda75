// Internal: every tensor of the model named once (one struct per layer, as llm.c does) and
// for_each_tensor, the one source of their order (gemma.cpp's ForEachTensor). params(), the
// gradient buffers, parameter counts, checkpoint names, the model identity and the groups that
// backward reports complete all walk it. The same structs, instantiated with pointers, name the
// gradients.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "polysketch/attention.h"

namespace polysketch::model {

// P: one tensor (Param<T> for the weights, std::vector<T>* for a gradient); A: the mechanism's
// own tensors (its AttentionT for the weights, a list of P for gradients).
template <typename P, typename A>
struct BlockTensors {
  P ln1_scale, ln1_bias, qkv, out;
  A attn;
  P ln2_scale, ln2_bias, glu_in, glu_out;
};

template <typename P, typename A>
struct ModelTensors {
  P embedding, output_bias;
  std::vector<BlockTensors<P, A>> layers;
  P final_scale, final_bias;
};

template <typename T>
using BlockWeights = BlockTensors<Param<T>, std::unique_ptr<AttentionT<T>>>;
template <typename T>
using Weights = ModelTensors<Param<T>, std::unique_ptr<AttentionT<T>>>;
template <typename T>
using BlockGrads = BlockTensors<std::vector<T>*, std::vector<std::vector<T>*>>;
template <typename T>
using Grads = ModelTensors<std::vector<T>*, std::vector<std::vector<T>*>>;

template <typename T>
std::vector<Param<T>>& attention_tensors(std::unique_ptr<AttentionT<T>>& a) { return a->params(); }
template <typename T>
const std::vector<Param<T>>& attention_tensors(const std::unique_ptr<AttentionT<T>>& a) {
  return std::as_const(*a).params();
}
template <typename V>
std::vector<V>& attention_tensors(std::vector<V>& a) { return a; }

// The group of the tensors outside the layers (embedding, output bias, final LayerNorm).
inline constexpr int kOuterGroup = -1;

// Calls f(tensor, group) for every tensor in checkpoint order; group is the layer's index, or
// kOuterGroup.
template <typename M, typename F>
void for_each_tensor(M& m, F&& f) {
  f(m.embedding, kOuterGroup);
  f(m.output_bias, kOuterGroup);
  for (size_t l = 0; l < m.layers.size(); ++l) {
    auto& b = m.layers[l];
    const int g = static_cast<int>(l);
    f(b.ln1_scale, g);
    f(b.ln1_bias, g);
    f(b.qkv, g);
    f(b.out, g);
    for (auto& a : attention_tensors(b.attn)) f(a, g);
    f(b.ln2_scale, g);
    f(b.ln2_bias, g);
    f(b.glu_in, g);
    f(b.glu_out, g);
  }
  f(m.final_scale, kOuterGroup);
  f(m.final_bias, kOuterGroup);
}

// Names the gradient buffers `flat` (one per weight tensor, in for_each_tensor's order).
// Throws Error unless there is one buffer of the right size per tensor.
template <typename T>
Grads<T> bind_grads(const Weights<T>& w, std::vector<std::vector<T>>& flat);

// A run of consecutive tensors [begin, end) of one group, in for_each_tensor's order.
struct TensorRun {
  int group;
  size_t begin, end;
};
template <typename T>
std::vector<TensorRun> tensor_runs(const Weights<T>& w);

}  // namespace polysketch::model
