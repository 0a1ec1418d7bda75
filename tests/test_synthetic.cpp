// Quality-study tools: the synthetic task generators (each example checked against its
// definition), their data directories, training and evaluation on scored positions only, and the
// sketch-error diagnostic (exact_forward against a naive double-precision reference).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "data/dataset.h"
#include "data/shards.h"
#include "data/synthetic.h"
#include "polysketch/model.h"
#include "reference.h"
#include "test_util.h"
#include "tiny_config.h"
#include "tiny_run.h"
#include "eval/evaluate.h"
#include "train/trainer.h"

namespace polysketch::test {
namespace {

using data::Task;

data::TaskExamples make(Task task, int64_t length, int64_t items, int64_t count, uint64_t seed = 7) {
  data::TaskOptions o;
  o.task = task;
  o.length = length;
  o.items = items;
  return data::generate_task(o, count, seed);
}

TEST(SyntheticTasks, SelectiveCopyingAnswersAreTheDataTokensInOrder) {
  const int64_t L = 64, K = 6;
  const auto ex = make(Task::selective_copying, L, K, 50);
  ASSERT_EQ(ex.example_tokens, L + 1);
  for (int64_t e = 0; e < 50; ++e) {
    const int32_t* t = ex.tokens.data() + e * (L + 1);
    const uint8_t* s = ex.scored.data() + e * (L + 1);
    const int64_t body = L - K;
    std::vector<int32_t> data;
    for (int64_t i = 0; i < body; ++i) {
      ASSERT_NE(t[i], 1);  // the separator only once
      if (t[i] != 0) data.push_back(t[i]);
    }
    ASSERT_EQ(t[body], 1);
    ASSERT_EQ(static_cast<int64_t>(data.size()), K);
    for (int64_t i = 0; i < K; ++i) {
      EXPECT_EQ(t[body + 1 + i], data[i]);
      EXPECT_GE(data[i], 2);
      EXPECT_LT(data[i], 18);
    }
    EXPECT_EQ(std::count(s, s + L + 1, 1), K);
    EXPECT_TRUE(std::all_of(s + body + 1, s + L + 1, [](uint8_t x) { return x == 1; }));
  }
}

TEST(SyntheticTasks, InductionHeadsAnswerFollowsTheEarlierTrigger) {
  const int64_t L = 40;
  const auto ex = make(Task::induction_heads, L, 0, 200);
  std::set<int64_t> positions;
  for (int64_t e = 0; e < 200; ++e) {
    const int32_t* t = ex.tokens.data() + e * (L + 1);
    const uint8_t* s = ex.scored.data() + e * (L + 1);
    ASSERT_EQ(std::count(t, t + L, 0), 2);  // the trigger: once in the text, once as the last input
    ASSERT_EQ(t[L - 1], 0);
    const int64_t at = std::find(t, t + L, 0) - t;
    ASSERT_LT(at + 1, L - 1);
    EXPECT_EQ(t[L], t[at + 1]);
    EXPECT_EQ(std::count(s, s + L + 1, 1), 1);
    EXPECT_EQ(s[L], 1);
    positions.insert(at);
  }
  EXPECT_GT(positions.size(), 20u);  // the trigger moves around
}

TEST(SyntheticTasks, MqarEveryKeyQueriedOnceAndAnsweredWithItsValue) {
  const int64_t L = 100, K = 12;
  const auto ex = make(Task::mqar, L, K, 100);
  for (int64_t e = 0; e < 100; ++e) {
    const int32_t* t = ex.tokens.data() + e * (L + 1);
    const uint8_t* s = ex.scored.data() + e * (L + 1);
    std::map<int32_t, int32_t> value;
    for (int64_t i = 0; i < K; ++i) {
      ASSERT_GE(t[2 * i], 1);
      ASSERT_LT(t[2 * i], 128);  // keys in [1, 128), values in [128, 256)
      ASSERT_GE(t[2 * i + 1], 128);
      ASSERT_TRUE(value.emplace(t[2 * i], t[2 * i + 1]).second) << "keys are distinct";
    }
    std::set<int32_t> queried;
    for (int64_t i = 2 * K; i <= L; ++i) {
      if (!s[i]) continue;
      ASSERT_TRUE(value.count(t[i - 1])) << "an answer follows a key";
      EXPECT_EQ(t[i], value[t[i - 1]]);
      queried.insert(t[i - 1]);
    }
    EXPECT_EQ(static_cast<int64_t>(queried.size()), K);
    EXPECT_EQ(std::count(s, s + L + 1, 1), K);
    EXPECT_EQ(std::count(s, s + 2 * K, 1), 0);  // the pairs themselves are not scored
  }
}

TEST(SyntheticTasks, DeterministicPerSeedAndValidated) {
  for (Task task : {Task::selective_copying, Task::induction_heads, Task::mqar}) {
    const int64_t items = task == Task::induction_heads ? 0 : 4;
    const auto a = make(task, 32, items, 20, 1), b = make(task, 32, items, 20, 1),
               c = make(task, 32, items, 20, 2);
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.scored, b.scored);
    EXPECT_NE(a.tokens, c.tokens);
  }
  EXPECT_THROW(data::parse_task("copying"), Error);
  EXPECT_THROW(make(Task::mqar, 30, 8, 1), Error);              // 4 * 8 - 1 > 30
  EXPECT_THROW(make(Task::mqar, 1000, 200, 1), Error);          // 127 distinct keys only
  EXPECT_THROW(make(Task::selective_copying, 20, 11, 1), Error);  // items > length / 2
  EXPECT_THROW(make(Task::induction_heads, 20, 3, 1), Error);   // no items
  EXPECT_THROW(make(Task::induction_heads, 3, 0, 1), Error);    // too short
}

TEST(SyntheticTasks, DataDirectoryRoundTripAndDamage) {
  TempDir dir;
  data::TaskOptions o;
  o.task = Task::mqar;
  o.length = 32;
  o.items = 4;
  data::write_task_dataset(dir.path(), o, 30, 5, 3);
  const auto d = data::load_dataset(dir.path());
  EXPECT_TRUE(d.synthetic());
  EXPECT_EQ(d.task, "mqar");
  EXPECT_EQ(d.example_tokens, 33);
  EXPECT_EQ(d.vocab, 256);
  EXPECT_EQ(d.train.size(), 30u * 33);
  EXPECT_EQ(d.val.size(), 5u * 33);
  EXPECT_TRUE(d.tokenizer_bytes.empty());
  EXPECT_EQ(d.train, make(Task::mqar, 32, 4, 30, 3).tokens);
  // A mask that scores no token of an example, or is the wrong length, is refused.
  std::vector<int32_t> mask(d.val_scored.begin(), d.val_scored.end());
  std::fill(mask.begin(), mask.begin() + 33, 0);
  data::write_shard(dir.file("val.scored.bin"), 2, mask);
  EXPECT_THROW(data::load_dataset(dir.path()), Error);
  mask.pop_back();
  data::write_shard(dir.file("val.scored.bin"), 2, mask);
  EXPECT_THROW(data::load_dataset(dir.path()), Error);
}

train::TrainOptions task_options(const std::string& data, const std::string& out, Mechanism m) {
  auto o = tiny_options(data, out);
  o.model.context = 24;
  o.model.attention.mechanism = m;
  o.batch = 16;
  o.steps = 120;
  o.lr = 1e-2;
  o.eval_batches = 8;
  return o;
}

// Selective copying of 2 tokens out of 24 with 4 data values: attention must find them. The
// unscored blanks carry no signal; a model that learned only the answers' marginal stays at
// 1/4 accuracy.
TEST(SyntheticTraining, LearnsSelectiveCopyingFromTheAnswersAlone) {
  TempDir dir;
  data::TaskOptions t;
  t.task = Task::selective_copying;
  t.length = 24;
  t.items = 2;
  t.vocab = 6;
  data::write_task_dataset(dir.file("data"), t, 2000, 64, 1);
  const auto r = train::run_training(task_options(dir.file("data"), dir.file("run"), Mechanism::softmax));
  EXPECT_NEAR(r.unigram_loss, std::log(4.0), 0.05);  // answers uniform over 4 values
  EXPECT_GT(r.val_accuracy, 0.6);
  EXPECT_LT(r.val_loss, r.unigram_loss - 0.3);
  // evaluate() scores exactly the answers: 2 per example, every validation example once (64,
  // fewer than the 16 x 8 asked for); an untrained model is near chance.
  const auto d = data::load_dataset(dir.file("data"));
  auto cfg = task_options("", "", Mechanism::softmax).model;
  cfg.vocab = d.vocab;
  Model fresh(cfg);
  const auto e = eval::evaluate(fresh, d, 24, 16, 8);
  EXPECT_EQ(e.scored, 128);
  EXPECT_LT(e.accuracy, 0.45);
  EXPECT_THROW(eval::evaluate(fresh, d, 23, 16, 8), Error);  // the task fixes the context
}

// Naive double-precision exact polynomial attention with separate LayerNorms for q and k.
std::vector<double> naive_exact(const std::vector<double>& q, const std::vector<double>& k,
                                const std::vector<double>& v, int64_t bh, int64_t n, int64_t h,
                                int p, bool causal, const std::vector<double>& sq,
                                const std::vector<double>& bq, const std::vector<double>& sk,
                                const std::vector<double>& bk) {
  auto ln = [&](const double* x, const std::vector<double>& s, const std::vector<double>& b) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < h; ++i) mean += x[i];
    mean /= static_cast<double>(h);
    for (int64_t i = 0; i < h; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= static_cast<double>(h);
    std::vector<double> y(static_cast<size_t>(h));
    for (int64_t i = 0; i < h; ++i) y[i] = (x[i] - mean) / std::sqrt(var + 1e-5) * s[i] + b[i];
    return y;
  };
  std::vector<double> out(q.size());
  for (int64_t hh = 0; hh < bh; ++hh)
    for (int64_t i = 0; i < n; ++i) {
      const auto qi = ln(&q[(hh * n + i) * h], sq, bq);
      double den = 1;
      std::vector<double> num(static_cast<size_t>(h), 0.0);
      for (int64_t j = 0; j < (causal ? i + 1 : n); ++j) {
        const auto kj = ln(&k[(hh * n + j) * h], sk, bk);
        double dot = 0;
        for (int64_t c = 0; c < h; ++c) dot += qi[c] * kj[c];
        const double w = std::pow(dot, p);
        den += w;
        for (int64_t c = 0; c < h; ++c) num[c] += w * v[(hh * n + j) * h + c];
      }
      for (int64_t c = 0; c < h; ++c) out[(hh * n + i) * h + c] = num[c] / den;
    }
  return out;
}

TEST(SketchError, ExactForwardIsExactPolynomialAttentionWithTheMechanismsLayerNorms) {
  const AttentionShape s{2, 2, 20, 8, 8};
  const auto q = random_vector(2 * 2 * 20 * 8, 1), k = random_vector(q.size(), 2),
             v = random_vector(q.size(), 3);
  for (Mechanism m : {Mechanism::polynomial, Mechanism::polysketch, Mechanism::polysketch_learned,
                      Mechanism::polysketch_local, Mechanism::polysketch_learned_local})
    for (bool causal : {true, false}) {
      AttentionConfig c;
      c.mechanism = m;
      c.causal = causal;
      c.r = 8;
      c.block = 4;
      AttentionT<double> att(c, 8, 8);
      perturb_params(att, 11);
      const auto& ps = att.params();
      const size_t kq = m == Mechanism::polysketch_local || m == Mechanism::polysketch_learned_local ? 2 : 0;
      const auto want = naive_exact(q, k, v, 4, 20, 8, 4, causal, ps[0].value, ps[1].value,
                                    ps[kq].value, ps[kq + 1].value);
      std::vector<double> got(q.size());
      att.exact_forward(s, q.data(), k.data(), v.data(), got.data());
      EXPECT_LT(max_rel_error(got, want), 1e-10) << mechanism_name(m) << " causal " << causal;
    }
  AttentionConfig sm;
  sm.mechanism = Mechanism::softmax;
  AttentionT<double> softmax(sm, 8, 8);
  std::vector<double> out(q.size());
  EXPECT_THROW(softmax.exact_forward(s, q.data(), k.data(), v.data(), out.data()), Error);
}

ModelConfig sketch_model(int p, int r) {
  ModelConfig c = tiny_config(Mechanism::polysketch, 64, 16);
  c.width = 32;
  c.attention.p = p;
  c.attention.r = r;
  return c;
}

TEST(SketchError, ZeroWhereTheSketchIsExactAndShrinksWithItsSize) {
  std::vector<int32_t> tokens(2 * 64);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7 + i / 5) % 40);
  // p = 2: phi is the identity, the block algorithm is exact up to rounding.
  ModelT<double> exact(sketch_model(2, 8));
  for (double e : exact.sketch_error(tokens.data(), 2, 64)) EXPECT_LT(e, 1e-12);
  // p = 4: the random sketch's error shrinks as r grows.
  auto mean = [&](int r) {
    ModelT<double> m(sketch_model(4, r));
    const auto e = m.sketch_error(tokens.data(), 2, 64);
    return (e[0] + e[1]) / 2;
  };
  // Measured: 0.90 at r = 8, 0.55 at 128, 0.38 at 512, 0.23 at 2048 (slower than 1/sqrt(r) at
  // this size: the error of <phi(q), phi(k)> is squared and summed against a small denominator).
  const double e8 = mean(8), e512 = mean(512);
  EXPECT_GT(e8, 0.5);
  EXPECT_LT(e512, e8 / 2);
  auto sm = sketch_model(4, 8);
  sm.attention.mechanism = Mechanism::softmax;
  Model softmax(sm);
  EXPECT_THROW(softmax.sketch_error(tokens.data(), 2, 64), Error);
}

}  // namespace
}  // namespace polysketch::test
