// The one table of attention variants the table-driven tests run (as ggml's test-backend-ops
// drives correctness, gradient and precision checks from one list): every mechanism at its
// default degree and sketch, then the degrees and sketch types that take other code paths. A new
// mechanism or variant is one line here.
#pragma once

#include <fmt/format.h>

#include <string>
#include <vector>

#include "polysketch/attention.h"

namespace polysketch::test {

struct MechanismCase {
  Mechanism mechanism;
  int p = 4;
  SketchType sketch = SketchType::gaussian;

  // Not the mechanism's default degree and sketch: run on fewer shapes.
  bool variant() const { return p != 4 || sketch != SketchType::gaussian; }
  void apply(AttentionConfig& cfg) const {
    cfg.mechanism = mechanism;
    cfg.p = p;
    cfg.sketch = sketch;
  }
  std::string name() const {
    std::string s = fmt::format("{}_p{}_{}", mechanism_name(mechanism), p,
                                sketch == SketchType::gaussian ? "gauss" : "hadamard");
    for (auto& c : s)
      if (c == '-') c = '_';
    return s;
  }
};

inline std::vector<MechanismCase> mechanism_cases() {
  std::vector<MechanismCase> cases;
  for (Mechanism m : all_mechanisms()) cases.push_back({m});
  for (Mechanism m : {Mechanism::polynomial, Mechanism::polysketch, Mechanism::polysketch_local})
    for (int p : {2, 8}) cases.push_back({m, p});
  for (Mechanism m : {Mechanism::polysketch, Mechanism::polysketch_local})
    for (int p : {4, 8}) cases.push_back({m, p, SketchType::hadamard});
  cases.push_back({Mechanism::polynomial, 6});
  return cases;
}

}  // namespace polysketch::test
