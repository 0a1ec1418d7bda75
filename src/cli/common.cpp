#include "cli/common.h"

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
