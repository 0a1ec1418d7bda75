// Row-major GEMM: C = alpha * op(A) * op(B) + beta * C, op(A) is M x K, op(B) is K x N, run as
// the compute context says (polysketch/compute.h).
// float: products of at most 16 untransposed rows go to a streaming kernel whose every entry is
// the same sum whatever the row count (a sequence decodes the same alone or in a batch), other
// one-row products to gemv, the rest to the context's backend (oneDNN or OpenBLAS) at its
// precision. double (gradient checks): OpenBLAS
// dgemm, whatever the context.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "polysketch/compute.h"

namespace polysketch::kernels {

template <typename T>
void gemm(const ComputeContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          T alpha, const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// B [k x n] rearranged for products of few rows (decoding's dense layers): 64-column panels, each
// [k x 64] with its rows contiguous, the columns past the last whole panel [k x (n % 64)] after
// them. The few-row kernel then streams B contiguously instead of in 64-column pieces a whole row
// apart; each entry's arithmetic is the same, so results are bit for bit those from B itself.
struct PanelMatrix {
  int64_t k = 0, n = 0;
  std::vector<float> data;
};
PanelMatrix pack_panels(int64_t k, int64_t n, const float* b, int64_t ldb);
// C [m x n] = alpha A [m x k] B + beta C with B given both packed and as itself ([k x n], row
// stride n): the panels where gemm would take its few-row kernel, `unpacked` otherwise.
void gemm_panels(const ComputeContext& ctx, int64_t m, float alpha, const float* a, int64_t lda,
                 const PanelMatrix& b, const float* unpacked, float beta, float* c, int64_t ldc);

// Threads the BLAS libraries may use for a call made outside our own parallel regions.
void set_blas_threads(int threads);

// The faster backend on this machine for `automatic` (POLYSKETCH_GEMM, else measured on first
// call: see make_compute_context).
GemmBackend measured_backend();
// POLYSKETCH_BF16_KERNEL (on | off, default on), read once; and whether the CPU has the kernel.
bool bf16_kernel_wanted();

// Whether bf16 products pay on this machine, measured once (the first call; outside parallel
// regions, after the thread count is set): the products as training runs them, a dense layer's
// (1024 x 768 x 768) and per-thread block products (256 x 64 x 256 on every thread at once), in
// bf16 against f32 on the measured backend. On CPUs without fast bf16 (Intel before AMX:
// vdpbf16ps does not outrun two FMA ports) bf16 is slower. POLYSKETCH_BF16=auto (default) |
// always (use bf16 products even where slower: for tests and comparisons).
struct Bf16Choice {
  bool use = true;
  double bf16_gflops = 0, f32_gflops = 0;  // over both products (0 when not measured: always)
};
const Bf16Choice& bf16_choice();
// POLYSKETCH_BF16=always, read once; throws Error on a value other than auto/always.
bool bf16_forced();
// The precision products run at when `requested` is asked for: f32 for bf16 where it does not
// pay. `note` (if not null) receives one line saying so, else stays empty.
Precision effective_precision(Precision requested, std::string* note = nullptr);

// OpenBLAS's kernel for this CPU (openblas_get_corename()): a CPU it does not know falls back to
// an older core (narrower vectors); OPENBLAS_CORETYPE=SkylakeX (for example) overrides it.
std::string openblas_core();

// Throughput (GFLOP/s, median of `repeat`) of one backend at one precision on an m x m x m
// product, for benchmarks' peak figures. bf16 is oneDNN's whatever the backend.
double measure_gemm_gflops(GemmBackend backend, Precision precision, int64_t m, int repeat);

// Throughput (GFLOP/s, median of `repeat` samples) of gemm<float> itself, with every dispatch
// rule, on one product shape in context ctx. With per_thread, every thread runs its own product
// at once inside a parallel region, as the attention's per-head and per-block products run; the
// figure is then the sum over threads.
double measure_product_gflops(const ComputeContext& ctx, bool trans_a, bool trans_b, int64_t m,
                              int64_t n, int64_t k, bool per_thread, int repeat);

}  // namespace polysketch::kernels
