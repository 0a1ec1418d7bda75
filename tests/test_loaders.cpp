// Hardening of the file loaders and the checkpoint directory: seeded mutation fuzzing of
// safetensors and config.json (every damaged input is either a valid file or a polysketch::Error,
// never a crash, another exception or garbage), the damage classes found by hand, and the
// checkpoint directory's guarantees (same-step re-save, pruning, non-finite weights, lock,
// metrics repair).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "kernels/rng.h"
#include "model/config_fields.h"
#include "model/safetensors.h"
#include "polysketch/model.h"
#include "test_util.h"
#include "tiny_config.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/run_dir.h"
#include "util/atomic_file.h"

namespace polysketch::test {
namespace {

namespace fs = std::filesystem;

ModelConfig one_layer_config() {
  ModelConfig cfg = tiny_config(ModelConfig{}.attention.mechanism, 8);
  cfg.layers = 1;
  return cfg;
}

std::string sample_safetensors() {
  model::Tensor a{{3, 4}, std::vector<float>(12)}, b{{5}, std::vector<float>(5)};
  for (size_t i = 0; i < a.data.size(); ++i) a.data[i] = 0.25f * static_cast<float>(i) - 1;
  for (size_t i = 0; i < b.data.size(); ++i) b.data[i] = static_cast<float>(i * i);
  return model::safetensors_encode({{"a", &a}, {"b", &b}}, {{"format", "pt"}});
}

uint64_t header_length(const std::string& bytes) {
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  return n;
}

// One random damage: a flipped bit, a random byte, a deletion, an insertion, a truncation, or a
// changed header length.
std::string mutate(std::string s, kernels::Rng& rng) {
  const auto at = [&] { return static_cast<size_t>(rng.below(s.size())); };
  switch (rng.below(6)) {
    case 0: s[at()] ^= static_cast<char>(1u << rng.below(8)); break;
    case 1: s[at()] = static_cast<char>(rng.below(256)); break;
    case 2: s.erase(at(), 1 + rng.below(4)); break;
    case 3: s.insert(at(), std::string(1 + rng.below(4), static_cast<char>(rng.below(256)))); break;
    case 4: s.resize(at()); break;
    default: {
      uint64_t n = header_length(s) + rng.below(17) - 8;
      std::memcpy(s.data(), &n, 8);
    }
  }
  return s;
}

TEST(Safetensors, RoundTripCarriesChecksums) {
  const auto bytes = sample_safetensors();
  const auto t = model::safetensors_decode(bytes, "f");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t.at("a").shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(t.at("b").data[4], 16.f);
  EXPECT_NE(bytes.find("\"crc32.a\""), std::string::npos);
}

TEST(Safetensors, DamageFoundByHandIsRejected) {
  const auto good = sample_safetensors();
  const uint64_t n = header_length(good);
  // A flipped byte in a tensor's data: named by the checksum.
  auto flipped = good;
  flipped[8 + n + 20] ^= 0x10;  // inside "a" (bytes 0..47)
  expect_error([&] { model::safetensors_decode(flipped, "f"); }, "tensor 'a' fails its checksum");
  // Header length n - 1 (the data seen shifted by a byte).
  auto shorter = good;
  const uint64_t m = n - 1;
  std::memcpy(shorter.data(), &m, 8);
  EXPECT_THROW(model::safetensors_decode(shorter, "f"), Error);
  // Offsets shifted by 4 bytes (a gap at the start), and overlapping tensors.
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"[0,48]", "[4,52]"}, {"[48,68]", "[44,64]"}}) {
    auto header = good.substr(8, n);
    const auto pos = header.find(from);
    ASSERT_NE(pos, std::string::npos) << header;
    header.replace(pos, from.size(), to);
    const auto bad = good.substr(0, 8) + header + good.substr(8 + n);
    EXPECT_THROW(model::safetensors_decode(bad, "f"), Error) << to;
  }
  // An absurd header length.
  auto huge = good;
  const uint64_t big = uint64_t{1} << 62;
  std::memcpy(huge.data(), &big, 8);
  expect_error([&] { model::safetensors_decode(huge, "f"); }, "header");
}

TEST(Safetensors, SeededMutationFuzz) {
  const auto good = sample_safetensors();
  const uint64_t data_start = 8 + header_length(good);
  auto rng = kernels::Rng::derive(2026, 11, 24);
  int rejected = 0;
  for (int i = 0; i < 600; ++i) {
    const auto bad = mutate(good, rng);
    if (bad == good) continue;
    try {
      const auto t = model::safetensors_decode(bad, "f");
      // Accepted: only a harmless header change (e.g. padding or metadata), never other data.
      EXPECT_EQ(bad.substr(bad.size() - (good.size() - data_start)), good.substr(data_start)) << i;
      EXPECT_EQ(t.at("a").data, model::safetensors_decode(good, "f").at("a").data) << i;
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "case " << i << ": not a polysketch::Error: " << e.what();
    }
  }
  EXPECT_GT(rejected, 500);
}

TEST(ConfigJson, InexactOrMissingFieldsAreRejected) {
  const std::string good = one_layer_config().to_json();
  EXPECT_EQ(ModelConfig::from_json(good, "c").to_json(), good);
  auto replaced = [&](const std::string& from, const std::string& to) {
    auto s = good;
    const auto pos = s.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    return s.replace(pos, from.size(), to);
  };
  expect_error([&] { ModelConfig::from_json(replaced("\"layers\": 1", "\"layers\": 2.5"), "c"); }, "'layers' must be an integer");
  expect_error([&] { ModelConfig::from_json(replaced("\"layers\": 1", "\"layers\": 1e300"), "c"); }, "'layers'");
  expect_error([&] { ModelConfig::from_json(replaced("\"width\": 16", "\"width\": 1048576"), "c"); }, "'width'");
  expect_error([&] { ModelConfig::from_json(replaced("\"heads\": 2", "\"heads\": -2"), "c"); }, "'heads'");
  expect_error([&] { ModelConfig::from_json(replaced("\"vocab\": 40,", ""), "c"); }, "missing field(s) vocab");
  expect_error([&] { ModelConfig::from_json(replaced("\"causal\": true", "\"causal\": 1"), "c"); }, "'causal'");
  expect_error([&] { ModelConfig::from_json(replaced("\"r\": 4", "\"r\": \"4\""), "c"); }, "'r'");
  expect_error([&] { ModelConfig::from_json(replaced("\"dropout\": 0.0", "\"dropout\": 1.5"), "c"); }, "dropout");
  expect_error([&] { ModelConfig::from_json(replaced("\"p\": 4", "\"p\": 3"), "c"); }, "p must be an even");
  // Sizes within the per-field limits but far beyond the machine: refused before allocating.
  auto huge = one_layer_config();
  huge.width = 65536;
  huge.heads = 1;
  huge.layers = 4096;
  expect_error([&] { Model m(huge); }, "more than this machine's");
}

// One table of bounds (model/config_fields.h): at each field's bounds and one past them, a
// config built in C++ validates exactly when its config.json loads (they disagreed: sketch_levels
// 17 and hidden_mult 300 validated, were saved, then failed to load).
TEST(ConfigJson, ValidateAndLoadAgreeAtEveryBound) {
  int64_t checked = 0;
  for (const auto& f : model::config_fields()) {
    for (const int64_t v : {f.lo - 1, f.lo, f.hi, f.hi + 1}) {
      auto c = one_layer_config();
      c.attention.mechanism = Mechanism::polysketch_learned_local;
      c.attention.p = 4;
      if (std::string(f.key) == "p" && (v == f.lo || v == f.hi)) c.attention.mechanism = Mechanism::polynomial;
      if (std::string(f.key) == "width") c.heads = 1;
      if (std::string(f.key) == "heads") c.width = std::clamp<int64_t>(2 * v, 2, 65536);
      f.set(c, v);
      bool valid = true;
      try {
        c.validate();
      } catch (const Error&) {
        valid = false;
      }
      EXPECT_EQ(valid, v >= f.lo && v <= f.hi) << f.key << " = " << v;
      std::string json = c.to_json();
      bool loads = true;
      try {
        ModelConfig::from_json(json, "c");
      } catch (const Error&) {
        loads = false;
      }
      EXPECT_EQ(loads, valid) << f.key << " = " << v << ": validate and from_json disagree";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 40);
  auto c = one_layer_config();
  c.attention.mechanism = Mechanism::polysketch_learned;
  c.attention.sketch_levels = 17;
  expect_error([&] { c.validate(); }, "sketch_levels must be in [1, 16]");
}

// same_config (decoding's per-step check) is equality of config.json, without the JSON.
TEST(ConfigJson, SameConfigIsEqualityOfTheJson) {
  const auto base = one_layer_config();
  std::vector<ModelConfig> others;
  for (const auto& f : model::config_fields()) {
    auto c = base;
    f.set(c, f.get(c) + 1);
    others.push_back(c);
  }
  auto c = base;
  c.dropout = 0.25;
  others.push_back(c);
  c = base;
  c.seed += 1;
  others.push_back(c);
  c = base;
  c.attention.mechanism = Mechanism::softmax;
  others.push_back(c);
  c = base;
  c.attention.causal = !c.attention.causal;
  others.push_back(c);
  c = base;
  c.attention.sketch = SketchType::hadamard;
  others.push_back(c);
  c = base;
  c.attention.threads = 3;  // not part of the model (not in config.json)
  others.push_back(c);
  for (const auto& o : others)
    EXPECT_EQ(model::same_config(base, o), base.to_json() == o.to_json()) << o.to_json();
  EXPECT_TRUE(model::same_config(base, ModelConfig::from_json(base.to_json(), "c")));
}

TEST(ConfigJson, SeededMutationFuzz) {
  const std::string good = one_layer_config().to_json();
  auto rng = kernels::Rng::derive(7, 7, 7);
  const std::string alphabet = "0123456789.-e,:\"{}[] truefalsn";
  int accepted = 0;
  for (int i = 0; i < 600; ++i) {
    auto s = good;
    for (int k = 0, edits = 1 + static_cast<int>(rng.below(3)); k < edits; ++k) {
      const auto at = static_cast<size_t>(rng.below(s.size()));
      const char c = alphabet[rng.below(alphabet.size())];
      switch (rng.below(3)) {
        case 0: s[at] = c; break;
        case 1: s.insert(at, 1, c); break;
        default: s.erase(at, 1);
      }
    }
    try {
      const auto cfg = ModelConfig::from_json(s, "c");
      cfg.validate();  // whatever is accepted is a valid configuration
      ++accepted;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("c:"), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "case " << i << ": not a polysketch::Error: " << e.what() << "\n" << s;
    }
  }
  EXPECT_LT(accepted, 300);
}

TEST(CheckpointDir, SameStepResaveAndPruningKeepLatest) {
  TempDir dir;
  Model model(one_layer_config());
  train::AdamW opt(model.params(), {});
  for (int64_t step : {5, 10, 15}) {
    opt.set_steps(step);
    train::save_checkpoint(dir.path(), step, model, &opt, "tok", {});
  }
  // Re-saving step 10 (resume from an older step) swaps it in; latest now names step 10.
  model.params()[0]->value[0] = 42.f;
  opt.set_steps(10);
  train::save_checkpoint(dir.path(), 10, model, &opt, "tok", {});
  EXPECT_EQ(train::load_checkpoint(dir.path(), true).weights.at(model.params()[0]->name).data[0], 42.f);
  train::prune_checkpoints(dir.path(), 1);
  const auto left = train::list_checkpoints(dir.path());
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].first, 10);  // the newest by step (15) goes before the one latest names
  // Step numbers past 8 digits still order by number, not by name.
  opt.set_steps(123456789);
  train::save_checkpoint(dir.path(), 123456789, model, &opt, "tok", {});
  opt.set_steps(99999999);
  train::save_checkpoint(dir.path(), 99999999, model, &opt, "tok", {});
  const auto all = train::list_checkpoints(dir.path());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all.back().first, 123456789);
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST(CheckpointDir, NonFiniteWeightsAreNeverSavedNorLoaded) {
  TempDir dir;
  Model model(one_layer_config());
  train::AdamW opt(model.params(), {});
  opt.set_steps(3);
  const auto path = train::save_checkpoint(dir.path(), 3, model, &opt, "tok", {});
  auto* p = model.params()[2];
  p->value[1] = std::numeric_limits<float>::quiet_NaN();
  opt.set_steps(4);
  expect_error([&] { train::save_checkpoint(dir.path(), 4, model, &opt, "tok", {}); },
               "'" + p->name + "' holds NaN or Inf");
  EXPECT_EQ(train::list_checkpoints(dir.path()).size(), 1u);
  // A NaN written by another tool (valid checksum) is refused on loading.
  std::vector<model::Tensor> tensors;
  std::vector<std::pair<std::string, const model::Tensor*>> named;
  for (auto* q : model.params()) tensors.push_back({q->shape, q->value});
  for (size_t i = 0; i < tensors.size(); ++i) named.emplace_back(model.params()[i]->name, &tensors[i]);
  util::write_file_atomic(path + "/model.safetensors", model::safetensors_encode(named));
  Model fresh(one_layer_config());
  expect_error([&] { model::load_weights(fresh, train::load_checkpoint(path, false).weights, "w"); },
               "NaN or Inf");
}

TEST(CheckpointDir, StateAndLatestAreChecked) {
  TempDir dir;
  Model model(one_layer_config());
  train::AdamW opt(model.params(), {});
  opt.set_steps(2);
  const auto path = train::save_checkpoint(dir.path(), 2, model, &opt, "tok", {});
  const auto state = util::read_file(path + "/state.json");
  for (const auto& bad : {"{\"step\": -5, \"adam_steps\": 2}", "{\"step\": 1e12, \"adam_steps\": 2}",
                          "{\"step\": 3, \"adam_steps\": 3}", "{\"step\": 2, \"adam_steps\": 7}",
                          "{\"adam_steps\": 2}", "[]"}) {
    util::write_file_atomic(path + "/state.json", bad);
    EXPECT_THROW(train::load_checkpoint(path, true), Error) << bad;
  }
  util::write_file_atomic(path + "/state.json", state);
  fs::rename(path, dir.file("moved"));
  expect_error([&] { train::load_checkpoint(dir.path(), false); }, "latest points to step-00000002");
}

TEST(RunDir, LockIsExclusiveAndReleased) {
  TempDir dir;
  {
    train::RunLock lock(dir.path());
    expect_error([&] { train::RunLock second(dir.path()); }, "in use by another trainer");
  }
  train::RunLock again(dir.path());  // released with the first
}

TEST(RunDir, MetricsLogDropsTornAndFutureRecords) {
  TempDir dir;
  const auto path = dir.file("metrics.jsonl");
  util::write_file_atomic(path, "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1}\n{\"step\":3,\"lo");
  {
    train::MetricsLog log(path, 1);
    log.write({{"step", 2}, {"loss", 0.5}});
  }
  EXPECT_EQ(util::read_file(path), "{\"step\":1,\"loss\":2}\n{\"loss\":0.5,\"step\":2}\n");
  std::ofstream(dir.file(".step-00000004.tmp-99")) << "x";
  std::ofstream(dir.file("model.safetensors.tmp.99")) << "x";
  EXPECT_EQ(train::remove_orphans(dir.path()), 2);
}

}  // namespace
}  // namespace polysketch::test
