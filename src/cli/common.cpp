#include "cli/common.h"

#include <fmt/format.h>
#include <omp.h>

#include "kernels/gemm.h"
#include "util/check.h"

namespace polysketch::cli {

int set_threads(int threads) {
  util::check_range("--threads", int64_t{threads}, 0, 4096);
  const int t = threads > 0 ? threads : omp_get_max_threads();
  omp_set_num_threads(t);
  kernels::set_blas_threads(t);
  return t;
}

}  // namespace polysketch::cli

namespace polysketch::cli {

Mechanism mechanism_flag(const std::string& name) {
  try {
    return parse_mechanism(name);
  } catch (const Error& e) {
    throw Error(fmt::format("--mechanism: {}", e.what()));
  }
}

void check_model_flags(const ModelConfig& m) {
  util::check_range("--layers", m.layers, 1, 4096);
  util::check_range("--width", m.width, 2, 65536);
  util::check_range("--heads", m.heads, 1, m.width);
  util::check_range("--context", m.context, 1, int64_t{1} << 30);
  util::check_range("--block", int64_t{m.attention.block}, 1, 1 << 20);
  util::check_range("--r", int64_t{m.attention.r}, 1, 4096);
  util::check_range("--p", int64_t{m.attention.p}, 2, 64);
  if (!(m.dropout >= 0 && m.dropout < 1))
    throw Error(fmt::format("--dropout must be in [0, 1), got {}", m.dropout));
  if (m.width % m.heads != 0 || (m.width / m.heads) % 2 != 0)
    throw Error(fmt::format("--width {} must be --heads {} times an even head size", m.width, m.heads));
  try {
    m.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("--mechanism {} with --p {} --r {}: {}", mechanism_name(m.attention.mechanism),
                            m.attention.p, m.attention.r, e.what()));
  }
}

}  // namespace polysketch::cli
