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

// Document layouts for document masking (AttentionShape::segments), as where documents start.
enum class Docs { none, one, block_starts, inside_blocks, adjacent, short_docs };

inline std::string docs_name(Docs d) {
  switch (d) {
    case Docs::none: return "";
    case Docs::one: return "_docs_one";
    case Docs::block_starts: return "_docs_at_block_starts";
    case Docs::inside_blocks: return "_docs_inside_blocks";
    case Docs::adjacent: return "_docs_adjacent";
    case Docs::short_docs: return "_docs_short";
  }
  return "";
}

// Document ids [batch x n] (each sequence a little differently), or empty for Docs::none.
inline std::vector<int32_t> document_ids(Docs docs, int64_t batch, int64_t n, int64_t block) {
  if (docs == Docs::none) return {};
  std::vector<int32_t> ids(static_cast<size_t>(batch * n));
  for (int64_t s = 0; s < batch; ++s) {
    int32_t id = 0;
    for (int64_t t = 0; t < n; ++t) {
      bool start = false;
      switch (docs) {
        case Docs::block_starts: start = t % block == 0; break;
        case Docs::inside_blocks: start = t == 3 + s || t == block + 2 || t == 2 * block + block / 2 - s; break;
        case Docs::adjacent: start = t == 2 + s || t == 3 + s || t == 4 + s || t == block; break;
        case Docs::short_docs: start = (t + s) % 3 == 0; break;
        default: break;
      }
      if (t > 0 && start) ++id;
      ids[static_cast<size_t>(s * n + t)] = id;
    }
  }
  return ids;
}

inline const std::vector<Docs>& document_layouts() {
  static const std::vector<Docs> all{Docs::one, Docs::block_starts, Docs::inside_blocks, Docs::adjacent,
                                     Docs::short_docs};
  return all;
}

}  // namespace polysketch::test
