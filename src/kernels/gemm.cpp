#include "kernels/gemm.h"

#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "kernels/bf16_gemm.h"
#include "kernels/lanes.h"
#include "polysketch/error.h"
#include "util/parallel.h"

namespace polysketch::kernels {

namespace {
CBLAS_TRANSPOSE op(bool t) { return t ? CblasTrans : CblasNoTrans; }

// C [m x n] = alpha A [m x k] B [k x n] + beta C for few rows (decoding: one row per sequence).
// B, the weights, is streamed from memory once, a stripe of up to kStripe columns per thread.
// Inside a stripe, 64-column groups of B are read a block of kBlockK rows at a time (16 KB, kept
// in L1 while every row uses it), so the memory stream and the arithmetic overlap instead of one
// pass fetching B and the next rows re-reading it. Tiles of up to 4 rows x 64 columns keep their
// 16 vector accumulators in registers within a block (each B row piece loaded once feeds 4 rows'
// fused multiply-adds) and park them between blocks. sgemm would first copy all of B into its
// packed layout, and OpenBLAS's gemv is an SSE3 kernel on CPUs newer than Debian's OpenBLAS.
// Every entry is the same chain of multiply-adds in k order whatever m, the tiling, the stripe
// width and the thread count: a sequence decodes the same alone or in a batch.
constexpr int64_t kFewRows = 16, kStripe = 256, kBlockK = 64;
constexpr int64_t kPanel = 64;  // PanelMatrix's panels: the tiles' width
constexpr int kTileRows = 4;

// acc [R][V] += A's rows [0, R) x B's rows [k0, k1), columns [0, V * kLanes). The first tile of a
// block (`ahead`) asks for the next block's B rows, which the memory stream would otherwise only
// start on when the other tiles are done (prefetches past B's end are harmless hints).
template <int R, int V, bool ahead>
void tile_block(int64_t k0, int64_t k1, const float* a, int64_t lda, const float* b, int64_t ldb,
                Lanes (*acc)[V]) {
  Lanes t[R][V];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) t[i][v] = acc[i][v];
  for (int64_t kk = k0; kk < k1; ++kk) {
    const auto* bv = reinterpret_cast<const UnalignedLanes*>(b + kk * ldb);
    if constexpr (ahead) {
      const auto next = reinterpret_cast<uintptr_t>(b) + sizeof(float) * static_cast<uintptr_t>((kk + kBlockK) * ldb);
      for (int v = 0; v < V; ++v) __builtin_prefetch(reinterpret_cast<const void*>(next + v * sizeof(Lanes)));
    }
    for (int i = 0; i < R; ++i) {
      const float av = a[i * lda + kk];
      for (int v = 0; v < V; ++v) t[i][v] += av * bv[v];
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) acc[i][v] = t[i][v];
}

// tile_block for 1 to 4 rows.
template <int V, bool ahead>
void rows_block(int64_t rows, int64_t k0, int64_t k1, const float* a, int64_t lda, const float* b,
                int64_t ldb, Lanes (*acc)[V]) {
  switch (rows) {
    case 4: return tile_block<4, V, ahead>(k0, k1, a, lda, b, ldb, acc);
    case 3: return tile_block<3, V, ahead>(k0, k1, a, lda, b, ldb, acc);
    case 2: return tile_block<2, V, ahead>(k0, k1, a, lda, b, ldb, acc);
    default: return tile_block<1, V, ahead>(k0, k1, a, lda, b, ldb, acc);
  }
}

// Rows [0, m) x columns [0, V * kLanes) of C: B in blocks of kBlockK rows, each feeding every tile.
template <int V>
void group_product(int64_t m, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float beta, float* c, int64_t ldc) {
  Lanes acc[kFewRows][V];
  for (int64_t i = 0; i < m; ++i)  // only the rows in use: one row is the common case
    for (int v = 0; v < V; ++v) acc[i][v] = Lanes{};
  for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
    const int64_t k1 = std::min(k, k0 + kBlockK);
    for (int64_t i = 0; i < m; i += kTileRows) {
      const int64_t rows = std::min<int64_t>(kTileRows, m - i);
      if (i == 0)
        rows_block<V, true>(rows, k0, k1, a, lda, b, ldb, acc);
      else
        rows_block<V, false>(rows, k0, k1, a + i * lda, lda, b, ldb, acc + i);
    }
  }
  for (int64_t i = 0; i < m; ++i)
    for (int v = 0; v < V; ++v) {
      float sums[kLanes];
      std::memcpy(sums, &acc[i][v], sizeof sums);
      for (int j = 0; j < kLanes; ++j) {
        float& out = c[i * ldc + v * kLanes + j];
        out = alpha * sums[j] + (beta == 0.f ? 0.f : beta * out);
      }
    }
}

// m <= kFewRows rows, columns [0, cols): 64-column groups, then 16-column ones, then single columns.
void stripe_product(int64_t m, int64_t cols, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  int64_t j = 0;
  for (; j + 4 * kLanes <= cols; j += 4 * kLanes) group_product<4>(m, k, alpha, a, lda, b + j, ldb, beta, c + j, ldc);
  for (; j + kLanes <= cols; j += kLanes) group_product<1>(m, k, alpha, a, lda, b + j, ldb, beta, c + j, ldc);
  for (; j < cols; ++j)
    for (int64_t i = 0; i < m; ++i) {
      float acc = 0.f;
      for (int64_t kk = 0; kk < k; ++kk) acc += a[i * lda + kk] * b[kk * ldb + j];
      float& out = c[i * ldc + j];
      out = alpha * acc + (beta == 0.f ? 0.f : beta * out);
    }
}

// The few-row product from B in 64-column panels (PanelMatrix): each panel is one stripe whose
// rows are contiguous; the columns past the last whole panel are one more.
void panel_gemm(int64_t m, float alpha, const float* a, int64_t lda, const PanelMatrix& b, float beta,
                float* c, int64_t ldc) {
  const int64_t panels = b.n / kPanel, tail = b.n - panels * kPanel;
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  // Panels handed out as threads become free (each entry's arithmetic does not depend on which
  // thread computes it), so a core slowed by its neighbours does not hold the other at the end.
#pragma omp parallel for num_threads(threads) schedule(dynamic, 2) if (threads > 1 && panels > 1)
  for (int64_t p = 0; p <= panels; ++p) {
    const int64_t cols = p < panels ? kPanel : tail;
    if (cols > 0)
      stripe_product(m, cols, b.k, alpha, a, lda, b.data.data() + p * b.k * kPanel, cols, beta,
                     c + p * kPanel, ldc);
  }
}

// Whether an untransposed product of m rows goes to the few-row kernel: gemm and gemm_panels
// must agree, or a packed weight would round differently from the same weight in place.
bool takes_few_rows(const ComputeContext& ctx, int64_t m, int64_t k) {
  return m <= kFewRows && k > 0 && (ctx.batch_invariant || ctx.backend != GemmBackend::onednn);
}

void few_rows_gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                   const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  // Stripes narrow enough for every thread to have one, in whole 64-byte lines.
  const int64_t width = std::clamp<int64_t>(((n + threads - 1) / threads + 15) & ~int64_t{15}, 16, kStripe);
  const int64_t stripes = (n + width - 1) / width;
#pragma omp parallel for num_threads(threads) schedule(dynamic) if (threads > 1 && stripes > 1)
  for (int64_t t = 0; t < stripes; ++t) {
    const int64_t j0 = t * width;
    stripe_product(m, std::min(width, n - j0), k, alpha, a, lda, b + j0, ldb, beta, c + j0, ldc);
  }
}

// Environment variable `name` (unset: `first`), which must be `first` or `second`: whether it is
// `first`. Throws Error otherwise.
bool env_is_first(const char* name, const char* first, const char* second) {
  const char* env = std::getenv(name);
  const std::string v = env ? env : first;
  if (v != first && v != second)
    throw Error(fmt::format("{}='{}': expected {} or {}", name, v, first, second));
  return v == first;
}
}  // namespace

bool bf16_kernel_wanted() {
  static const bool wanted = env_is_first("POLYSKETCH_BF16_KERNEL", "on", "off");
  return wanted && bf16_small_gemm_available();
}

namespace {

void openblas_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                    int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, op(ta), op(tb), static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

void onednn_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) !=
      dnnl_success)
    throw Error(fmt::format("oneDNN sgemm failed for {} x {} x {}", m, n, k));
}

// bf16 inputs, f32 accumulation and output: our float32 operands are rounded to bfloat16
// (round to nearest even) into scratch buffers of the same layout, then a oneDNN matmul with
// bf16 source and weights and a float32 destination; one primitive per shape, created once.
using MatmulKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, bool, bool>;

struct Matmuls {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::mutex mutex;
  std::map<MatmulKey, dnnl::matmul> cache;
};

Matmuls& matmuls() {
  static Matmuls m;
  return m;
}

// Rounds a float matrix to bf16 in `out` (same layout); split by rows over the threads outside
// a parallel region (a dense layer's activations are tens of megabytes).
void round_to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ld, std::vector<uint16_t>& out) {
  out.resize(static_cast<size_t>((rows - 1) * ld + cols));
  util::parallel_ranges(rows, util::elementwise_threads(rows * cols), [&](int64_t i0, int64_t i1, int) {
    round_rows_bf16(i1 - i0, cols, x + i0 * ld, ld, out.data() + i0 * ld);
  });
}

void onednn_matmul(bool bf16, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                   const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                   int64_t ldc) {
  using dnnl::memory;
  const auto in = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  const memory::desc ad({m, k}, in, ta ? memory::dims{1, lda} : memory::dims{lda, 1});
  const memory::desc bd({k, n}, in, tb ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  const memory::desc cd({m, n}, memory::data_type::f32, memory::dims{ldc, 1});
  auto& mm = matmuls();
  dnnl::matmul prim;
  {
    const MatmulKey key{m, n, k, lda, ldb, ldc, ta, tb, beta != 0.f, bf16};
    std::lock_guard<std::mutex> lock(mm.mutex);
    auto it = mm.cache.find(key);
    if (it == mm.cache.end()) {
      dnnl::primitive_attr attr;
      attr.set_output_scales(0, {DNNL_RUNTIME_F32_VAL});
      if (beta != 0.f) {
        dnnl::post_ops po;
        po.append_sum(1.f);  // C = alpha AB + C, with C pre-scaled by beta below
        attr.set_post_ops(po);
      }
      it = mm.cache.emplace(key, dnnl::matmul(dnnl::matmul::primitive_desc(
                                     dnnl::matmul::desc(ad, bd, cd), attr, mm.engine))).first;
    }
    prim = it->second;
  }
  thread_local std::vector<uint16_t> a16, b16;
  if (bf16) {
    round_to_bf16(a, ta ? k : m, ta ? m : k, lda, a16);
    round_to_bf16(b, tb ? n : k, tb ? k : n, ldb, b16);
  }
  if (beta != 0.f && beta != 1.f)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] *= beta;
  dnnl::stream stream(mm.engine);
  memory am(ad, mm.engine, bf16 ? static_cast<void*>(a16.data()) : const_cast<float*>(a)),
      bm(bd, mm.engine, bf16 ? static_cast<void*>(b16.data()) : const_cast<float*>(b)), cm(cd, mm.engine, c),
      scale({{1}, memory::data_type::f32, {1}}, mm.engine, &alpha);
  prim.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm},
                        {DNNL_ARG_ATTR_OUTPUT_SCALES, scale}});
  stream.wait();
}

// Seconds of `repeat` m x n x k products on one backend (bf16: oneDNN's bf16 matmul), sorted,
// after one untimed warm-up product (JIT, thread pool, first touch).
std::vector<double> product_seconds(GemmBackend backend, bool bf16, int64_t m, int64_t n, int64_t k,
                                    int repeat) {
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(k * n), 0.25f),
      c(static_cast<size_t>(m * n));
  std::vector<double> seconds;
  for (int i = 0; i < repeat + 1; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    if (bf16 || backend == GemmBackend::onednn)
      onednn_matmul(bf16, false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c.data(), n);
    else
      openblas_sgemm(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c.data(), n);
    if (i > 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds;
}

// Products smaller than this skip the matmul primitive's per-call overhead (a cache look-up,
// memory objects, a stream): oneDNN's sgemm in f32. In bf16, those and every product run per
// thread inside our parallel regions (softmax tiles, per-block products, the learned sketch's
// layers) go to our AVX512-BF16 kernel where the CPU has it (oneDNN's bf16 matmul, which then
// runs on one thread and packs its operands per call, measured 110-320 GFLOP/s on such shapes on
// 2 threads, below its own f32; the kernel 490-630: `polysketch bench-gemm`), else to f32.
// Larger ones run as matmul primitives, f32 or bf16 (measured here: f32 matmul 353 GFLOP/s
// against 281 for oneDNN's sgemm on 2048^3).
constexpr double kMatmulMinFlops = 1 << 22;

// A small bf16 product: on the caller's thread inside a parallel region, else split by rows over
// the threads (rows are independent, so the result does not depend on the thread count).
void small_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int threads = omp_in_parallel() ? 1 : static_cast<int>(std::min<int64_t>(omp_get_max_threads(), m / 32));
  util::parallel_ranges(m, threads, [&](int64_t i0, int64_t i1, int) {
    small_gemm_bf16(ta, tb, i1 - i0, n, k, alpha, ta ? a + i0 : a + i0 * lda, lda, b, ldb, beta,
                    c + i0 * ldc, ldc);
  });
}
}  // namespace
}  // namespace polysketch::kernels

namespace polysketch {

std::string gemm_backend_name(GemmBackend b) {
  return b == GemmBackend::onednn ? "onednn" : b == GemmBackend::openblas ? "openblas" : "auto";
}

GemmBackend parse_gemm_backend(const std::string& name) {
  if (name == "openblas") return GemmBackend::openblas;
  if (name == "onednn") return GemmBackend::onednn;
  if (name == "auto") return GemmBackend::automatic;
  throw Error(fmt::format("unknown GEMM backend '{}' (valid: auto, onednn, openblas)", name));
}

Precision parse_precision(const std::string& name) {
  if (name == "f32") return Precision::f32;
  if (name == "bf16") return Precision::bf16;
  throw Error(fmt::format("unknown precision '{}' (valid: f32, bf16)", name));
}
std::string precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "f32"; }

ComputeContext make_compute_context(Precision precision, GemmBackend backend, std::string* note) {
  ComputeContext c;
  c.backend = backend == GemmBackend::automatic ? kernels::measured_backend() : backend;
  c.bf16_kernel = kernels::bf16_kernel_wanted();
  c.precision = kernels::effective_precision(precision, note);
  return c;
}

}  // namespace polysketch

namespace polysketch::kernels {

GemmBackend measured_backend() {
  static const GemmBackend backend = [] {
    if (const char* env = std::getenv("POLYSKETCH_GEMM"))
      if (const auto b = parse_gemm_backend(env); b != GemmBackend::automatic) return b;
    // Best of 4 on a product the size of our dense layers.
    const double dnnl = product_seconds(GemmBackend::onednn, false, 1024, 768, 768, 4).front();
    const double oblas = product_seconds(GemmBackend::openblas, false, 1024, 768, 768, 4).front();
    return dnnl * 1.15 < oblas ? GemmBackend::onednn : GemmBackend::openblas;
  }();
  return backend;
}

bool bf16_forced() {
  static const bool forced = !env_is_first("POLYSKETCH_BF16", "auto", "always");
  return forced;
}

const Bf16Choice& bf16_choice() {
  static const Bf16Choice choice = [] {
    Bf16Choice c;
    if (bf16_forced()) return c;
    // Equal work in both: seconds = flops / rate, summed over the dense and the per-thread product.
    auto seconds = [&](Precision p) {
      const ComputeContext ctx{measured_backend(), p, bf16_kernel_wanted()};
      const double dense = measure_product_gflops(ctx, false, false, 1024, 768, 768, false, 3);
      const double block = measure_product_gflops(ctx, false, true, 256, 256, 64, true, 3);
      return 1.0 / dense + 1.0 / block;
    };
    const double f32 = seconds(Precision::f32), bf16 = seconds(Precision::bf16);
    c.f32_gflops = 2.0 / f32;  // the harmonic mean of the two rates
    c.bf16_gflops = 2.0 / bf16;
    c.use = bf16 * 1.1 < f32;  // bf16 rounds every product's inputs: it must buy real speed
    return c;
  }();
  return choice;
}

Precision effective_precision(Precision requested, std::string* note) {
  if (note) note->clear();
  if (requested != Precision::bf16 || bf16_choice().use) return requested;
  if (note)
    *note = fmt::format("--precision bf16: bf16 products are not faster than f32 on this CPU ({:.0f} vs "
                        "{:.0f} GFLOP/s, measured); using f32 products (POLYSKETCH_BF16=always to force bf16)",
                        bf16_choice().bf16_gflops, bf16_choice().f32_gflops);
  return Precision::f32;
}

std::string openblas_core() {
  const char* name = openblas_get_corename();
  std::string core = name ? name : "unknown";
  // Debian's OpenBLAS (0.3.21) does not know CPUs newer than it (Sapphire and Emerald Rapids
  // among them) and falls back to an SSE3 core at a fifth of the speed (docs/DESIGN.md).
  if (__builtin_cpu_supports("avx512f") && core.find("kylakex") == std::string::npos &&
      core.find("ooperlake") == std::string::npos && core.find("apphire") == std::string::npos)
    core += " (older than this AVX-512 CPU: OPENBLAS_CORETYPE=Cooperlake or SkylakeX helps)";
  return core;
}

double measure_gemm_gflops(GemmBackend backend, Precision p, int64_t m, int repeat) {
  const auto seconds = product_seconds(backend, p == Precision::bf16, m, m, m, repeat);
  return 2.0 * static_cast<double>(m * m) * static_cast<double>(m) / seconds[seconds.size() / 2] / 1e9;
}

template <>
void gemm<float>(const ComputeContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
  if (m == 0 || n == 0) return;
  const bool onednn = ctx.backend == GemmBackend::onednn;
  if (!trans_a && !trans_b && takes_few_rows(ctx, m, k)) {
    few_rows_gemm(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (m == 1 && k > 0 && !onednn) {
    // c = op(B)^T a with B^T stored [n x k] (or A a column): a plain gemv.
    cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans, static_cast<blasint>(trans_b ? n : k),
                static_cast<blasint>(trans_b ? k : n), alpha, b, static_cast<blasint>(ldb), a,
                static_cast<blasint>(trans_a ? lda : 1), beta, c, 1);
    return;
  }
  if (k == 0) {  // C = beta C (the libraries differ on this corner)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.f ? 0.f : beta * c[i * ldc + j];
    return;
  }
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const bool bf16 = ctx.precision == Precision::bf16;
  if (bf16 && (flops < kMatmulMinFlops || omp_in_parallel()) && ctx.bf16_kernel && bf16_small_gemm_available())
    small_bf16(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else if (flops >= kMatmulMinFlops && (bf16 || onednn))
    onednn_matmul(bf16, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else if (onednn)
    onednn_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    openblas_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

PanelMatrix pack_panels(int64_t k, int64_t n, const float* b, int64_t ldb) {
  PanelMatrix p{k, n, std::vector<float>(static_cast<size_t>(k * n))};
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t cols = std::min(kPanel, n - j0);
    float* panel = p.data.data() + j0 * k;
    for (int64_t kk = 0; kk < k; ++kk) std::copy(b + kk * ldb + j0, b + kk * ldb + j0 + cols, panel + kk * cols);
  }
  return p;
}

void gemm_panels(const ComputeContext& ctx, int64_t m, float alpha, const float* a, int64_t lda,
                 const PanelMatrix& b, const float* unpacked, float beta, float* c, int64_t ldc) {
  if (takes_few_rows(ctx, m, b.k)) {
    panel_gemm(m, alpha, a, lda, b, beta, c, ldc);
  } else {
    gemm<float>(ctx, false, false, m, b.n, b.k, alpha, a, lda, unpacked, b.n, beta, c, ldc);
  }
}

template <>
void gemm<double>(const ComputeContext&, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                  const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                  double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_dgemm(CblasRowMajor, op(trans_a), op(trans_b), static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda),
              b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

void set_blas_threads(int threads) { openblas_set_num_threads(threads); }

double measure_product_gflops(const ComputeContext& ctx, bool trans_a, bool trans_b, int64_t m,
                              int64_t n, int64_t k, bool per_thread, int repeat) {
  const int copies = per_thread ? omp_get_max_threads() : 1;
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  // Samples of at least ~200 MFLOP per thread, so that small products are timed over many calls.
  const int64_t calls = std::max<int64_t>(1, static_cast<int64_t>(2e8 / flops));
  struct Operands {
    std::vector<float> a, b, c;
  };
  std::vector<Operands> ops(static_cast<size_t>(copies));
  for (auto& o : ops) {
    o.a.assign(static_cast<size_t>(m * k), 0.5f);
    o.b.assign(static_cast<size_t>(k * n), 0.25f);
    o.c.assign(static_cast<size_t>(m * n), 0.f);
  }
  auto product = [&](Operands& o) {
    for (int64_t i = 0; i < calls; ++i)
      gemm<float>(ctx, trans_a, trans_b, m, n, k, 1.f, o.a.data(), trans_a ? m : k, o.b.data(),
                  trans_b ? k : n, 0.f, o.c.data(), n);
  };
  // Sample r's time: the slowest thread's, each timing its own products after a barrier (so
  // waking the team is not counted). Sample 0 is a warm-up.
  std::vector<double> seconds(static_cast<size_t>(repeat + 1), 0.0);
  auto timed = [&](int thread) {
    for (int r = 0; r <= repeat; ++r) {
      if (per_thread) {
#pragma omp barrier
      }
      const auto t0 = std::chrono::steady_clock::now();
      product(ops[static_cast<size_t>(thread)]);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
#pragma omp critical(polysketch_gemm_timing)
      seconds[static_cast<size_t>(r)] = std::max(seconds[static_cast<size_t>(r)], s);
    }
  };
  if (per_thread) {
#pragma omp parallel num_threads(copies)
    timed(omp_get_thread_num());
  } else {
    timed(0);
  }
  seconds.erase(seconds.begin());
  std::sort(seconds.begin(), seconds.end());
  return flops * static_cast<double>(calls * copies) / seconds[seconds.size() / 2] / 1e9;
}

}  // namespace polysketch::kernels
