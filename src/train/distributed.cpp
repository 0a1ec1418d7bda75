#include "train/distributed.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#ifdef POLYSKETCH_HAVE_MPI
#include <mpi.h>
#endif

namespace polysketch::train {

namespace {
bool g_mpi = false;
int g_rank = 0, g_size = 1, g_context = 1;
int64_t g_sent = 0, g_chunk_sent = 0;
#ifdef POLYSKETCH_HAVE_MPI
MPI_Comm g_forward = MPI_COMM_NULL, g_backward = MPI_COMM_NULL;  // the group, in both orders
std::vector<MPI_Request> g_pending;  // sums started and not finished
#endif

// MPI counts are int: long buffers go in pieces below INT_MAX elements.
constexpr int64_t kPiece = int64_t{1} << 30;

class MpiChunkExchange : public ChunkExchangeT<float> {
 public:
  void exclusive_sum([[maybe_unused]] float* values, int64_t count,
                     [[maybe_unused]] bool reverse) override {
    g_chunk_sent += count * 4;
#ifdef POLYSKETCH_HAVE_MPI
    if (g_context > 1) {
      // The reverse sum is the forward one over the group numbered backwards.
      const MPI_Comm comm = reverse ? g_backward : g_forward;
      for (int64_t at = 0; at < count; at += kPiece) {
        const int n = static_cast<int>(std::min(kPiece, count - at));
        MPI_Exscan(MPI_IN_PLACE, values + at, n, MPI_FLOAT, MPI_SUM, comm);
      }
      int first = 0;
      MPI_Comm_rank(comm, &first);
      if (first == 0) std::fill(values, values + count, 0.f);  // Exscan leaves it undefined
      return;
    }
#endif
    std::fill(values, values + count, 0.f);  // a group of one: nothing before or after
  }
};
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

void World::split_context(int k) {
  if (k < 1 || g_size % k != 0)
    throw Error(fmt::format("--context-parallel {} must divide the number of ranks, {} (start "
                            "N ranks with `mpirun -np N`, N a multiple of {})", k, g_size, k));
#ifdef POLYSKETCH_HAVE_MPI
  if (g_mpi && g_context == 1 && k > 1) {
    MPI_Comm_split(MPI_COMM_WORLD, g_rank / k, g_rank % k, &g_forward);
    MPI_Comm_split(MPI_COMM_WORLD, g_rank / k, k - 1 - g_rank % k, &g_backward);
  }
#endif
  g_context = k;
}
int World::context_size() { return g_context; }
int World::context_rank() { return g_rank % g_context; }

ChunkExchangeT<float>& World::chunk_exchange() {
  static MpiChunkExchange exchange;
  return exchange;
}
int64_t World::chunk_bytes() { return g_chunk_sent; }

void World::sum([[maybe_unused]] std::vector<float>& values) {
#ifdef POLYSKETCH_HAVE_MPI
  if (g_size == 1) return;
  for (size_t at = 0; at < values.size(); at += kPiece) {
    const int n = static_cast<int>(std::min<size_t>(kPiece, values.size() - at));
    MPI_Allreduce(MPI_IN_PLACE, values.data() + at, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    g_sent += static_cast<int64_t>(n) * 4;
  }
#endif
}

void World::start_sum([[maybe_unused]] float* values, [[maybe_unused]] int64_t count) {
#ifdef POLYSKETCH_HAVE_MPI
  if (g_size == 1) return;
  for (int64_t at = 0; at < count; at += kPiece) {
    const int n = static_cast<int>(std::min(kPiece, count - at));
    g_pending.emplace_back();
    MPI_Iallreduce(MPI_IN_PLACE, values + at, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                   &g_pending.back());
    g_sent += static_cast<int64_t>(n) * 4;
  }
  // MPI progresses started operations inside MPI calls: test the earlier ones now.
  int done = 0;
  MPI_Testall(static_cast<int>(g_pending.size()), g_pending.data(), &done, MPI_STATUSES_IGNORE);
#endif
}

void World::finish_sums() {
#ifdef POLYSKETCH_HAVE_MPI
  MPI_Waitall(static_cast<int>(g_pending.size()), g_pending.data(), MPI_STATUSES_IGNORE);
  g_pending.clear();
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

OverlappedSum::OverlappedSum(const std::vector<std::vector<float>>& grads) : offset_(grads.size() + 1, 0) {
  for (size_t i = 0; i < grads.size(); ++i) offset_[i + 1] = offset_[i] + grads[i].size();
  flat_.resize(offset_.back());
}

void OverlappedSum::ready(const std::vector<std::vector<float>>& grads, size_t begin, size_t end) {
  for (size_t i = begin; i < end; ++i) std::copy(grads[i].begin(), grads[i].end(), flat_.begin() + offset_[i]);
  World::start_sum(flat_.data() + offset_[begin], static_cast<int64_t>(offset_[end] - offset_[begin]));
}

void OverlappedSum::finish(std::vector<std::vector<float>>& grads) {
  World::finish_sums();
  for (size_t i = 0; i < grads.size(); ++i)
    std::copy(flat_.begin() + offset_[i], flat_.begin() + offset_[i + 1], grads[i].begin());
}

}  // namespace polysketch::train
