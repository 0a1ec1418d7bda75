#include "train/distributed.h"

#include <algorithm>
#include <cstdlib>

#ifdef POLYSKETCH_HAVE_MPI
#include <mpi.h>
#endif

namespace polysketch::train {

namespace {
bool g_mpi = false;
int g_rank = 0, g_size = 1;
int64_t g_sent = 0;
}  // namespace

void World::init([[maybe_unused]] int* argc, [[maybe_unused]] char*** argv) {
#ifdef POLYSKETCH_HAVE_MPI
  // Only under a launcher: a plain `polysketch ...` must not start MPI's runtime.
  if (!std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("PMIX_RANK")) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_mpi = true;
#endif
}

void World::finalize() {
#ifdef POLYSKETCH_HAVE_MPI
  if (g_mpi) MPI_Finalize();
  g_mpi = false;
#endif
}

void World::abort(int status) {
#ifdef POLYSKETCH_HAVE_MPI
  if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, status);
#endif
  std::exit(status);
}

int World::rank() { return g_rank; }
int World::size() { return g_size; }

void World::sum([[maybe_unused]] std::vector<float>& values) {
#ifdef POLYSKETCH_HAVE_MPI
  if (g_size == 1) return;
  // Chunks below INT_MAX elements (MPI counts are int).
  constexpr size_t kChunk = size_t{1} << 30;
  for (size_t at = 0; at < values.size(); at += kChunk) {
    const int n = static_cast<int>(std::min(kChunk, values.size() - at));
    MPI_Allreduce(MPI_IN_PLACE, values.data() + at, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    g_sent += static_cast<int64_t>(n) * 4;
  }
#endif
}

double World::sum(double value) {
#ifdef POLYSKETCH_HAVE_MPI
  if (g_size > 1) {
    MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    g_sent += 8;
  }
#endif
  return value;
}

bool World::any(bool value) {
#ifdef POLYSKETCH_HAVE_MPI
  if (g_size > 1) {
    int v = value ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    g_sent += 4;
    return v != 0;
  }
#endif
  return value;
}

void World::barrier() {
#ifdef POLYSKETCH_HAVE_MPI
  if (g_size > 1) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

int64_t World::payload_bytes() { return g_sent; }

}  // namespace polysketch::train
