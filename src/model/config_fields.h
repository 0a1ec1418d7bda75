// The integer fields of a ModelConfig, stated once: config.json key, the CLI flag that sets it
// (if any) and bounds. ModelConfig::validate, ModelConfig::from_json and the CLI's flag checks
// all read this table, so a config that validates also loads, whichever way it was built.
#pragma once

#include <cstdint>
#include <vector>

#include "polysketch/model.h"

namespace polysketch::model {

struct ConfigField {
  const char* key;   // config.json
  const char* flag;  // the command-line flag, or nullptr (set through config.json only)
  int64_t lo, hi;    // bounds: far from int64 overflow in every size product
  int64_t (*get)(const ModelConfig&);
  void (*set)(ModelConfig&, int64_t);
};

const std::vector<ConfigField>& config_fields();

// Every rule of a model config (the table's bounds, then the rules between fields, then the
// attention's), throwing Error on the first broken one. Values are named by their config.json key
// or, with `flag_names`, by their command-line flag.
void check_config(const ModelConfig& config, bool flag_names);

// Whether two configs are the same model (every field config.json holds), without serialising
// them: decoding checks it per state and step.
bool same_config(const ModelConfig& a, const ModelConfig& b);

}  // namespace polysketch::model
