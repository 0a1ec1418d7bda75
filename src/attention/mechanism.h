// Internal: what each mechanism is made of, and the layout of its parameter list.
#pragma once

#include "polysketch/attention.h"

namespace polysketch::attention {

inline bool uses_sketch(Mechanism m) {
  return m == Mechanism::polysketch || m == Mechanism::polysketch_learned ||
         m == Mechanism::polysketch_local || m == Mechanism::polysketch_learned_local;
}
inline bool is_learned(Mechanism m) {
  return m == Mechanism::polysketch_learned || m == Mechanism::polysketch_learned_local;
}
inline bool is_local(Mechanism m) {
  return m == Mechanism::polysketch_local || m == Mechanism::polysketch_learned_local;
}
inline bool uses_random_sketch(Mechanism m) { return uses_sketch(m) && !is_learned(m); }

// Parameter list layout: [ln_q.scale, ln_q.bias, (ln_k.scale, ln_k.bias if local), learned...].
// Non-local mechanisms share one LayerNorm between q and k (as the reference model does).
inline size_t ln_q_index() { return 0; }
inline size_t ln_k_index(Mechanism m) { return is_local(m) ? 2 : 0; }
inline size_t learned_index(Mechanism m) { return is_local(m) ? 4 : 2; }

// Width of phi for a sketch mechanism: r, or head_dim for the random sketch of degree p = 2
// (phi is then the identity).
inline int64_t feature_dim(const AttentionConfig& cfg, int64_t head_dim) {
  return is_learned(cfg.mechanism) || cfg.p != 2 ? cfg.r : head_dim;
}

// Throws Error naming the offending value.
void validate_config(const AttentionConfig& cfg, int64_t head_dim, int64_t value_dim);

}  // namespace polysketch::attention
