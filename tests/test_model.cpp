// Model layers and the whole model against central finite differences (double precision).
// Tolerance 1e-6 relative to the largest gradient entry, as in test_attention_grad.cpp: the step
// 1e-6 gives ~1e-10 rounding and ~1e-12 truncation error, while a wrong backward is off by O(1).
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <functional>
#include <thread>

#include "kernels/vec.h"
#include "model/layers.h"
#include "polysketch/model.h"
#include "reference.h"
#include "test_util.h"
#include "tiny_config.h"

namespace polysketch::test {
namespace {

double weighted_sum(const std::vector<double>& y, const std::vector<double>& w) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
  return s;
}

TEST(ModelLayers, GluBackward) {
  const int64_t n = 3, f = 5;
  auto u = random_vector(n * 2 * f, 1);
  const auto w = random_vector(n * f, 2);
  auto loss = [&] {
    std::vector<double> g(n * f);
    model::glu_forward(g.data(), u.data(), n, f);
    return weighted_sum(g, w);
  };
  std::vector<double> du(u.size());
  model::glu_backward(du.data(), w.data(), u.data(), n, f);
  EXPECT_LT(max_rel_error(du, numeric_grad(u, loss)), 1e-6);
}

TEST(ModelLayers, RopeBackwardAndNorm) {
  const int64_t heads = 2, len = 5, hd = 6;
  auto x = random_vector(heads * len * hd, 3);
  const auto w = random_vector(x.size(), 4);
  auto loss = [&] {
    auto y = x;
    model::rope_forward(y.data(), heads, len, hd);
    return weighted_sum(y, w);
  };
  auto dx = w;
  model::rope_backward(dx.data(), heads, len, hd);
  EXPECT_LT(max_rel_error(dx, numeric_grad(x, loss)), 1e-6);
  // A rotation: norms of each pair are preserved, position 0 unchanged.
  auto y = x;
  model::rope_forward(y.data(), heads, len, hd);
  for (int64_t i = 0; i < hd; ++i) EXPECT_DOUBLE_EQ(y[i], x[i]);
}

TEST(ModelLayers, CrossEntropyBackward) {
  const int64_t n = 4, v = 7;
  auto logits = random_vector(n * v, 5, 2.0);
  const std::vector<int32_t> targets{0, 6, 3, 3};
  auto loss = [&] { return model::cross_entropy<double>(logits.data(), targets.data(), n, v, nullptr); };
  std::vector<double> d(logits.size());
  model::cross_entropy(logits.data(), targets.data(), n, v, d.data());
  EXPECT_LT(max_rel_error(d, numeric_grad(logits, loss)), 1e-6);
}

TEST(ModelLayers, CrossEntropySkipsIgnoredTargets) {
  const int64_t n = 4, v = 7;
  auto logits = random_vector(n * v, 6, 2.0);
  const std::vector<int32_t> targets{0, kIgnoreTarget, 3, kIgnoreTarget};
  auto loss = [&] { return model::cross_entropy<double>(logits.data(), targets.data(), n, v, nullptr); };
  std::vector<double> d(logits.size(), 99.0);
  const double l = model::cross_entropy(logits.data(), targets.data(), n, v, d.data());
  EXPECT_LT(max_rel_error(d, numeric_grad(logits, loss)), 1e-6);
  for (int64_t i = 0; i < v; ++i) EXPECT_EQ(d[v + i], 0.0);  // ignored rows: no gradient
  // The mean over the scored rows alone: rows 0 and 2 as a batch of two.
  std::vector<double> two(logits.begin(), logits.begin() + v);
  two.insert(two.end(), logits.begin() + 2 * v, logits.begin() + 3 * v);
  const std::vector<int32_t> t2{0, 3};
  EXPECT_NEAR(l, model::cross_entropy<double>(two.data(), t2.data(), 2, v, nullptr), 1e-12);
  const std::vector<int32_t> none(n, kIgnoreTarget);
  EXPECT_THROW(model::cross_entropy<double>(logits.data(), none.data(), n, v, nullptr), Error);
}

TEST(ModelLayers, LayerNormAndGeluBackward) {
  const int64_t rows = 3, dim = 6;
  auto x = random_vector(rows * dim, 6), scale = random_vector(dim, 7), bias = random_vector(dim, 8);
  const auto w = random_vector(rows * dim, 9);
  auto loss = [&] {
    std::vector<double> y(x.size());
    kernels::layernorm_forward(rows, dim, x.data(), scale.data(), bias.data(), y.data());
    return weighted_sum(y, w);
  };
  std::vector<double> dx(x.size()), ds(dim, 0.0), db(dim, 0.0);
  kernels::layernorm_backward(rows, dim, x.data(), scale.data(), w.data(), dx.data(), ds.data(),
                              db.data());
  EXPECT_LT(max_rel_error(dx, numeric_grad(x, loss)), 1e-6);
  EXPECT_LT(max_rel_error(ds, numeric_grad(scale, loss)), 1e-6);
  EXPECT_LT(max_rel_error(db, numeric_grad(bias, loss)), 1e-6);
  auto gl = [&] {
    std::vector<double> y(x.size());
    kernels::gelu_forward<double>(static_cast<int64_t>(x.size()), x.data(), y.data());
    return weighted_sum(y, w);
  };
  std::vector<double> dg(x.size());
  kernels::gelu_backward<double>(static_cast<int64_t>(x.size()), x.data(), w.data(), dg.data());
  EXPECT_LT(max_rel_error(dg, numeric_grad(x, gl)), 1e-6);
  // The fast path from the saved tanh term equals the recomputing one (same formula: exactly).
  std::vector<double> y(x.size()), t(x.size()), dg_saved(x.size());
  kernels::gelu_forward<double>(static_cast<int64_t>(x.size()), x.data(), y.data(), t.data());
  kernels::gelu_backward_saved<double>(static_cast<int64_t>(x.size()), x.data(), t.data(),
                                       w.data(), dg_saved.data());
  EXPECT_EQ(dg_saved, dg);
}

// log_sum_exp: log 2 + 1000 for two logits of 1000 (exp(1000) overflows a double: the shift by
// the largest must happen), and a plain sum of exponentials where that is finite (1e-12).
TEST(ModelLayers, LogSumExpIsShifted) {
  const std::vector<float> big{1000.f, 1000.f};
  EXPECT_NEAR(kernels::log_sum_exp(2, big.data()), 1000.0 + std::log(2.0), 1e-9);
  const std::vector<double> x{-1.5, 0.25, 3.0, -7.0};
  double sum = 0;
  for (double v : x) sum += std::exp(v);
  EXPECT_NEAR(kernels::log_sum_exp(4, x.data()), std::log(sum), 1e-12);
}

// The float GELU (vectorised; AVX-512: reciprocal estimate + Newton step for tanh's division)
// against the double one, from deep negative (y -> -0) through 0 to saturation (y -> x), with a
// length that leaves a tail: absolute error <= 2e-6 (1 + |x|) (float rounding of x and x^3 in the
// argument dominates), and the saved tanh term within 1e-6.
TEST(ModelLayers, FloatGeluMatchesDouble) {
  std::vector<double> xd;
  for (double v = -12.0; v <= 12.0; v += 0.0137) xd.push_back(v);
  xd.insert(xd.end(), {0.0, -0.0, 1e-8, -1e-8, 40.0, -40.0, 88.0, -88.0, 1e3});
  const auto n = static_cast<int64_t>(xd.size());
  ASSERT_NE(n % 16, 0);
  std::vector<double> yd(xd.size()), td(xd.size());
  kernels::gelu_forward<double>(n, xd.data(), yd.data(), td.data());
  const std::vector<float> x(xd.begin(), xd.end());
  std::vector<float> y(x.size()), t(x.size()), y_only(x.size());
  kernels::gelu_forward<float>(n, x.data(), y.data(), t.data());
  kernels::gelu_forward<float>(n, x.data(), y_only.data());
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(y[i], yd[i], 2e-6 * (1 + std::abs(xd[i]))) << xd[i];
    EXPECT_NEAR(t[i], td[i], 1e-6) << xd[i];
    EXPECT_EQ(y_only[i], y[i]) << xd[i];
  }
}

ModelConfig grad_config(Mechanism m) {  // smaller still: finite differences over every weight
  ModelConfig c = tiny_config(m, 6, 2);
  c.vocab = 11;
  c.width = 8;
  c.attention.threads = 1;
  return c;
}

class ModelGrad : public ::testing::TestWithParam<Mechanism> {};

TEST_P(ModelGrad, WholeModelMatchesFiniteDifferences) {
  ModelT<double> model(grad_config(GetParam()));
  const int64_t batch = 2, len = 5;
  const std::vector<int32_t> tokens{1, 4, 2, 9, 10, 0, 3, 3, 7, 5};
  // Two positions unscored, as a synthetic task's are.
  const std::vector<int32_t> targets{4, kIgnoreTarget, 9, 10, 1, 3, 3, kIgnoreTarget, 5, 8};
  auto grads = model.zero_grads();
  TrainCacheT<double> cache;
  model.forward(cache, tokens.data(), targets.data(), batch, len);
  model.backward(cache, grads);
  auto loss = [&] { return model.loss(tokens.data(), targets.data(), batch, len); };
  auto params = model.params();
  for (size_t p = 0; p < params.size(); ++p)
    EXPECT_LT(max_rel_error(grads[p], numeric_grad(params[p]->value, loss), 1e-8), 1e-6)
        << params[p]->name;
}

// Document masking through the whole model: gradients by finite differences, and a document's
// loss independent of the tokens of the documents before it (and not without the mask).
TEST_P(ModelGrad, DocumentsMatchFiniteDifferencesAndIsolate) {
  ModelT<double> model(grad_config(GetParam()));
  const int64_t batch = 2, len = 5;
  const std::vector<int32_t> tokens{1, 4, 2, 9, 10, 0, 3, 3, 7, 5};
  const std::vector<int32_t> targets{4, kIgnoreTarget, 9, 10, 1, 3, 3, kIgnoreTarget, 5, 8};
  const std::vector<int32_t> docs{0, 0, 1, 1, 2, 0, 1, 1, 1, 1};  // starts inside blocks of 2, adjacent
  auto grads = model.zero_grads();
  TrainCacheT<double> cache;
  model.forward(cache, tokens.data(), targets.data(), batch, len, 0, nullptr, docs.data());
  model.backward(cache, grads);
  auto loss = [&] { return model.score(tokens.data(), targets.data(), batch, len, nullptr, false, docs.data()).loss; };
  auto params = model.params();
  for (size_t p = 0; p < params.size(); ++p)
    EXPECT_LT(max_rel_error(grads[p], numeric_grad(params[p]->value, loss), 1e-8), 1e-6)
        << params[p]->name;

  // Scored: the second document of a sequence of 6 (starting at 3, inside a block of 2).
  const std::vector<int32_t> ids{0, 0, 0, 1, 1, 1};
  const std::vector<int32_t> y{kIgnoreTarget, kIgnoreTarget, kIgnoreTarget, 5, 6, 7};
  std::vector<int32_t> x{1, 2, 3, 4, 5, 6};
  auto doc_loss = [&](const int32_t* d) { return model.score(x.data(), y.data(), 1, 6, nullptr, false, d).loss; };
  const double masked = doc_loss(ids.data()), unmasked = doc_loss(nullptr);
  x[0] = 9;
  x[2] = 0;
  EXPECT_NEAR(doc_loss(ids.data()), masked, 1e-12);
  EXPECT_GT(std::abs(doc_loss(nullptr) - unmasked), 1e-9);
}

// backward's `ready` reports every gradient tensor exactly once, after its last update: what
// the trainer relies on to sum gradients over ranks while backward runs.
TEST_P(ModelGrad, ReadyReportsEveryTensorOnceWhenFinal) {
  ModelT<double> model(grad_config(GetParam()));
  const std::vector<int32_t> tokens{1, 4, 2, 9, 10, 0, 3, 3, 7, 5};
  const std::vector<int32_t> targets{4, 2, 9, 10, 1, 3, 3, 6, 5, 8};
  auto grads = model.zero_grads();
  TrainCacheT<double> cache;
  model.forward(cache, tokens.data(), targets.data(), 2, 5);
  std::vector<int> reported(grads.size(), 0);
  std::vector<std::vector<double>> at_report(grads.size());
  model.backward(cache, grads, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      ++reported[i];
      at_report[i] = grads[i];
    }
  });
  const auto params = model.params();
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_EQ(reported[i], 1) << params[i]->name;
    EXPECT_EQ(at_report[i], grads[i]) << params[i]->name << " changed after it was reported";
  }
}

// The model is const: two threads training on one model at once, each with its own cache and
// gradients (and dropout), get exactly the loss and gradients of running one after the other.
// Run under the tsan preset too.
TEST_P(ModelGrad, TwoThreadsTrainOnOneModelAsInTurn) {
  auto cfg = grad_config(GetParam());
  cfg.dropout = 0.2;
  const ModelT<double> model(cfg);
  const std::vector<int32_t> tokens[2] = {{1, 4, 2, 9, 10, 0, 3, 3, 7, 5}, {7, 7, 1, 0, 2, 8, 9, 4, 4, 6}};
  const std::vector<int32_t> targets[2] = {{4, 2, 9, 10, 1, 3, 3, 6, 5, 8}, {7, 1, 0, 2, 8, 9, 4, 4, 6, 1}};
  auto train = [&](int s, double& loss, std::vector<std::vector<double>>& grads) {
    omp_set_num_threads(1);
    TrainCacheT<double> cache;
    grads = model.zero_grads();
    loss = model.forward(cache, tokens[s].data(), targets[s].data(), 2, 5, 11 + s);
    model.backward(cache, grads);
  };
  double want_loss[2], got_loss[2];
  std::vector<std::vector<double>> want[2], got[2];
  std::thread([&] {
    for (int s = 0; s < 2; ++s) train(s, want_loss[s], want[s]);
  }).join();
  std::thread a(train, 0, std::ref(got_loss[0]), std::ref(got[0]));
  std::thread b(train, 1, std::ref(got_loss[1]), std::ref(got[1]));
  a.join();
  b.join();
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(got_loss[s], want_loss[s]);
    EXPECT_EQ(got[s], want[s]);  // bit for bit
  }
}

INSTANTIATE_TEST_SUITE_P(Mechanisms, ModelGrad,
                         ::testing::Values(Mechanism::softmax, Mechanism::polysketch,
                                           Mechanism::polysketch_learned_local),
                         [](const auto& info) {
                           auto s = mechanism_name(info.param);
                           for (auto& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

TEST(ModelConfig, ParameterCountIsExact) {
  for (auto m : all_mechanisms())
    for (int levels : {1, 3}) {
      auto c = grad_config(m);
      c.attention.sketch_levels = levels;
      c.attention.hidden_mult = 3;
      EXPECT_EQ(c.parameter_count(), Model(c).parameter_count()) << mechanism_name(m) << " levels " << levels;
    }
}

TEST(ModelConfigJson, RoundTripAndErrors) {
  auto c = grad_config(Mechanism::polysketch_local);
  c.dropout = 0.1;
  const auto back = ModelConfig::from_json(c.to_json(), "config.json");
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_THROW(ModelConfig::from_json("{\"widht\": 3}", "x"), Error);
  EXPECT_THROW(ModelConfig::from_json("{\"width\": 10, \"heads\": 3}", "x"), Error);
  EXPECT_THROW(ModelConfig::from_json("{\"mechanism\": \"flash\"}", "x"), Error);
  EXPECT_THROW(ModelConfig::from_json("[1,2", "x"), Error);
  EXPECT_THROW(ModelConfig::from_json("{\"width\": \"big\"}", "x"), Error);
}

TEST(ModelErrors, TokensOutsideVocabulary) {
  Model model(grad_config(Mechanism::softmax));
  const std::vector<int32_t> tokens{1, 11}, targets{2, 3};
  EXPECT_THROW(model.loss(tokens.data(), targets.data(), 1, 2), Error);
}

}  // namespace
}  // namespace polysketch::test
