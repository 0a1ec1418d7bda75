#include <fmt/format.h>

#include "attention/feature_maps.h"
#include "attention/mechanism.h"

namespace polysketch {

namespace {
bool is_power_of_two(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }
}  // namespace

std::string chunk_layout_problem(const AttentionConfig& cfg, int64_t chunk_len) {
  if (!attention::uses_sketch(cfg.mechanism))
    return fmt::format("needs a sketch mechanism (polysketch, polysketch-learned, polysketch-local, "
                       "polysketch-learned-local): {} attends to every earlier key, which another "
                       "chunk holds", mechanism_name(cfg.mechanism));
  if (!cfg.causal) return "needs causal attention";
  if (chunk_len % cfg.block != 0)
    return fmt::format("a chunk of {} tokens is not a whole number of blocks of {}", chunk_len, cfg.block);
  return "";
}

Mechanism parse_mechanism(std::string_view name) {
  std::string valid;
  for (const auto& t : attention::kMechanisms) {
    if (name == t.name) return t.mechanism;
    valid += valid.empty() ? t.name : fmt::format(", {}", t.name);
  }
  throw Error(fmt::format("unknown attention mechanism '{}' (valid: {})", name, valid));
}

std::string mechanism_name(Mechanism m) {
  const auto i = static_cast<size_t>(m);
  return i < attention::kMechanisms.size() ? attention::kMechanisms[i].name : "unknown";
}

const std::vector<Mechanism>& all_mechanisms() {
  static const std::vector<Mechanism> all = [] {
    std::vector<Mechanism> v;
    for (const auto& t : attention::kMechanisms) v.push_back(t.mechanism);
    return v;
  }();
  return all;
}

SketchType parse_sketch_type(std::string_view name) {
  if (name == "gaussian") return SketchType::gaussian;
  if (name == "hadamard") return SketchType::hadamard;
  throw Error(fmt::format("unknown sketch type '{}' (valid: gaussian, hadamard)", name));
}

namespace attention {

int64_t parameter_count(const AttentionConfig& cfg, int64_t head_dim) {
  if (cfg.mechanism == Mechanism::softmax) return 0;
  const int64_t layernorms = (is_local(cfg.mechanism) ? 4 : 2) * head_dim;
  return layernorms + (is_learned(cfg.mechanism) ? learned_sketch_size(cfg, head_dim) : 0);
}

void validate_config(const AttentionConfig& cfg, int64_t head_dim, int64_t value_dim) {
  const std::string mech = mechanism_name(cfg.mechanism);
  if (mech == "unknown") throw Error("invalid attention mechanism value");
  if (head_dim < 1) throw Error(fmt::format("head_dim must be >= 1, got {}", head_dim));
  if (value_dim < 1) throw Error(fmt::format("value_dim must be >= 1, got {}", value_dim));
  if (cfg.block < 1) throw Error(fmt::format("block size must be >= 1, got {}", cfg.block));
  if (cfg.threads < 0) throw Error(fmt::format("threads must be >= 0, got {}", cfg.threads));
  if (cfg.mechanism == Mechanism::softmax) return;
  if (cfg.p < 2 || cfg.p % 2 != 0)
    throw Error(fmt::format("{}: p must be an even degree >= 2, got p={}", mech, cfg.p));
  if (cfg.p > 64) throw Error(fmt::format("{}: p={} is too large (at most 64)", mech, cfg.p));
  if (!uses_sketch(cfg.mechanism)) return;
  if (!is_learned(cfg.mechanism) && !is_power_of_two(cfg.p / 2))
    throw Error(fmt::format("{}: p/2 must be a power of two for the random sketch, got p={}",
                            mech, cfg.p));
  if (is_learned(cfg.mechanism) && cfg.p != 4)
    throw Error(fmt::format("{}: the learned sketch approximates degree p=4 only, got p={}", mech,
                            cfg.p));
  if (cfg.r < 1) throw Error(fmt::format("{}: sketch size r must be >= 1, got r={}", mech, cfg.r));
  if (cfg.r > 4096) throw Error(fmt::format("{}: sketch size r={} is too large", mech, cfg.r));
  if (is_learned(cfg.mechanism)) {
    if (cfg.sketch_levels < 1)
      throw Error(fmt::format("{}: sketch_levels must be >= 1, got {}", mech, cfg.sketch_levels));
    if (cfg.hidden_mult < 1)
      throw Error(fmt::format("{}: hidden_mult must be >= 1, got {}", mech, cfg.hidden_mult));
    return;
  }
  if (cfg.sketch == SketchType::hadamard && cfg.p > 2) {
    if (!is_power_of_two(head_dim))
      throw Error(fmt::format("{}: the Hadamard sketch needs head_dim a power of two, got {}",
                              mech, head_dim));
    if (cfg.p > 4 && !is_power_of_two(cfg.r))
      throw Error(fmt::format("{}: the Hadamard sketch with p={} needs r a power of two, got r={}",
                              mech, cfg.p, cfg.r));
  }
}

}  // namespace attention
}  // namespace polysketch
