// Data parallelism across processes started by `mpirun -np N polysketch train ...` (OpenMPI).
// Every rank holds the model; each computes its share of a step's micro-batches; gradients and
// losses are summed with MPI_Allreduce; every rank applies the same AdamW update. Without
// mpirun (or in a build without MPI) the world is one process and every call is trivial.
#pragma once

#include <cstdint>
#include <vector>

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

  // In-place sums over the ranks (identical on every rank afterwards).
  static void sum(std::vector<float>& values);
  static double sum(double value);
  static bool any(bool value);
  static void barrier();
  // Payload bytes this process has contributed to collectives so far (what an allreduce moves
  // is about twice that for a ring, whatever the rank count).
  static int64_t payload_bytes();
};

}  // namespace polysketch::train
