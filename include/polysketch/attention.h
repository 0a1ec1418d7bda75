// polysketch attention: every PolySketchFormer mechanism, forward and backward.
//
// Tensors are contiguous, row-major float32 (or float64, for gradient checks):
//   q, k   [batch, heads, n, head_dim]
//   v, out [batch, heads, n, value_dim]
// All non-softmax mechanisms compute o_i = sum_{j<=i} w_ij v_j / (1 + sum_{j<=i} w_ij); see
// docs/DESIGN.md for each mechanism's weight w_ij and the choices the specification leaves open.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "polysketch/compute.h"
#include "polysketch/error.h"
#include "polysketch/param.h"

namespace polysketch {

enum class Mechanism {
  softmax,                   // exp(<q,k>/sqrt(h)), FlashAttention-style tiles (quadratic)
  polynomial,                // <LN(q),LN(k)>^p, exact (quadratic)
  polysketch,                // <phi(LN q), phi(LN k)>^2, random sketch phi (linear)
  polysketch_learned,        // same with a learned sketch network phi (linear)
  polysketch_local,          // exact <LNq(q),LNk(k)>^p inside diagonal blocks + random sketch
  polysketch_learned_local,  // exact local blocks + learned sketch
};

// "softmax", "polynomial", "polysketch", "polysketch-learned", "polysketch-local",
// "polysketch-learned-local". parse_mechanism throws Error listing the valid names.
Mechanism parse_mechanism(std::string_view name);
std::string mechanism_name(Mechanism m);
const std::vector<Mechanism>& all_mechanisms();

enum class SketchType { gaussian, hadamard };
SketchType parse_sketch_type(std::string_view name);  // "gaussian" | "hadamard"

struct AttentionConfig {
  Mechanism mechanism = Mechanism::polysketch_learned_local;
  bool causal = true;
  int p = 4;          // polynomial degree, even; sketches approximate <q,k>^p (p/2 a power of 2)
  int r = 32;         // sketch size: columns of phi (ignored when p == 2: phi is the identity)
  int block = 256;    // block size b of the causal algorithm; part of the model for *-local
  SketchType sketch = SketchType::gaussian;
  int sketch_levels = 2;  // learned sketch: blocks per chain
  int hidden_mult = 8;    // learned sketch: hidden width = hidden_mult * r
  uint64_t seed = 0;      // random sketch matrices and parameter init come from (seed, layer)
  int layer = 0;
  int threads = 0;        // 0: all cores (omp_get_max_threads())
};

struct AttentionShape {
  int64_t batch = 1, heads = 1, n = 1, head_dim = 64, value_dim = 64;
  // Document masking (packed documents, causal only): optional [batch, n] document ids,
  // non-decreasing along each sequence; token i then attends only to tokens j <= i with the same
  // id (every mechanism: softmax and polynomial skip the other pairs, the sketch mechanisms
  // restart their block state at each document start). Null: one document per sequence.
  const int32_t* segments = nullptr;
  // With segments, for a chunk of longer sequences run with a sequential ChunkExchangeT
  // (chunked training): [batch] the id of each sequence's token before the chunk; a document
  // starts at the chunk's first token where it differs from that token's id. Null: each chunk
  // continues the earlier chunks' document (or is the sequences' first chunk).
  const int32_t* segments_before = nullptr;
};

// What forward keeps for backward: one statistic per row (softmax: log-sum-exp; others: the
// denominator 1 + sum_j w_ij) and, for learned sketches only, phi(q) and phi(k) (2 r values per
// row: recomputing them would cost a whole pass of the sketch network). Everything else is
// recomputed, so memory stays O(n).
template <typename T>
struct AttentionSaved {
  std::vector<T> row_stat;
  std::vector<T> features;  // [batch*heads][2][n][r], learned sketches (and context parallelism)
  std::vector<T> state_in;  // context parallelism: the earlier chunks' key state, per head
};

// Context parallelism (`polysketch train --context-parallel K`): a causal sequence split into
// contiguous chunks of whole blocks, one per process of a group, in order. Across chunks a
// sketch mechanism depends only on the key state Z = sum_j pack(phi(k_j))^T [v_j | 1] of the
// earlier tokens (r(r+1)/2 x (d+1) values per head) and, in backward, on its gradient from the
// later tokens, so the chunks exchange these states and never keys or values.
// Why attention with `cfg` cannot run on chunks of `chunk_len` tokens of a longer sequence, or ""
// when it can: a sketch mechanism (the others attend to every earlier key, which another chunk
// holds), causal, chunks of whole blocks. The one statement of these rules, for the attention
// itself and for the trainer, which checks before it builds anything.
std::string chunk_layout_problem(const AttentionConfig& cfg, int64_t chunk_len);

template <typename T>
class ChunkExchangeT {
 public:
  virtual ~ChunkExchangeT() = default;
  // In place over values[0, count): the sum of the values the chunks before this one passed
  // (after it, when reverse); zeros on the first (last) chunk. Every chunk of the group makes the
  // same calls in the same order with the same count.
  virtual void exclusive_sum(T* values, int64_t count, bool reverse) = 0;

  // Chunks that run one after another in one process (chunked training and evaluation) know the
  // earlier chunks' state before they start. For such a group, sequential() is true and the
  // attention calls incoming (the state entering the chunk, as exclusive_sum would give) and then
  // outgoing (the state leaving it: entering plus the chunk's own, which its scan ends with)
  // instead of exclusive_sum, saving the pass that computes the chunk's own state first.
  virtual bool sequential() const { return false; }
  virtual void incoming(T* /*values*/, int64_t /*count*/, bool /*reverse*/) {
    throw Error("ChunkExchange::incoming: this group is not sequential");
  }
  virtual void outgoing(const T* /*values*/, int64_t /*count*/, bool /*reverse*/) {
    throw Error("ChunkExchange::outgoing: this group is not sequential");
  }
};

template <typename T>
class AttentionT {
 public:
  // Validates the configuration (throws Error), initialises parameters deterministically from
  // (seed, layer) (LayerNorm: scale 1, bias 0; dense weights: N(0, 1/fan_in)) and draws the
  // random sketch matrices.
  // Its products run as `ctx` says (polysketch/compute.h; the default: f32 on OpenBLAS).
  AttentionT(const AttentionConfig& config, int64_t head_dim, int64_t value_dim,
             const ComputeContext& ctx = {});

  const AttentionConfig& config() const { return config_; }
  const ComputeContext& context() const { return ctx_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t value_dim() const { return value_dim_; }
  std::vector<Param<T>>& params() { return params_; }
  const std::vector<Param<T>>& params() const { return params_; }

  // out = attention(q, k, v). `saved` may be null when no backward follows. With `chunks`, q, k,
  // v are one chunk of a longer sequence (context parallelism; causal sketch mechanisms, n a
  // multiple of the block size; Error otherwise) and every chunk of the group calls forward.
  void forward(const AttentionShape& shape, const T* q, const T* k, const T* v, T* out,
               AttentionSaved<T>* saved, ChunkExchangeT<T>* chunks = nullptr) const;

  // The exact polynomial attention w_ij = <LN_q(q_i), LN_k(k_j)>^p with this mechanism's own
  // parameters: what a sketch mechanism approximates (quadratic; a diagnostic, e.g. `polysketch
  // eval --sketch-error`). Throws Error for softmax.
  void exact_forward(const AttentionShape& shape, const T* q, const T* k, const T* v, T* out) const;

  // Given dout = dL/dout, writes dq, dk, dv (overwritten) and ADDS the parameter gradients into
  // dparams, which must have the shapes of params() (so micro-batches accumulate). `out` and
  // `saved` are those of the matching forward call, and so is `chunks`; the parameter gradients
  // are then this chunk's share (the group's sum is the sequence's).
  void backward(const AttentionShape& shape, const T* q, const T* k, const T* v, const T* out,
                const T* dout, const AttentionSaved<T>& saved, T* dq, T* dk, T* dv,
                std::vector<std::vector<T>>* dparams, ChunkExchangeT<T>* chunks = nullptr) const;

  // Zero-filled gradient buffers shaped like params().
  std::vector<std::vector<T>> zero_grads() const;

  // Feature size of phi (r, or head_dim when p == 2); 0 for softmax and polynomial.
  int64_t feature_dim() const { return feature_dim_; }

  // Random sketch matrices (levels of {G1, G2}, each [in x r], row-major); empty unless the
  // mechanism uses a random sketch. Exposed for tests and for the statistics of the sketch.
  const std::vector<std::vector<T>>& sketch_matrices() const { return sketch_; }

  // phi applied to rows x [rows x head_dim] -> [rows x feature_dim] (after the mechanism's
  // LayerNorm has been applied by the caller). Exposed for tests and decoding.
  void feature_map(int64_t rows, const T* x, T* phi) const;

 private:
  void validate_shape(const AttentionShape& shape) const;
  void forward_impl(const AttentionShape& shape, const T* q, const T* k, const T* v, T* out,
                    AttentionSaved<T>* saved, bool exact, ChunkExchangeT<T>* chunks) const;
  void check_chunk(const AttentionShape& shape, const ChunkExchangeT<T>* chunks) const;

  AttentionConfig config_;
  ComputeContext ctx_;
  int64_t head_dim_, value_dim_, feature_dim_ = 0;
  std::vector<Param<T>> params_;
  std::vector<std::vector<T>> sketch_;
};

using Attention = AttentionT<float>;

}  // namespace polysketch
