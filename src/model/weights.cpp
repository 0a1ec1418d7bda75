#include "model/weights.h"

#include <fmt/format.h>

namespace polysketch::model {

template <typename T>
Grads<T> bind_grads(const Weights<T>& w, std::vector<std::vector<T>>& flat) {
  std::vector<size_t> sizes;
  for_each_tensor(w, [&](const Param<T>& p, int) { sizes.push_back(p.value.size()); });
  if (flat.size() != sizes.size())
    throw Error(fmt::format("gradients: {} buffers for a model of {} tensors", flat.size(), sizes.size()));
  Grads<T> g;
  g.layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) g.layers[l].attn.resize(w.layers[l].attn->params().size());
  size_t i = 0;
  for_each_tensor(g, [&](std::vector<T>*& p, int) {
    if (flat[i].size() != sizes[i])
      throw Error(fmt::format("gradients: buffer {} has {} values, its tensor {}", i, flat[i].size(), sizes[i]));
    p = &flat[i++];
  });
  return g;
}

template <typename T>
std::vector<TensorRun> tensor_runs(const Weights<T>& w) {
  std::vector<TensorRun> runs;
  size_t i = 0;
  for_each_tensor(w, [&](const Param<T>&, int group) {
    if (runs.empty() || runs.back().group != group) runs.push_back({group, i, i});
    runs.back().end = ++i;
  });
  return runs;
}

template Grads<float> bind_grads(const Weights<float>&, std::vector<std::vector<float>>&);
template Grads<double> bind_grads(const Weights<double>&, std::vector<std::vector<double>>&);
template std::vector<TensorRun> tensor_runs(const Weights<float>&);
template std::vector<TensorRun> tensor_runs(const Weights<double>&);

}  // namespace polysketch::model
