#include "model/config_fields.h"

#include <fmt/format.h>

#include "attention/mechanism.h"

namespace polysketch::model {

#define POLYSKETCH_FIELD(key, flag, lo, hi, member)                                            \
  ConfigField {                                                                                \
    key, flag, lo, hi, [](const ModelConfig& c) { return static_cast<int64_t>(c.member); },   \
        [](ModelConfig& c, int64_t v) { c.member = static_cast<decltype(c.member)>(v); }       \
  }

const std::vector<ConfigField>& config_fields() {
  static const std::vector<ConfigField> fields{
      POLYSKETCH_FIELD("vocab", "--vocab", 1, (int64_t{1} << 31) - 1, vocab),
      POLYSKETCH_FIELD("layers", "--layers", 1, 4096, layers),
      POLYSKETCH_FIELD("width", "--width", 2, 65536, width),
      POLYSKETCH_FIELD("heads", "--heads", 1, 32768, heads),  // width / heads: even, width <= 65536
      POLYSKETCH_FIELD("context", "--context", 1, int64_t{1} << 30, context),
      POLYSKETCH_FIELD("p", "--p", 2, 64, attention.p),
      POLYSKETCH_FIELD("r", "--r", 1, 4096, attention.r),
      POLYSKETCH_FIELD("block", "--block", 1, 1 << 20, attention.block),
      POLYSKETCH_FIELD("sketch_levels", nullptr, 1, 16, attention.sketch_levels),
      POLYSKETCH_FIELD("hidden_mult", nullptr, 1, 256, attention.hidden_mult),
  };
  return fields;
}

#undef POLYSKETCH_FIELD

bool same_config(const ModelConfig& a, const ModelConfig& b) {
  for (const auto& f : config_fields())
    if (f.get(a) != f.get(b)) return false;
  // The fields config.json holds beyond the table's (ModelConfig::to_json).
  return a.dropout == b.dropout && a.seed == b.seed && a.attention.mechanism == b.attention.mechanism &&
         a.attention.causal == b.attention.causal && a.attention.sketch == b.attention.sketch;
}

void check_config(const ModelConfig& c, bool flag_names) {
  const auto& fields = config_fields();
  auto name = [&](const char* key) {
    for (const auto& f : fields)
      if (std::string_view(f.key) == key) return std::string(flag_names && f.flag ? f.flag : f.key);
    return std::string(flag_names ? "--" : "") + key;  // dropout
  };
  const std::string prefix = flag_names ? "" : "model config: ";
  for (const auto& f : fields)
    if (const int64_t v = f.get(c); v < f.lo || v > f.hi)
      throw Error(fmt::format("{}{} must be in [{}, {}], got {}", prefix, name(f.key), f.lo, f.hi, v));
  if (!(c.dropout >= 0.0 && c.dropout < 1.0))
    throw Error(fmt::format("{}{} must be in [0, 1), got {}", prefix, name("dropout"), c.dropout));
  if (c.width % c.heads != 0)
    throw Error(fmt::format("{}{} {} is not divisible by {} {}", prefix, name("width"), c.width,
                            name("heads"), c.heads));
  if (c.head_dim() % 2 != 0)
    throw Error(fmt::format("{}head size {}/{} = {} must be even (RoPE)", prefix, name("width"),
                            name("heads"), c.head_dim()));
  try {
    attention::validate_config(c.attention, c.head_dim(), c.head_dim());
  } catch (const Error& e) {
    if (!flag_names) throw Error(prefix + e.what());
    throw Error(fmt::format("--mechanism {} with --p {} --r {}: {}", mechanism_name(c.attention.mechanism),
                            c.attention.p, c.attention.r, e.what()));
  }
}

}  // namespace polysketch::model
