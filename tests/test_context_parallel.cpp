// Context parallelism: a sequence split into K chunks, each attended by its own "rank" (a thread
// of an in-process group, tests/chunk_group.h) that exchanges only the block states, equals the
// whole sequence in one call: outputs, input gradients and the summed parameter gradients, for
// every sketch mechanism, K = 2, 3, 4. Double precision, tolerance 1e-10 relative to the largest
// value: the chunks sum the same terms in another order (rounding ~1e-15 per operation); a
// missing or misplaced state term gives errors of order 1e-2 or more.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "attention/mechanism.h"
#include "chunk_group.h"
#include "kernels/rng.h"
#include "polysketch/model.h"
#include "test_util.h"
#include "tiny_config.h"

namespace polysketch::test {
namespace {

constexpr int64_t kBatch = 2, kHeads = 2, kH = 8, kD = 6, kBlock = 4;

struct CpCase {
  Mechanism mechanism;
  int chunks;
  int threads;  // inside each chunk: several thread chunks of the block scan start from z_in too
};

void PrintTo(const CpCase& c, std::ostream* os) {
  *os << mechanism_name(c.mechanism) << " K" << c.chunks << " T" << c.threads;
}

std::vector<CpCase> cp_cases() {
  std::vector<CpCase> cases;
  for (Mechanism m : all_mechanisms())
    if (attention::uses_sketch(m))
      for (int k : {2, 3, 4}) cases.push_back({m, k, k == 3 ? 1 : 2});
  return cases;
}

std::vector<double> random_vector(size_t size, uint64_t seed) {
  auto rng = kernels::Rng::derive(seed, 1, 2);
  std::vector<double> x(size);
  for (auto& v : x) v = rng.normal();
  return x;
}

// Chunk c of x [batch*heads, n, dim] -> [batch*heads, n/K, dim], and back.
std::vector<double> slice(const std::vector<double>& x, int64_t n, int64_t dim, int c, int k) {
  const int64_t len = n / k, rows = static_cast<int64_t>(x.size()) / (n * dim);
  std::vector<double> out(static_cast<size_t>(rows * len * dim));
  for (int64_t r = 0; r < rows; ++r)
    std::copy(x.begin() + (r * n + c * len) * dim, x.begin() + (r * n + (c + 1) * len) * dim,
              out.begin() + r * len * dim);
  return out;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) m = std::max(m, std::abs(v));
  return m;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(got[i] - want[i]));
  EXPECT_LE(err, 1e-10 * std::max(1.0, max_abs(want))) << what;
}

class ContextParallelTest : public ::testing::TestWithParam<CpCase> {};

TEST_P(ContextParallelTest, ChunksEqualTheWholeSequence) {
  const auto& c = GetParam();
  const int64_t n = kBlock * 2 * c.chunks;  // two blocks per chunk
  AttentionConfig cfg;
  cfg.mechanism = c.mechanism;
  cfg.r = 4;
  cfg.block = kBlock;
  cfg.seed = 5;
  cfg.threads = c.threads;
  AttentionT<double> attn(cfg, kH, kD);
  // Parameters away from their initialisation (LayerNorm scale 1, bias 0).
  auto rng = kernels::Rng::derive(7, 0, 0);
  for (auto& p : attn.params())
    for (auto& x : p.value) x += 0.1 * rng.normal();
  const int64_t bh = kBatch * kHeads;
  const auto q = random_vector(bh * n * kH, 1), k = random_vector(bh * n * kH, 2),
             v = random_vector(bh * n * kD, 3), dout = random_vector(bh * n * kD, 4);
  const AttentionShape whole{kBatch, kHeads, n, kH, kD};
  std::vector<double> out(v.size()), dq(q.size()), dk(k.size()), dv(v.size());
  AttentionSaved<double> saved;
  attn.forward(whole, q.data(), k.data(), v.data(), out.data(), &saved);
  auto grads = attn.zero_grads();
  attn.backward(whole, q.data(), k.data(), v.data(), out.data(), dout.data(), saved, dq.data(),
                dk.data(), dv.data(), &grads);

  const AttentionShape part{kBatch, kHeads, n / c.chunks, kH, kD};
  std::vector<std::vector<double>> c_out(c.chunks), c_dq(c.chunks), c_dk(c.chunks), c_dv(c.chunks);
  std::vector<std::vector<std::vector<double>>> c_grads(c.chunks);
  ChunkGroup<double> group(c.chunks);
  group.run([&](int i, ChunkExchangeT<double>& exchange) {
    const auto qc = slice(q, n, kH, i, c.chunks), kc = slice(k, n, kH, i, c.chunks),
               vc = slice(v, n, kD, i, c.chunks), dc = slice(dout, n, kD, i, c.chunks);
    auto& o = c_out[i];
    o.resize(vc.size());
    AttentionSaved<double> s;
    attn.forward(part, qc.data(), kc.data(), vc.data(), o.data(), &s, &exchange);
    c_dq[i].resize(qc.size());
    c_dk[i].resize(kc.size());
    c_dv[i].resize(vc.size());
    c_grads[i] = attn.zero_grads();
    attn.backward(part, qc.data(), kc.data(), vc.data(), o.data(), dc.data(), s, c_dq[i].data(),
                  c_dk[i].data(), c_dv[i].data(), &c_grads[i], &exchange);
  });
  for (int i = 0; i < c.chunks; ++i) {
    const std::string at = " of chunk " + std::to_string(i);
    expect_close(c_out[i], slice(out, n, kD, i, c.chunks), "out" + at);
    expect_close(c_dq[i], slice(dq, n, kH, i, c.chunks), "dq" + at);
    expect_close(c_dk[i], slice(dk, n, kH, i, c.chunks), "dk" + at);
    expect_close(c_dv[i], slice(dv, n, kD, i, c.chunks), "dv" + at);
  }
  for (size_t p = 0; p < grads.size(); ++p) {
    std::vector<double> sum(grads[p].size(), 0.0);
    for (const auto& g : c_grads)
      for (size_t j = 0; j < sum.size(); ++j) sum[j] += g[p][j];
    expect_close(sum, grads[p], "gradient of " + attn.params()[p].name);
  }
}

INSTANTIATE_TEST_SUITE_P(Sketches, ContextParallelTest, ::testing::ValuesIn(cp_cases()));

// The whole model on K chunks (absolute positions for RoPE, sinusoids and dropout; the loss over
// the batch's scored targets) equals the model on whole sequences: loss and every gradient.
// Targets are partly ignored, and chunk 0 has no scored target at all.
TEST_P(ContextParallelTest, ModelChunksEqualTheWholeModel) {
  const auto& c = GetParam();
  const int64_t n = kBlock * 2 * c.chunks, batch = 2, len = n / c.chunks;
  ModelConfig mc = tiny_config(c.mechanism, n, kBlock);
  mc.vocab = 13;
  mc.dropout = 0.2;
  mc.attention.threads = c.threads;
  ModelT<double> model(mc);
  auto rng = kernels::Rng::derive(11, 0, 0);
  for (auto* p : model.params())
    for (auto& x : p->value) x += 0.05 * rng.normal();
  std::vector<int32_t> tokens(static_cast<size_t>(batch * n)), targets(tokens.size());
  int64_t scored = 0;
  for (int64_t i = 0; i < batch * n; ++i) {
    tokens[i] = static_cast<int32_t>(rng.below(13));
    const bool ignored = i % n < len || rng.below(3) == 0;
    targets[i] = ignored ? kIgnoreTarget : static_cast<int32_t>(rng.below(13));
    scored += !ignored;
  }
  TrainCacheT<double> cache;
  const double loss = model.forward(cache, tokens.data(), targets.data(), batch, n, 77);
  auto grads = model.zero_grads();
  model.backward(cache, grads);

  std::vector<double> c_loss(c.chunks);
  std::vector<std::vector<std::vector<double>>> c_grads(c.chunks);
  std::vector<std::unique_ptr<ModelT<double>>> replicas;
  for (int i = 0; i < c.chunks; ++i) {  // every rank holds the same model
    replicas.push_back(std::make_unique<ModelT<double>>(mc));
    auto ps = replicas.back()->params();
    auto src = model.params();
    for (size_t p = 0; p < ps.size(); ++p) ps[p]->value = src[p]->value;
  }
  ChunkGroup<double> group(c.chunks);
  group.run([&](int i, ChunkExchangeT<double>& exchange) {
    std::vector<int32_t> x, y;
    for (int64_t b = 0; b < batch; ++b) {
      x.insert(x.end(), tokens.begin() + b * n + i * len, tokens.begin() + b * n + (i + 1) * len);
      y.insert(y.end(), targets.begin() + b * n + i * len, targets.begin() + b * n + (i + 1) * len);
    }
    const ContextChunkT<double> chunk{&exchange, i * len, n, scored};
    TrainCacheT<double> chunk_cache;
    c_loss[i] = replicas[i]->forward(chunk_cache, x.data(), y.data(), batch, len, 77, &chunk);
    c_grads[i] = replicas[i]->zero_grads();
    replicas[i]->backward(chunk_cache, c_grads[i]);
  });
  EXPECT_EQ(c_loss[0], 0.0);  // nothing scored in chunk 0
  double sum = 0;
  for (double l : c_loss) sum += l;
  EXPECT_NEAR(sum, loss, 1e-12 * loss);
  const auto params = model.params();
  for (size_t p = 0; p < grads.size(); ++p) {
    std::vector<double> total(grads[p].size(), 0.0);
    for (const auto& g : c_grads)
      for (size_t j = 0; j < total.size(); ++j) total[j] += g[p][j];
    expect_close(total, grads[p], "gradient of " + params[p]->name);
  }
}

TEST(ContextParallelErrors, ExactMechanismsAndPartialBlocksAreRefused) {
  ChunkGroup<double> group(1);
  group.run([&](int, ChunkExchangeT<double>& exchange) {
    std::vector<double> x(2 * 8 * kH), o(2 * 8 * kD);
    for (Mechanism m : {Mechanism::softmax, Mechanism::polynomial}) {
      AttentionConfig cfg;
      cfg.mechanism = m;
      AttentionT<double> attn(cfg, kH, kD);
      expect_error([&] { attn.forward({1, 2, 8, kH, kD}, x.data(), x.data(), x.data(), o.data(),
                                      nullptr, &exchange); },
                   "needs a sketch mechanism");
    }
    AttentionConfig cfg;
    cfg.mechanism = Mechanism::polysketch;
    cfg.block = 3;
    AttentionT<double> attn(cfg, kH, kD);
    expect_error([&] { attn.forward({1, 2, 8, kH, kD}, x.data(), x.data(), x.data(), o.data(),
                                    nullptr, &exchange); },
                 "not a whole number of blocks of 3");
    cfg.block = 4;
    cfg.causal = false;
    AttentionT<double> full(cfg, kH, kD);
    expect_error([&] { full.forward({1, 2, 8, kH, kD}, x.data(), x.data(), x.data(), o.data(),
                                    nullptr, &exchange); },
                 "needs causal attention");
    // backward with an exchange after a forward without one
    cfg.causal = true;
    AttentionT<double> plain(cfg, kH, kD);
    AttentionSaved<double> s;
    plain.forward({1, 2, 8, kH, kD}, x.data(), x.data(), x.data(), o.data(), &s);
    std::vector<double> dq(x.size()), dk(x.size()), dv(o.size());
    auto g = plain.zero_grads();
    expect_error([&] { plain.backward({1, 2, 8, kH, kD}, x.data(), x.data(), x.data(), o.data(),
                                      o.data(), s, dq.data(), dk.data(), dv.data(), &g, &exchange); },
                 "needs the AttentionSaved of a forward call with context parallelism");
  });
}

}  // namespace
}  // namespace polysketch::test
