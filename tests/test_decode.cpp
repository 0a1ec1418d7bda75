// Decoding: prefill + token-by-token steps give the logits of one full forward pass, for every
// mechanism and prompt lengths around the block size; batched steps equal single ones; snapshots
// round-trip and damaged or foreign ones are rejected; the sketch state has a constant size.
#include <gtest/gtest.h>

#include <cstring>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "attention/decode.h"
#include "kernels/rng.h"
#include "polysketch/decode.h"
#include "polysketch/model.h"
#include "test_util.h"
#include "tiny_config.h"
#include "util/atomic_file.h"

namespace polysketch::test {
namespace {

constexpr int64_t kBlock = 4;

ModelConfig config_for(Mechanism m, uint64_t seed = 3) {
  ModelConfig c = tiny_config(m, 64, kBlock);
  c.seed = seed;
  return c;
}

std::vector<int32_t> random_tokens(int64_t n, uint64_t seed) {
  kernels::Rng rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng.below(40));
  return t;
}

// Every parameter nudged off its initial value so LayerNorms and biases are not trivial.
void perturb(Model& model) {
  kernels::Rng rng(99);
  for (auto* p : model.params())
    for (auto& v : p->value) v += static_cast<float>(0.05 * rng.normal());
}

// Float32 against float32: the two paths sum in different orders (z over whole blocks vs the
// block scan's tiles), so agreement is to float rounding of O(1) logits.
void expect_close(const float* got, const float* want, int64_t n, const std::string& what) {
  float scale = 1;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::abs(want[i]));
  for (int64_t i = 0; i < n; ++i)
    ASSERT_NEAR(got[i], want[i], 2e-4f * scale) << what << " logit " << i;
}

class DecodeParity : public ::testing::TestWithParam<Mechanism> {};

TEST_P(DecodeParity, PrefillThenStepsMatchOneFullForward) {
  const auto cfg = config_for(GetParam());
  Model model(cfg);
  perturb(model);
  const int64_t total = 3 * kBlock + 7;  // steps cross several block boundaries
  const auto tokens = random_tokens(total, 5);
  const auto full = model.logits(tokens.data(), 1, total);
  const int64_t v = cfg.vocab;
  for (int64_t prompt : {int64_t{1}, kBlock - 1, kBlock, 2 * kBlock, 2 * kBlock + 3}) {
    DecodeState state(cfg);
    auto logits = model.prefill(state, tokens.data(), prompt);
    expect_close(logits.data(), &full[(prompt - 1) * v], v, "prefill " + std::to_string(prompt));
    DecodeState* one = &state;
    for (int64_t t = prompt; t < total; ++t) {
      logits = model.step(&one, &tokens[t], 1);
      expect_close(logits.data(), &full[t * v], v,
                   "prompt " + std::to_string(prompt) + " step at " + std::to_string(t));
    }
    EXPECT_EQ(state.position(), total);
  }
}

TEST_P(DecodeParity, ChunkedAndContinuedPrefillsMatchOneFullForward) {
  const auto cfg = config_for(GetParam());
  Model model(cfg);
  perturb(model);
  const int64_t total = 5 * kBlock + 3;
  const auto tokens = random_tokens(total, 6);
  const auto full = model.logits(tokens.data(), 1, total);
  const int64_t v = cfg.vocab;
  // One prompt in chunks of one block, of two blocks, and of 3 (rounded down to 2).
  for (int64_t chunk : {kBlock, 2 * kBlock, int64_t{3}}) {
    DecodeState state(cfg);
    state.prefill_chunk = chunk;
    const auto logits = model.prefill(state, tokens.data(), total);
    expect_close(logits.data(), &full[(total - 1) * v], v, "chunk " + std::to_string(chunk));
  }
  // A prompt given in pieces that end inside blocks: each continues the state.
  DecodeState state(cfg);
  state.prefill_chunk = kBlock;
  int64_t at = 0;
  for (int64_t piece : {kBlock + 1, 2 * kBlock + 2, kBlock, int64_t{2}}) {
    const auto logits = model.prefill(state, tokens.data() + at, piece);
    at += piece;
    expect_close(logits.data(), &full[(at - 1) * v], v, "after " + std::to_string(at));
  }
  DecodeState* one = &state;
  for (; at < total; ++at) {
    const auto logits = model.step(&one, &tokens[at], 1);
    expect_close(logits.data(), &full[at * v], v, "step at " + std::to_string(at));
  }
}

TEST_P(DecodeParity, BatchedStepsEqualSingleStepsAtMixedPositions) {
  const auto cfg = config_for(GetParam());
  Model model(cfg);
  perturb(model);
  const auto tokens = random_tokens(40, 8);
  const std::vector<int64_t> prompts{1, kBlock, 2 * kBlock + 1};
  std::vector<DecodeState> batched, single;
  for (int64_t p : prompts) {
    batched.emplace_back(cfg);
    single.emplace_back(cfg);
    model.prefill(batched.back(), tokens.data(), p);
    model.prefill(single.back(), tokens.data(), p);
  }
  std::vector<DecodeState*> ptrs;
  for (auto& s : batched) ptrs.push_back(&s);
  for (int step = 0; step < 6; ++step) {
    std::vector<int32_t> next;
    for (size_t b = 0; b < prompts.size(); ++b) next.push_back(tokens[static_cast<size_t>(prompts[b] + step)]);
    const auto got = model.step(ptrs.data(), next.data(), static_cast<int64_t>(ptrs.size()));
    for (size_t b = 0; b < prompts.size(); ++b) {
      DecodeState* one = &single[b];
      const auto want = model.step(&one, &next[b], 1);
      expect_close(&got[b * cfg.vocab], want.data(), cfg.vocab, "sequence " + std::to_string(b));
    }
  }
}

// prepare_decoding: steps from the packed weights give the same logits bit for bit (3 sequences
// at different positions, batched); weights changed through params() afterwards are the ones
// step uses (the packed copies are dropped), and preparing again packs the new ones.
TEST_P(DecodeParity, PreparedDecodingIsBitForBitTheSame) {
  const auto cfg = config_for(GetParam());
  Model model(cfg);
  perturb(model);
  const auto tokens = random_tokens(40, 9);
  auto decode = [&] {
    std::vector<DecodeState> states;
    std::vector<DecodeState*> ptrs;
    for (int64_t p : {int64_t{1}, kBlock, 2 * kBlock + 1}) {
      states.emplace_back(cfg);
      model.prefill(states.back(), tokens.data(), p);
    }
    for (auto& st : states) ptrs.push_back(&st);
    std::vector<float> all;
    for (int step = 0; step < 2 * kBlock; ++step) {
      const std::vector<int32_t> next{tokens[10 + step], tokens[20 + step], tokens[30 + step]};
      const auto logits = model.step(ptrs.data(), next.data(), 3);
      all.insert(all.end(), logits.begin(), logits.end());
    }
    return all;
  };
  const auto plain = decode();
  model.prepare_decoding();
  const auto packed = decode();
  ASSERT_EQ(plain.size(), packed.size());
  EXPECT_EQ(0, std::memcmp(plain.data(), packed.data(), plain.size() * sizeof(float)));
  for (auto* p : model.params())
    for (auto& v : p->value) v *= 1.01f;
  const auto changed = decode();
  EXPECT_NE(0, std::memcmp(changed.data(), plain.data(), plain.size() * sizeof(float)));
  model.prepare_decoding();
  const auto changed_packed = decode();
  EXPECT_EQ(0, std::memcmp(changed.data(), changed_packed.data(), changed.size() * sizeof(float)));
}

// Two threads decoding two sequences on one model at once (prefill and step are const: they read
// the weights and write only their states and working memory) give exactly the tokens and
// logits of decoding them in turn.
// Run under the tsan preset too (ctest --preset tsan), which checks for data races.
TEST_P(DecodeParity, TwoThreadsDecodeTwoSequencesOnOneModelAsInTurn) {
  const auto cfg = config_for(GetParam());
  Model model(cfg);
  perturb(model);
  const std::vector<std::vector<int32_t>> prompts{random_tokens(9, 5), random_tokens(14, 6)};
  constexpr int kSteps = 24;
  // Greedy decoding of one sequence: its tokens and every step's logits.
  auto decode = [&](size_t which, std::vector<int32_t>& tokens, std::vector<float>& logits) {
    omp_set_num_threads(1);
    DecodeState state(cfg);
    const Model& shared = model;
    auto last = shared.prefill(state, prompts[which].data(), static_cast<int64_t>(prompts[which].size()));
    for (int i = 0; i < kSteps; ++i) {
      const int32_t t = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
      tokens.push_back(t);
      DecodeState* one = &state;
      last = shared.step(&one, &t, 1);
      logits.insert(logits.end(), last.begin(), last.end());
    }
  };
  std::vector<int32_t> want_tokens[2], got_tokens[2];
  std::vector<float> want_logits[2], got_logits[2];
  std::thread([&] {  // in turn, on a thread of its own (its OpenMP setting stays its own)
    for (size_t s = 0; s < 2; ++s) decode(s, want_tokens[s], want_logits[s]);
  }).join();
  // Now both at once, prefill included: each thread's working memory is its own.
  auto run = [&](size_t s) { decode(s, got_tokens[s], got_logits[s]); };
  std::thread a(run, 0), b(run, 1);
  a.join();
  b.join();
  for (size_t s = 0; s < 2; ++s) {
    EXPECT_EQ(got_tokens[s], want_tokens[s]) << "sequence " << s;
    EXPECT_EQ(got_logits[s], want_logits[s]) << "sequence " << s;  // bit for bit
  }
}

INSTANTIATE_TEST_SUITE_P(Mechanisms, DecodeParity, ::testing::ValuesIn(all_mechanisms()),
                         [](const auto& info) {
                           auto name = mechanism_name(info.param);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// The head state stores values of the head's width: an attention whose values are narrower is
// refused by every decoding entry point, not misread.
TEST(DecodeState, ValueWidthOtherThanHeadWidthIsRefused) {
  for (auto m : all_mechanisms()) {
    AttentionConfig ac;
    ac.mechanism = m;
    ac.r = 4;
    ac.block = 4;
    const AttentionT<float> att(ac, 8, 4);
    attention::HeadState<float> s;
    attention::init_head_state(ac, 8, s);
    std::vector<float> x(64, 0.5f), out(64), scratch;
    EXPECT_THROW(attention::step_head(att, 8, s, x.data(), x.data(), x.data(), out.data(), scratch), Error)
        << mechanism_name(m);
    EXPECT_THROW(attention::append_tokens(att, 8, s, 4, x.data(), x.data()), Error) << mechanism_name(m);
  }
}

TEST(DecodeState, SketchStateSizeIsConstantKvCacheGrows) {
  for (Mechanism m : {Mechanism::polysketch, Mechanism::polysketch_learned_local, Mechanism::softmax}) {
    const auto cfg = config_for(m);
    Model model(cfg);
    const auto tokens = random_tokens(3 * cfg.context, 2);
    DecodeState a(cfg), b(cfg);
    model.prefill(a, tokens.data(), 5);
    model.prefill(b, tokens.data(), 2 * cfg.context);  // past the training context
    DecodeState* one = &b;
    for (int i = 0; i < 3; ++i) model.step(&one, &tokens[static_cast<size_t>(i)], 1);
    if (m == Mechanism::softmax)
      EXPECT_GT(b.bytes(), a.bytes());
    else
      EXPECT_EQ(b.bytes(), a.bytes()) << mechanism_name(m);
  }
  auto cfg = config_for(Mechanism::softmax);
  Model model(cfg);
  DecodeState s(cfg);
  s.max_bytes = 1024;
  const auto tokens = random_tokens(8, 1);
  expect_error([&] { model.prefill(s, tokens.data(), 8); }, "KV cache");
}

// A budget shared by states counts each for as long as it lives (forks too, moves once),
// refuses what does not fit, and lets an eviction hook make room.
TEST(DecodeBudget, CountsStatesForksAndGrowth) {
  const auto sketch = config_for(Mechanism::polysketch_learned_local);
  const int64_t one = DecodeState(sketch).bytes();
  auto budget = std::make_shared<DecodeBudget>(2 * one);
  {
    DecodeState a(sketch, budget);
    DecodeState b(a);  // a fork
    EXPECT_EQ(budget->used(), 2 * one);
    expect_error([&] { DecodeState c(sketch, budget); }, "budget exceeded");
    expect_error([&] { DecodeState c(a); }, "budget exceeded");
    DecodeState moved(std::move(b));
    EXPECT_EQ(budget->used(), 2 * one);
    moved = DecodeState(sketch);  // the budgeted state it held is released
    EXPECT_EQ(budget->used(), one);
  }
  EXPECT_EQ(budget->used(), 0);

  // A KV cache grows against the budget; the hook evicts another sequence to make room.
  const auto kv = config_for(Mechanism::softmax);
  Model model(kv);
  const int64_t per_token = 2 * 4 * kv.layers * kv.width;
  auto shared = std::make_shared<DecodeBudget>(20 * per_token);
  const auto tokens = random_tokens(16, 3);
  auto old = std::make_unique<DecodeState>(kv, shared);
  model.prefill(*old, tokens.data(), 12);
  EXPECT_EQ(shared->used(), 12 * per_token);
  DecodeState next(kv, shared);
  expect_error([&] { model.prefill(next, tokens.data(), 10); }, "budget exceeded");
  EXPECT_EQ(shared->used(), 12 * per_token);  // nothing kept from the refused prefill
  int evictions = 0;
  shared->on_exceeded = [&](int64_t missing) {
    EXPECT_GT(missing, 0);
    if (!old) return false;
    old.reset();
    ++evictions;
    return true;
  };
  const auto logits = model.prefill(next, tokens.data(), 10);
  EXPECT_EQ(evictions, 1);
  EXPECT_EQ(shared->used(), 10 * per_token);
  DecodeState fresh(kv);
  EXPECT_EQ(model.prefill(fresh, tokens.data(), 10), logits);  // the budget changes no result
}

TEST(DecodeState, SnapshotRoundTripAndRejection) {
  TempDir dir;
  const auto cfg = config_for(Mechanism::polysketch_learned_local);
  Model model(cfg);
  perturb(model);
  const auto tokens = random_tokens(20, 4);
  DecodeState live(cfg);
  model.prefill(live, tokens.data(), 2 * kBlock + 2);
  const auto path = dir.file("state.bin");
  live.save(path, model.identity());
  auto loaded = DecodeState::load(path, cfg, model.identity());
  EXPECT_EQ(loaded.position(), live.position());
  DecodeState* a = &live;
  DecodeState* b = &loaded;
  for (int t = 10; t < 16; ++t)
    EXPECT_EQ(model.step(&a, &tokens[t], 1), model.step(&b, &tokens[t], 1));  // identical
  // The file's size does not depend on how long the prompt was.
  DecodeState longer(cfg);
  model.prefill(longer, tokens.data(), 19);
  longer.save(dir.file("long.bin"), model.identity());
  EXPECT_EQ(util::read_file(path).size(), util::read_file(dir.file("long.bin")).size());

  const std::string bytes = util::read_file(path);
  auto flipped = bytes;
  flipped[bytes.size() / 2] ^= 1;
  util::write_file_atomic(dir.file("flip.bin"), flipped);
  expect_error([&] { DecodeState::load(dir.file("flip.bin"), cfg, model.identity()); }, "checksum");
  util::write_file_atomic(dir.file("short.bin"), bytes.substr(0, bytes.size() - 9));
  expect_error([&] { DecodeState::load(dir.file("short.bin"), cfg, model.identity()); }, "corrupt or truncated");
  util::write_file_atomic(dir.file("junk.bin"), "hello");
  expect_error([&] { DecodeState::load(dir.file("junk.bin"), cfg, model.identity()); }, "not a polysketch decoding state");
  Model other(config_for(Mechanism::polysketch_learned_local, 4));
  expect_error([&] { DecodeState::load(path, cfg, other.identity()); }, "another model");
  // A state cannot be used with a model of another configuration.
  auto cfg2 = config_for(Mechanism::polysketch);
  Model model2(cfg2);
  DecodeState* wrong = &live;
  expect_error([&] { model2.step(&wrong, &tokens[0], 1); }, "different model configuration");
}

}  // namespace
}  // namespace polysketch::test
