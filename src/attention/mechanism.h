// Internal: what each mechanism is made of, and the layout of its parameter list.
#pragma once

#include <array>

#include "polysketch/attention.h"

namespace polysketch::attention {

// Every mechanism's properties, in one table (in the enum's order): adding a mechanism is a row
// here plus its own code, and every if on a property reads the row.
struct MechanismTraits {
  Mechanism mechanism;
  const char* name;  // what users type
  bool sketch;       // linear: phi features and block prefix states (else exact and quadratic)
  bool learned;      // phi is a learned network (else a random sketch)
  bool local;        // exact <LNq(q), LNk(k)>^p inside the diagonal blocks, own k LayerNorm
};
inline constexpr std::array<MechanismTraits, 6> kMechanisms{{
    {Mechanism::softmax, "softmax", false, false, false},
    {Mechanism::polynomial, "polynomial", false, false, false},
    {Mechanism::polysketch, "polysketch", true, false, false},
    {Mechanism::polysketch_learned, "polysketch-learned", true, true, false},
    {Mechanism::polysketch_local, "polysketch-local", true, false, true},
    {Mechanism::polysketch_learned_local, "polysketch-learned-local", true, true, true},
}};
constexpr bool table_in_enum_order() {
  for (size_t i = 0; i < kMechanisms.size(); ++i)
    if (static_cast<size_t>(kMechanisms[i].mechanism) != i) return false;
  return true;
}
static_assert(table_in_enum_order(), "kMechanisms must list the mechanisms in the enum's order");

// The row of m; throws Error for a value outside the enum (a corrupt cast).
inline const MechanismTraits& traits(Mechanism m) {
  const auto i = static_cast<size_t>(m);
  if (i >= kMechanisms.size()) throw Error("invalid attention mechanism value");
  return kMechanisms[i];
}
inline bool uses_sketch(Mechanism m) { return traits(m).sketch; }
inline bool is_learned(Mechanism m) { return traits(m).learned; }
inline bool is_local(Mechanism m) { return traits(m).local; }
inline bool uses_random_sketch(Mechanism m) { return uses_sketch(m) && !is_learned(m); }

// Parameter list layout: [ln_q.scale, ln_q.bias, (ln_k.scale, ln_k.bias if local), learned...].
// Non-local mechanisms share one LayerNorm between q and k (as the reference model does).
// A LayerNorm's entries in the list.
struct LayerNormSlots {
  size_t scale, bias;
};
inline LayerNormSlots ln_q_slots() { return {0, 1}; }
inline LayerNormSlots ln_k_slots(Mechanism m) { return is_local(m) ? LayerNormSlots{2, 3} : ln_q_slots(); }
inline size_t learned_index(Mechanism m) { return is_local(m) ? 4 : 2; }

// Width of phi for a sketch mechanism: r, or head_dim for the random sketch of degree p = 2
// (phi is then the identity).
inline int64_t feature_dim(const AttentionConfig& cfg, int64_t head_dim) {
  return is_learned(cfg.mechanism) || cfg.p != 2 ? cfg.r : head_dim;
}

// Values in the parameters of one attention layer (AttentionT::params()), without building them.
int64_t parameter_count(const AttentionConfig& cfg, int64_t head_dim);

// Throws Error naming the offending value.
void validate_config(const AttentionConfig& cfg, int64_t head_dim, int64_t value_dim);

}  // namespace polysketch::attention
