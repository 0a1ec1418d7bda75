// ModelConfig: validation and config.json (every field named; unknown fields are rejected so a
// typo never silently falls back to a default; missing fields and inexact types are errors too).
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>

#include "attention/mechanism.h"
#include "model/config_fields.h"
#include "polysketch/model.h"
#include "util/memory.h"

namespace polysketch {

void ModelConfig::validate() const { model::check_config(*this, false); }

int64_t ModelConfig::parameter_count() const {
  const int64_t d = width, f = glu_hidden();
  const int64_t block = 4 * d + 3 * d * d + d * d + 2 * d * f + f * d +
                        attention::parameter_count(attention, head_dim());
  return vocab * d + vocab + layers * block + 2 * d;
}

void ModelConfig::check_fits_in_memory(int64_t train_tokens, int64_t extra_bytes) const {
  const double gib = 1024.0 * 1024 * 1024;
  const double params = static_cast<double>(parameter_count());
  // Weights; for training also gradients and AdamW's m and v, and the activations kept for
  // backward (about 32 values per token per layer and width unit, plus the logits).
  double bytes = 4 * params;
  if (train_tokens > 0)
    bytes = 4 * (4 * params + static_cast<double>(train_tokens) *
                                  (32.0 * static_cast<double>(layers * width) + 2.0 * static_cast<double>(vocab))) +
            static_cast<double>(extra_bytes);
  const double have = static_cast<double>(util::physical_memory_bytes());
  if (have > 0 && bytes > have)
    throw Error(fmt::format(
        "model config: {} layers of width {} with vocab {} ({:.3g} parameters){} need about {:.1f} "
        "GiB, more than this machine's {:.1f} GiB",
        layers, width, vocab, params,
        train_tokens > 0 ? fmt::format(", trained on {} tokens per micro-batch,", train_tokens) : "",
        bytes / gib, have / gib));
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
  std::set<std::string> known{"dropout", "seed", "mechanism", "causal", "sketch"};
  for (const auto& f : model::config_fields()) known.insert(f.key);
  for (const auto& [key, value] : j.items())
    if (!known.count(key)) throw Error(fmt::format("{}: unknown field '{}'", where, key));
  std::vector<std::string> missing;
  for (const auto& key : known)
    if (!j.contains(key)) missing.push_back(key);
  if (!missing.empty())
    throw Error(fmt::format("{}: missing field(s) {}", where, fmt::join(missing, ", ")));
  ModelConfig c;
  // Exact types: 2.5 is not an integer layer count and 1e300 is not a width.
  for (const auto& f : model::config_fields()) {
    const auto& v = j.at(f.key);
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) ||
        v.get<int64_t>() < f.lo || v.get<int64_t>() > f.hi)
      throw Error(fmt::format("{}: '{}' must be an integer in [{}, {}], got {}", where, f.key, f.lo,
                              f.hi, v.dump()));
    f.set(c, v.get<int64_t>());
  }
  auto string_field = [&](const char* key) {
    if (!j.at(key).is_string())
      throw Error(fmt::format("{}: '{}' must be a string, got {}", where, key, j.at(key).dump()));
    return j.at(key).get<std::string>();
  };
  if (!j.at("seed").is_number_unsigned() && !(j.at("seed").is_number_integer() && j.at("seed").get<int64_t>() >= 0))
    throw Error(fmt::format("{}: 'seed' must be a non-negative integer, got {}", where, j.at("seed").dump()));
  c.seed = j.at("seed").get<uint64_t>();
  if (!j.at("dropout").is_number())
    throw Error(fmt::format("{}: 'dropout' must be a number, got {}", where, j.at("dropout").dump()));
  c.dropout = j.at("dropout").get<double>();
  if (!j.at("causal").is_boolean())
    throw Error(fmt::format("{}: 'causal' must be true or false, got {}", where, j.at("causal").dump()));
  c.attention.causal = j.at("causal").get<bool>();
  try {
    c.attention.mechanism = parse_mechanism(string_field("mechanism"));
    c.attention.sketch = parse_sketch_type(string_field("sketch"));
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
