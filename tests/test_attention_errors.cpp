// Every invalid configuration or input raises polysketch::Error naming the offending value.
#include <gtest/gtest.h>

#include <functional>

#include "attention/normalizer.h"
#include "polysketch/attention.h"
#include "test_util.h"

namespace polysketch {
namespace {

using test::expect_error;

AttentionConfig sketch_config() {
  AttentionConfig c;
  c.mechanism = Mechanism::polysketch;
  return c;
}

TEST(AttentionErrors, InvalidConfigurations) {
  auto with = [](auto mutate) {
    auto c = sketch_config();
    mutate(c);
    return c;
  };
  expect_error([&] { Attention(with([](auto& c) { c.p = 3; }), 64, 64); }, "p=3");
  expect_error([&] {
    auto c = with([](auto& c) { c.p = 5; });
    c.mechanism = Mechanism::polynomial;
    Attention(c, 64, 64);
  }, "p=5");
  expect_error([&] { Attention(with([](auto& c) { c.p = 12; }), 64, 64); }, "p=12");
  expect_error([&] { Attention(with([](auto& c) { c.r = 0; }), 64, 64); }, "r=0");
  expect_error([&] { Attention(with([](auto& c) { c.r = -3; }), 64, 64); }, "r=-3");
  expect_error([&] { Attention(with([](auto& c) { c.block = 0; }), 64, 64); }, "got 0");
  expect_error([&] { Attention(with([](auto& c) { c.sketch = SketchType::hadamard; }), 48, 48); },
               "head_dim a power of two, got 48");
  expect_error([&] {
    Attention(with([](auto& c) {
                c.sketch = SketchType::hadamard;
                c.p = 8;
                c.r = 24;
              }),
              64, 64);
  }, "r=24");
  expect_error([&] { Attention(sketch_config(), 0, 64); }, "head_dim must be >= 1, got 0");
  expect_error([] { parse_mechanism("flash"); }, "'flash'");
  expect_error([] { parse_sketch_type("sparse"); }, "'sparse'");
}

TEST(AttentionErrors, InvalidShapes) {
  const Attention att(sketch_config(), 8, 8);
  std::vector<float> buf(1 << 12), out(1 << 12);
  auto fwd = [&](AttentionShape s) {
    att.forward(s, buf.data(), buf.data(), buf.data(), out.data(), nullptr);
  };
  expect_error([&] { fwd({1, 1, 0, 8, 8}); }, "n=0");
  expect_error([&] { fwd({1, 1, 4, 16, 8}); }, "head_dim=16");
  expect_error([&] { fwd({1, 1, 4, 8, 4}); }, "value_dim=4");
  expect_error([&] { fwd({1 << 20, 64, int64_t{1} << 30, 8, 8}); }, "GiB");
  AttentionSaved<float> wrong;
  expect_error([&] {
    att.backward({1, 1, 4, 8, 8}, buf.data(), buf.data(), buf.data(), out.data(), buf.data(),
                 wrong, out.data(), out.data(), out.data(), nullptr);
  }, "saved state");
  const std::vector<int32_t> decreasing{0, 1, 1, 0}, fine{0, 0, 1, 1};
  expect_error([&] { fwd({1, 1, 4, 8, 8, decreasing.data()}); }, "position 3");
  auto full = sketch_config();
  full.causal = false;
  expect_error([&] {
    Attention(full, 8, 8).forward({1, 1, 4, 8, 8, fine.data()}, buf.data(), buf.data(), buf.data(),
                                  out.data(), nullptr);
  }, "causal");
}

// The denominator 1 + sum_j w_ij is >= 1 in exact arithmetic; a sketch's rounding can make the
// sum negative (it reached -1 in a training run: den 0, inf outputs, NaN gradients). Clamped.
TEST(AttentionErrors, DenominatorNeverBelowOne) {
  const int64_t d = 2;
  const std::vector<float> num{0.5f, -0.25f, -1.0f,   // rounding pushed the sum to -1
                               0.5f, -0.25f, -3.5f,   // and further
                               0.5f, -0.25f, 1.0f};   // a normal row
  std::vector<float> out(3 * d), den(3);
  attention::normalize_rows(3, d, num.data(), out.data(), den.data());
  EXPECT_EQ(den[0], 1.0f);
  EXPECT_EQ(den[1], 1.0f);
  EXPECT_EQ(den[2], 2.0f);
  EXPECT_EQ(out[0], 0.5f);
  EXPECT_EQ(out[5], -0.125f);
}

}  // namespace
}  // namespace polysketch
