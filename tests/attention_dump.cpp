// For the Python tests: the C++ library's attention output on seeded inputs, written raw.
// Usage: attention_dump MECHANISM CAUSAL(0|1) BATCH HEADS N HEAD_DIM R BLOCK SEED OUT
// OUT receives q, k, v, out as float32, one after the other, each [batch, heads, n, head_dim].
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/rng.h"
#include "polysketch/attention.h"

int main(int argc, char** argv) {
  using namespace polysketch;
  if (argc != 11) {
    std::fprintf(stderr, "usage: %s MECHANISM CAUSAL BATCH HEADS N HEAD_DIM R BLOCK SEED OUT\n", argv[0]);
    return 2;
  }
  AttentionConfig c;
  c.mechanism = parse_mechanism(argv[1]);
  c.causal = std::atoi(argv[2]) != 0;
  const AttentionShape s{std::atoll(argv[3]), std::atoll(argv[4]), std::atoll(argv[5]),
                         std::atoll(argv[6]), std::atoll(argv[6])};
  c.r = std::atoi(argv[7]);
  c.block = std::atoi(argv[8]);
  c.seed = std::strtoull(argv[9], nullptr, 10);
  const size_t size = static_cast<size_t>(s.batch * s.heads * s.n * s.head_dim);
  std::vector<float> all(4 * size);
  auto rng = kernels::Rng::derive(42, 7);
  for (size_t i = 0; i < 3 * size; ++i) all[i] = static_cast<float>(rng.normal());
  Attention att(c, s.head_dim, s.value_dim);
  att.forward(s, all.data(), all.data() + size, all.data() + 2 * size, all.data() + 3 * size, nullptr);
  FILE* f = std::fopen(argv[10], "wb");
  if (!f || std::fwrite(all.data(), sizeof(float), all.size(), f) != all.size()) return 1;
  return std::fclose(f) == 0 ? 0 : 1;
}
