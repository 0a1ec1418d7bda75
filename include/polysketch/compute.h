// How the library computes: the compute context. Made once (make_compute_context measures what
// this machine does best), then handed to every model and attention object, which pass it to
// every matrix product. There is no process-wide setting: two models in one process may run at
// different precisions, side by side.
#pragma once

#include <string>

namespace polysketch {

// The float GEMM library. `automatic` is a request only: make_compute_context resolves it.
enum class GemmBackend { automatic, openblas, onednn };
// Float products' precision. bf16: the inputs are rounded to bfloat16 and multiplied with
// float32 accumulation; outputs stay float32. (double products, for gradient checks, are always
// double.)
enum class Precision { f32, bf16 };

struct ComputeContext {
  GemmBackend backend = GemmBackend::openblas;  // openblas or onednn
  Precision precision = Precision::f32;
  // bf16 only: small and per-thread products use our AVX512-BF16 kernel (else oneDNN / f32).
  bool bf16_kernel = false;
  // Products of at most 16 untransposed rows (decoding a batch) use our streaming kernel, whose every
  // entry is the same sum whatever the row count: a sequence decodes bit for bit the same alone
  // or in a batch. false: oneDNN's sgemm where it is the backend (about twice as fast at 16
  // rows here, docs/BENCHMARKS.md, but its rounding depends on the row count).
  bool batch_invariant = true;
};

// The context for a requested precision and backend on this machine: `automatic` becomes
// POLYSKETCH_GEMM's choice or, without it, the faster of the two on a dense layer's product
// (OpenBLAS unless oneDNN is >= 15% faster; measured once per process); bf16 becomes f32 where it
// does not pay (kernels::effective_precision; `note` then says why, else is cleared); the bf16
// kernel is on where the CPU has AVX512-BF16 unless POLYSKETCH_BF16_KERNEL=off. Call outside
// parallel regions, after setting the thread count (the measurement uses every thread). Throws
// Error on a bad environment variable.
ComputeContext make_compute_context(Precision precision = Precision::f32,
                                    GemmBackend backend = GemmBackend::automatic,
                                    std::string* note = nullptr);

std::string gemm_backend_name(GemmBackend backend);
GemmBackend parse_gemm_backend(const std::string& name);  // throws Error listing the names
Precision parse_precision(const std::string& name);      // "f32" | "bf16"
std::string precision_name(Precision precision);

}  // namespace polysketch
