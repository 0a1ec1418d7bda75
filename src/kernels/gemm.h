// Row-major GEMM: C = alpha * op(A) * op(B) + beta * C, op(A) is M x K, op(B) is K x N.
// float: one-row products go to gemv, few-row products to a streaming kernel, the rest to the
// GEMM backend in use (oneDNN or OpenBLAS, chosen by measurement on first use, see below).
// double (gradient checks): OpenBLAS dgemm.
#pragma once

#include <cstdint>
#include <string>

namespace polysketch::kernels {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Threads the BLAS libraries may use for a call made outside our own parallel regions.
void set_blas_threads(int threads);

// The float GEMM backend. `auto` (the default) times both on a 1024 x 768 x 768 product the first
// time a GEMM runs and keeps OpenBLAS unless oneDNN is at least 15% faster (so a machine whose
// OpenBLAS already uses its widest vectors is not switched for noise). The environment variable
// POLYSKETCH_GEMM=openblas|onednn|auto sets it for a whole run; results are deterministic for a
// fixed backend and thread count.
enum class GemmBackend { automatic, openblas, onednn };
void set_gemm_backend(GemmBackend backend);
// The backend in use, resolving `automatic` by measuring (call it once outside parallel regions,
// after setting the thread count, so the measurement uses every thread).
GemmBackend gemm_backend();
std::string gemm_backend_name(GemmBackend backend);
GemmBackend parse_gemm_backend(const std::string& name);  // throws Error listing the names

// Float products' precision. bf16: the inputs are rounded to bfloat16 and multiplied with
// float32 accumulation (large products: oneDNN matmul; small and per-thread ones: our
// AVX512-BF16 kernel where the CPU has it, else float32); outputs stay float32.
enum class Precision { f32, bf16 };
void set_precision(Precision precision);
Precision precision();
// Whether bf16 uses our AVX512-BF16 kernel for small and per-thread products: on by default
// where the CPU has AVX512-BF16; POLYSKETCH_BF16_KERNEL=off turns it off for a run (they then go
// as before it existed), read on the first call, which throws Error on a value other than on/off.
bool bf16_kernel();
void set_bf16_kernel(bool enabled);
Precision parse_precision(const std::string& name);  // "f32" | "bf16"
std::string precision_name(Precision precision);

// Whether bf16 products pay on this machine, measured once (the first call; outside parallel
// regions, after the thread count is set): the products as training runs them, a dense layer's
// (1024 x 768 x 768) and per-thread block products (256 x 64 x 256 on every thread at once), in
// bf16 against f32 on the backend in use. On CPUs without fast bf16 (Intel before AMX: vdpbf16ps
// does not outrun two FMA ports) bf16 is slower. POLYSKETCH_BF16=auto (default) | always (use
// bf16 products even where slower: for tests and comparisons).
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
// rule, on one product shape with the given backend, precision and bf16 kernel setting
// (restored afterwards). With per_thread, every thread runs its own product at once inside a
// parallel region, as the attention's per-head and per-block products run; the figure is then
// the sum over threads.
double measure_product_gflops(GemmBackend backend, Precision precision, bool use_kernel,
                              bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                              bool per_thread, int repeat);

}  // namespace polysketch::kernels
