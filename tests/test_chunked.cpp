// Chunked training (train/chunked.h): the loss and every parameter gradient of a micro-batch
// processed in chunks of tokens equal the whole-sequence forward and backward, in double
// precision, for every sketch mechanism, chunks of b, 2b, 3b and a short last chunk, with dropout
// and ignored targets; a few AdamW steps give the same weights; the mutation check (a chunk
// that does not receive the later chunks' gradient state) fails. Tolerance 1e-10 relative to
// the largest value: the same terms summed in another order. With document masking too, a
// document starting at a chunk's first token included.
#include <gtest/gtest.h>

#include <memory>

#include "attention/mechanism.h"
#include "kernels/rng.h"
#include "polysketch/model.h"
#include "reference.h"
#include "test_util.h"
#include "tiny_config.h"
#include "train/adamw.h"
#include "model/time_chunks.h"
#include "train/chunked.h"

namespace polysketch::test {
namespace {

constexpr int64_t kBlock = 4;

struct ChunkCase {
  Mechanism mechanism;
  int64_t chunk, len;
  int threads;
};

void PrintTo(const ChunkCase& c, std::ostream* os) {
  *os << mechanism_name(c.mechanism) << " chunk " << c.chunk << " len " << c.len << " T" << c.threads;
}

std::vector<ChunkCase> cases() {
  std::vector<ChunkCase> out;
  for (const auto& t : attention::kMechanisms) {
    if (!t.sketch) continue;
    for (int64_t chunk : {kBlock, 2 * kBlock, 3 * kBlock}) out.push_back({t.mechanism, chunk, 6 * kBlock, 1});
    out.push_back({t.mechanism, 3 * kBlock, 5 * kBlock, 2});  // a short last chunk, threads in a head
  }
  return out;
}

ModelConfig config(const ChunkCase& c) {
  ModelConfig mc = tiny_config(c.mechanism, c.len, kBlock);
  mc.vocab = 13;
  mc.dropout = 0.2;
  mc.attention.threads = c.threads;
  return mc;
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};
Batch batch_of(int64_t batch, int64_t len, uint64_t seed) {
  auto rng = kernels::Rng::derive(seed, 0, 0);
  Batch b;
  for (int64_t i = 0; i < batch * len; ++i) {
    b.tokens.push_back(static_cast<int32_t>(rng.below(13)));
    b.targets.push_back(rng.below(4) == 0 ? kIgnoreTarget : static_cast<int32_t>(rng.below(13)));
  }
  return b;
}

// Parameters moved off their initial values (LayerNorm scales of exactly 1 hide mistakes).
void perturb(ModelT<double>& model, uint64_t seed) {
  auto rng = kernels::Rng::derive(seed, 0, 0);
  for (auto* p : model.params())
    for (auto& x : p->value) x += 0.05 * rng.normal();
}

class ChunkedTest : public ::testing::TestWithParam<ChunkCase> {};

// Loss and every gradient, whole against chunked, with `documents` (or none) on both sides.
void expect_chunked_equals_whole(const ChunkCase& c, const std::vector<int32_t>* documents) {
  ModelT<double> model(config(c));
  perturb(model, 11);
  const int64_t batch = 2;
  const auto b = batch_of(batch, c.len, 5);
  const int32_t* docs = documents ? documents->data() : nullptr;
  TrainCacheT<double> cache;
  const double loss = model.forward(cache, b.tokens.data(), b.targets.data(), batch, c.len, 77, nullptr, docs);
  auto grads = model.zero_grads();
  model.backward(cache, grads);

  auto chunked = model.zero_grads();
  TrainCacheT<double> chunk_cache;
  const double chunked_loss = train::chunked_forward_backward(model, chunk_cache, b.tokens.data(), b.targets.data(),
                                                              batch, c.len, c.chunk, 77, chunked, docs);
  EXPECT_NEAR(chunked_loss, loss, 1e-12 * loss);
  const auto params = model.params();
  for (size_t p = 0; p < grads.size(); ++p)
    EXPECT_LT(max_rel_error(chunked[p], grads[p], 1e-30), 1e-10) << params[p]->name;
}

TEST_P(ChunkedTest, EqualsTheWholeSequence) { expect_chunked_equals_whole(GetParam(), nullptr); }

// Document masking across chunks: in sequence 0 a document starts exactly at the second chunk's
// first token (the state from the first chunk must not reach it, nor its gradient state go
// back), in sequence 1 one token later; both have another start inside the last chunk, and a
// document spans the chunk boundaries between.
std::vector<int32_t> documents_of(const ChunkCase& c) {
  std::vector<int32_t> docs;
  for (int64_t seq = 0; seq < 2; ++seq) {
    int32_t id = 0;
    for (int64_t t = 0; t < c.len; ++t) {
      if (t == c.chunk + seq || t == c.len - 3) ++id;
      docs.push_back(id);
    }
  }
  return docs;
}
TEST_P(ChunkedTest, DocumentMaskingEqualsTheWholeSequence) {
  const auto& c = GetParam();
  const auto docs = documents_of(c);
  expect_chunked_equals_whole(c, &docs);
}

// Chunked scoring (eval --chunk): the chunks' losses, counts and per-position losses (positions
// of the whole sequences, counted from each document's start under document masking) add up to
// the whole sequence's (no states kept: TimeChunks without keep).
void expect_chunked_scores_whole(const ChunkCase& c, const std::vector<int32_t>* documents) {
  ModelT<double> model(config(c));
  perturb(model, 12);
  const int64_t batch = 2;
  const auto b = batch_of(batch, c.len, 6);
  const int32_t* docs = documents ? documents->data() : nullptr;
  const auto whole = model.score(b.tokens.data(), b.targets.data(), batch, c.len, nullptr, true, docs);
  const int64_t chunks = (c.len + c.chunk - 1) / c.chunk;
  model::TimeChunks<double> exchange(chunks, false);
  double loss = 0;
  int64_t scored = 0, correct = 0;
  std::vector<double> position(static_cast<size_t>(c.len), 0.0);
  std::vector<int32_t> x, y, d, before;
  std::vector<int64_t> starts(static_cast<size_t>(batch), 0);  // of the document running into a chunk
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t begin = k * c.chunk, len = std::min(c.chunk, c.len - begin);
    model::chunk_columns(b.tokens.data(), batch, c.len, begin, len, x);
    model::chunk_columns(b.targets.data(), batch, c.len, begin, len, y);
    exchange.begin(model::TimeChunks<double>::Pass::forward, k);
    ContextChunkT<double> part{&exchange, begin, c.len, whole.scored};
    if (docs) {
      model::chunk_columns(docs, batch, c.len, begin, len, d);
      if (k > 0) {
        model::chunk_columns(docs, batch, c.len, begin - 1, 1, before);
        part.documents_before = before.data();
        part.document_starts = starts.data();
      }
    }
    const auto s = model.score(x.data(), y.data(), batch, len, nullptr, true, docs ? d.data() : nullptr, &part);
    loss += s.loss * static_cast<double>(s.scored);
    scored += s.scored;
    correct += s.correct;
    ASSERT_EQ(s.position_loss.size(), position.size());
    for (size_t t = 0; t < position.size(); ++t) position[t] += s.position_loss[t];
    if (docs)
      for (int64_t seq = 0; seq < batch; ++seq)
        for (int64_t t = std::max<int64_t>(begin, 1); t < begin + len; ++t)
          if (docs[seq * c.len + t] != docs[seq * c.len + t - 1]) starts[static_cast<size_t>(seq)] = t;
  }
  EXPECT_EQ(scored, whole.scored);
  EXPECT_EQ(correct, whole.correct);
  EXPECT_NEAR(loss / static_cast<double>(scored), whole.loss, 1e-12 * whole.loss);
  EXPECT_LT(max_rel_error(position, whole.position_loss, 1e-30), 1e-10);
}

TEST_P(ChunkedTest, ScoringEqualsTheWholeSequence) { expect_chunked_scores_whole(GetParam(), nullptr); }
TEST_P(ChunkedTest, DocumentMaskedScoringEqualsTheWholeSequence) {
  const auto& c = GetParam();
  const auto docs = documents_of(c);
  expect_chunked_scores_whole(c, &docs);
}

INSTANTIATE_TEST_SUITE_P(Sketches, ChunkedTest, ::testing::ValuesIn(cases()));

// Several AdamW steps (float, as training runs), chunked and whole, end at the same weights up to
// float rounding: each step's gradients agree to ~1e-6 relative (the order of the sums differs),
// which AdamW's normalised update can amplify for tiny gradients; 1e-3 of the largest weight
// still catches a missing state (errors of order 1e-2 after one step).
TEST(Chunked, TrainingRunGivesTheSameWeights) {
  const ChunkCase c{Mechanism::polysketch_learned_local, 2 * kBlock, 6 * kBlock, 1};
  Model whole(config(c)), chunked(config(c));
  train::AdamW opt_w(whole.params(), {}), opt_c(chunked.params(), {});
  TrainCache cache;
  for (int step = 0; step < 4; ++step) {
    const auto b = batch_of(2, c.len, 100 + step);
    auto gw = whole.zero_grads(), gc = chunked.zero_grads();
    whole.forward(cache, b.tokens.data(), b.targets.data(), 2, c.len, step);
    whole.backward(cache, gw);
    train::chunked_forward_backward(chunked, cache, b.tokens.data(), b.targets.data(), 2, c.len, c.chunk, step, gc);
    opt_w.step(whole.params(), gw, 1e-2);
    opt_c.step(chunked.params(), gc, 1e-2);
  }
  const auto pw = whole.params(), pc = chunked.params();
  for (size_t p = 0; p < pw.size(); ++p)
    EXPECT_LT(max_rel_error(std::vector<double>(pc[p]->value.begin(), pc[p]->value.end()),
                            std::vector<double>(pw[p]->value.begin(), pw[p]->value.end()), 1e-30), 1e-3)
        << pw[p]->name;
}

TEST(Chunked, RefusesWhatCannotBeChunked) {
  const ModelT<double> softmax(config({Mechanism::softmax, kBlock, 6 * kBlock, 1}));
  TrainCacheT<double> cache;
  auto grads = softmax.zero_grads();
  const auto b = batch_of(1, 24, 1);
  expect_error([&] { train::chunked_forward_backward(softmax, cache, b.tokens.data(), b.targets.data(), 1, 24, 4, 0, grads); },
               "needs a sketch mechanism");
  EXPECT_NE(model::chunking_problem(config({Mechanism::polysketch, 6, 24, 1}), 24, 6, "training").find("whole number of blocks"), std::string::npos);
  EXPECT_NE(model::chunking_problem(config({Mechanism::polysketch, 4, 22, 1}), 22, 4, "training").find("context 22"), std::string::npos);
  EXPECT_EQ(model::chunking_problem(config({Mechanism::polysketch, 4, 24, 1}), 24, 8, "training"), "");
}

}  // namespace
}  // namespace polysketch::test
