// ModelConfig: validation and config.json (every field named; unknown fields are rejected so a
// typo never silently falls back to a default).
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <set>

#include "polysketch/model.h"

namespace polysketch {

void ModelConfig::validate() const {
  auto positive = [](const char* what, int64_t v) {
    if (v < 1) throw Error(fmt::format("model config: {} must be >= 1, got {}", what, v));
  };
  positive("vocab", vocab);
  positive("layers", layers);
  positive("width", width);
  positive("heads", heads);
  positive("context", context);
  if (vocab > (int64_t{1} << 31) - 1)
    throw Error(fmt::format("model config: vocab={} is too large", vocab));
  if (width % heads != 0)
    throw Error(fmt::format("model config: width={} is not divisible by heads={}", width, heads));
  if (head_dim() % 2 != 0)
    throw Error(fmt::format("model config: head size width/heads={} must be even (RoPE)", head_dim()));
  if (width % 2 != 0) throw Error(fmt::format("model config: width={} must be even", width));
  if (!(dropout >= 0.0 && dropout < 1.0))
    throw Error(fmt::format("model config: dropout must be in [0, 1), got {}", dropout));
}

std::string ModelConfig::to_json() const {
  const auto& a = attention;
  nlohmann::ordered_json j{
      {"vocab", vocab}, {"layers", layers}, {"width", width}, {"heads", heads},
      {"context", context}, {"dropout", dropout}, {"seed", seed},
      {"mechanism", mechanism_name(a.mechanism)}, {"causal", a.causal}, {"p", a.p}, {"r", a.r},
      {"block", a.block}, {"sketch", a.sketch == SketchType::gaussian ? "gaussian" : "hadamard"},
      {"sketch_levels", a.sketch_levels}, {"hidden_mult", a.hidden_mult}};
  return j.dump(2) + "\n";
}

ModelConfig ModelConfig::from_json(const std::string& text, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({})", where, e.what()));
  }
  if (!j.is_object()) throw Error(fmt::format("{}: expected a JSON object", where));
  static const std::set<std::string> known{"vocab", "layers", "width", "heads", "context",
                                           "dropout", "seed", "mechanism", "causal", "p", "r",
                                           "block", "sketch", "sketch_levels", "hidden_mult"};
  for (const auto& [key, value] : j.items())
    if (!known.count(key)) throw Error(fmt::format("{}: unknown field '{}'", where, key));
  ModelConfig c;
  try {
    auto get = [&](const char* key, auto& field) {
      if (j.contains(key)) j.at(key).get_to(field);
    };
    get("vocab", c.vocab);
    get("layers", c.layers);
    get("width", c.width);
    get("heads", c.heads);
    get("context", c.context);
    get("dropout", c.dropout);
    get("seed", c.seed);
    get("causal", c.attention.causal);
    get("p", c.attention.p);
    get("r", c.attention.r);
    get("block", c.attention.block);
    get("sketch_levels", c.attention.sketch_levels);
    get("hidden_mult", c.attention.hidden_mult);
    if (j.contains("mechanism")) c.attention.mechanism = parse_mechanism(j.at("mechanism").get<std::string>());
    if (j.contains("sketch")) c.attention.sketch = parse_sketch_type(j.at("sketch").get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: wrong type for a field ({})", where, e.what()));
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
  return c;
}

}  // namespace polysketch
