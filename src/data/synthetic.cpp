#include "data/synthetic.h"

#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <numeric>

#include "kernels/rng.h"
#include "polysketch/error.h"
#include "util/check.h"

namespace polysketch::data {

namespace {
constexpr std::array<std::pair<Task, const char*>, 3> kNames{{
    {Task::selective_copying, "selective-copying"},
    {Task::induction_heads, "induction-heads"},
    {Task::mqar, "mqar"},
}};

// The first k of a random permutation of [0, n), sorted (partial Fisher-Yates over `scratch`).
void choose_sorted(kernels::Rng& rng, int64_t n, int64_t k, std::vector<int32_t>& scratch,
                   std::vector<int32_t>& out) {
  scratch.resize(static_cast<size_t>(n));
  std::iota(scratch.begin(), scratch.end(), 0);
  for (int64_t i = 0; i < k; ++i)
    std::swap(scratch[i], scratch[i + static_cast<int64_t>(rng.below(n - i))]);
  out.assign(scratch.begin(), scratch.begin() + k);
  std::sort(out.begin(), out.end());
}

int32_t draw(kernels::Rng& rng, int64_t lo, int64_t hi) {  // uniform in [lo, hi)
  return static_cast<int32_t>(lo + static_cast<int64_t>(rng.below(hi - lo)));
}
}  // namespace

Task parse_task(std::string_view name) {
  for (const auto& [t, n] : kNames)
    if (name == n) return t;
  throw Error(fmt::format("unknown task '{}' (expected selective-copying, induction-heads or mqar)", name));
}

std::string task_name(Task task) {
  for (const auto& [t, n] : kNames)
    if (t == task) return n;
  return "?";
}

TaskOptions resolve_task_options(TaskOptions o) {
  util::check_range("--length", o.length, 4, int64_t{1} << 24);
  switch (o.task) {
    case Task::selective_copying:
      // 0 blank, 1 separator, data tokens [2, vocab)
      if (o.vocab == 0) o.vocab = 18;
      if (o.items == 0) o.items = 16;
      util::check_range("--vocab-size", o.vocab, 3, int64_t{1} << 20);
      util::check_range("--items", o.items, 1, o.length / 2);
      break;
    case Task::induction_heads:
      // 0 trigger, other tokens [1, vocab)
      if (o.vocab == 0) o.vocab = 16;
      util::check_range("--vocab-size", o.vocab, 3, int64_t{1} << 20);
      if (o.items != 0) throw Error("--items: induction-heads has no items (one trigger per example)");
      break;
    case Task::mqar: {
      // 0 blank, keys [1, 1 + half), values [1 + half, vocab): distinct keys, values may repeat
      if (o.vocab == 0) o.vocab = 256;
      if (o.items == 0) o.items = 8;
      util::check_range("--vocab-size", o.vocab, 5, int64_t{1} << 20);
      const int64_t keys = (o.vocab - 1) / 2;
      if (o.items < 1 || o.items > keys)
        throw Error(fmt::format("--items: mqar with --vocab-size {} has {} distinct keys, so 1 to {} "
                                "pairs; got {}", o.vocab, keys, keys, o.items));
      if (4 * o.items - 1 > o.length)
        throw Error(fmt::format("--length {} is too short for {} mqar pairs (the pairs and one query "
                                "per key need at least 4 * items - 1 = {} tokens)",
                                o.length, o.items, 4 * o.items - 1));
      break;
    }
  }
  return o;
}

TaskExamples generate_task(const TaskOptions& opts, int64_t count, uint64_t seed) {
  const TaskOptions o = resolve_task_options(opts);
  util::check_range("examples", count, 1, int64_t{1} << 32);
  const int64_t T = o.length + 1, L = o.length, V = o.vocab, K = o.items;
  TaskExamples ex;
  ex.example_tokens = T;
  ex.tokens.assign(static_cast<size_t>(count * T), 0);
  ex.scored.assign(ex.tokens.size(), 0);
  std::vector<int32_t> scratch, chosen, order;
  for (int64_t e = 0; e < count; ++e) {
    auto rng = kernels::Rng::derive(seed, static_cast<uint64_t>(o.task) + 1, static_cast<uint64_t>(e));
    int32_t* t = ex.tokens.data() + e * T;
    uint8_t* s = ex.scored.data() + e * T;
    switch (o.task) {
      case Task::selective_copying: {
        const int64_t body = L - K;  // blanks and data; then the separator and the K answers
        choose_sorted(rng, body, K, scratch, chosen);
        t[body] = 1;
        for (int64_t i = 0; i < K; ++i) {
          const int32_t tok = draw(rng, 2, V);
          t[chosen[i]] = tok;
          t[body + 1 + i] = tok;
          s[body + 1 + i] = 1;
        }
        break;
      }
      case Task::induction_heads: {
        for (int64_t i = 0; i < L - 1; ++i) t[i] = draw(rng, 1, V);
        const int64_t at = static_cast<int64_t>(rng.below(L - 2));  // trigger; its target at+1 < L-1
        const int32_t target = draw(rng, 1, V);
        t[at] = 0;
        t[at + 1] = target;
        t[L - 1] = 0;
        t[L] = target;
        s[L] = 1;
        break;
      }
      case Task::mqar: {
        const int64_t half = (V - 1) / 2;
        choose_sorted(rng, half, K, scratch, chosen);  // distinct keys
        std::vector<int32_t> keys(chosen.begin(), chosen.end()), values(static_cast<size_t>(K));
        for (int64_t i = 0; i < K; ++i) {
          keys[i] = static_cast<int32_t>(1 + keys[i]);
          values[i] = draw(rng, 1 + half, V);
        }
        // shuffle the pairs (choose_sorted sorted the keys)
        for (int64_t i = K - 1; i > 0; --i) {
          const auto j = static_cast<int64_t>(rng.below(i + 1));
          std::swap(keys[i], keys[j]);
          std::swap(values[i], values[j]);
        }
        for (int64_t i = 0; i < K; ++i) {
          t[2 * i] = keys[i];
          t[2 * i + 1] = values[i];
        }
        // one query per key, in random order, in random 2-token slots after the pairs
        choose_sorted(rng, (T - 2 * K) / 2, K, scratch, chosen);
        order.resize(static_cast<size_t>(K));
        std::iota(order.begin(), order.end(), 0);
        for (int64_t i = K - 1; i > 0; --i) std::swap(order[i], order[static_cast<int64_t>(rng.below(i + 1))]);
        for (int64_t i = 0; i < K; ++i) {
          const int64_t at = 2 * K + 2 * chosen[i];
          t[at] = keys[order[i]];
          t[at + 1] = values[order[i]];
          s[at + 1] = 1;
        }
        break;
      }
    }
  }
  return ex;
}

}  // namespace polysketch::data
