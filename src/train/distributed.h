// Data and context parallelism across processes started by `mpirun -np N polysketch train ...`
// (OpenMPI). Every rank holds the model. Ranks form N/K data groups of K consecutive ranks
// (rank = group * K + chunk): each group computes its share of a step's micro-batches, and its K
// ranks each hold one contiguous chunk of those sequences (context parallelism, K > 1), passing
// attention block states along the group. Gradients and losses are summed over all ranks with
// MPI_Allreduce; every rank applies the same AdamW update. Without mpirun (or in a build without
// MPI) the world is one process and every call is trivial.
#pragma once

#include <cstdint>
#include <vector>

#include "polysketch/attention.h"

namespace polysketch::train {

class World {
 public:
  // Initialises MPI when this process was started by mpirun (MPI_Init_thread, funneled);
  // otherwise a world of one. Call once from main before any other use; finalize at exit.
  static void init(int* argc, char*** argv);
  static void finalize();
  // Ends every rank of the job at once (after an error on this one): MPI_Abort, or exit().
  [[noreturn]] static void abort(int status);

  static int rank();
  static int size();
  static bool root() { return rank() == 0; }

  // Splits the world into data groups of k consecutive ranks (k must divide size(); Error
  // otherwise). Collective: every rank calls it once, with the same k, before training.
  static void split_context(int k);
  static int context_size();  // k (1 until split_context)
  static int context_rank();  // this rank's chunk: rank() % k
  static int data_groups() { return size() / context_size(); }
  static int data_rank() { return rank() / context_size(); }
  // The exclusive prefix sums over this rank's group (MPI_Exscan), for AttentionT.
  static ChunkExchangeT<float>& chunk_exchange();
  // Payload bytes this process has passed to chunk_exchange so far.
  static int64_t chunk_bytes();

  // In-place sums over the ranks (identical on every rank afterwards).
  static void sum(std::vector<float>& values);
  // The same without waiting (MPI_Iallreduce): values must stay in place until finish_sums(),
  // which waits for every sum started. Lets communication overlap computation.
  static void start_sum(float* values, int64_t count);
  static void finish_sums();
  static double sum(double value);
  static bool any(bool value);
  static void barrier();
  // Payload bytes this process has contributed to collectives so far (what an allreduce moves
  // is about twice that for a ring, whatever the rank count).
  static int64_t payload_bytes();
};

// The step's gradients summed over the ranks while the last backward pass runs: each group of
// tensors the model reports complete is copied into its place in one flat buffer and its
// allreduce started (World::start_sum); finish() waits and copies the sums back.
class OverlappedSum {
 public:
  explicit OverlappedSum(const std::vector<std::vector<float>>& grads);
  void ready(const std::vector<std::vector<float>>& grads, size_t begin, size_t end);
  void finish(std::vector<std::vector<float>>& grads);

 private:
  std::vector<size_t> offset_;
  std::vector<float> flat_;
};

}  // namespace polysketch::train
