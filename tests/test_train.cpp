// Training end to end on a tiny model: overfitting, checkpoint round trip, bit-exact resume,
// and rejection of corrupt or mismatched checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "data/shards.h"
#include "data/tokenizer.h"
#include "polysketch/model.h"
#include "test_util.h"
#include "tiny_run.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "util/atomic_file.h"

namespace polysketch::test {
namespace {

namespace fs = std::filesystem;

// A data directory whose training text repeats a 24-token pattern (so a model can learn it);
// with `documents`, of format 2 with a document starting every 100 tokens.
void make_data(const fs::path& dir, bool documents = false) {
  const auto model = data::Tokenizer::train(sample_lines(400), 300);
  const int64_t vocab = data::Tokenizer::from_bytes(model, "t").vocab_size();
  util::write_file_atomic((dir / "tokenizer.model").string(), model);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 400; ++i)
    for (int t = 0; t < 24; ++t) tokens.push_back(260 + (t * 7) % 24);
  data::write_shard((dir / "train.bin").string(), vocab, tokens);
  data::write_shard((dir / "val.bin").string(), vocab, std::vector<int32_t>(tokens.begin(), tokens.begin() + 480));
  if (!documents) return;
  auto starts = [](uint64_t n) {
    std::vector<uint64_t> s;
    for (uint64_t t = 0; t < n; t += 100) s.push_back(t);
    return s;
  };
  data::write_document_starts((dir / "train.docs").string(), starts(tokens.size()), tokens.size());
  data::write_document_starts((dir / "val.docs").string(), starts(480), 480);
  util::write_file_atomic((dir / "meta.json").string(), "{\"format\": 2}");
}

TEST(Training, TinyModelOverfitsRepeatedText) {
  TempDir dir;
  make_data(dir.path());
  const auto r = train::run_training(tiny_options(dir.path(), dir.file("ck")));
  // The pattern is deterministic after its first few tokens: ln(24) = 3.18 at the start.
  EXPECT_GT(r.losses.front(), 3.0);
  EXPECT_LT(r.val_loss, 0.3);
  EXPECT_GT(r.unigram_loss, 3.0);
}

TEST(Training, ResumeIsBitExact) {
  for (bool documents : {false, true}) {
    SCOPED_TRACE(documents ? "document masking" : "no documents");
    TempDir dir;
    make_data(dir.path(), documents);
    auto o = tiny_options(dir.path(), dir.file("full"));
    o.steps = 20;
    o.checkpoint_every = 10;
    o.keep = 5;
    o.model.dropout = 0.1;  // dropout masks must replay too
    o.accum = 2;
    const auto full = train::run_training(o);
    auto resumed_opts = tiny_options("", dir.file("resumed"));
    resumed_opts.resume = dir.file("full/step-00000010");
    resumed_opts.steps = 0;  // the original run's
    const auto resumed = train::run_training(resumed_opts);
    ASSERT_EQ(full.losses.size(), 20u);
    ASSERT_EQ(resumed.losses.size(), 10u);
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(resumed.losses[i], full.losses[10 + i]) << i;
    EXPECT_EQ(resumed.val_loss, full.val_loss);
  }
}

// Document masking changes training (the windows cross documents every 100 tokens), and `on`
// needs recorded boundaries.
TEST(Training, DocumentMaskApplies) {
  TempDir dir;
  make_data(dir.path(), true);
  auto run = [&](const std::string& mask, const std::string& out) {
    auto o = tiny_options(dir.path(), dir.file(out));
    o.steps = 3;
    o.document_mask = mask;
    return train::run_training(o).losses;
  };
  EXPECT_EQ(run("auto", "a"), run("on", "b"));
  EXPECT_NE(run("on", "c"), run("off", "d"));
  TempDir old;
  make_data(old.path());
  auto o = tiny_options(old.path(), old.file("x"));
  o.document_mask = "on";
  expect_error([&] { train::run_training(o); }, "records no document boundaries");
}

// --chunk: training a chunk of tokens at a time follows the whole-sequence run (float: the sums'
// order differs, so a relative 1e-4 over 5 steps), with document masking too; exact mechanisms
// and chunks of partial blocks are refused.
TEST(Training, ChunkedFollowsWholeSequences) {
  TempDir dir;
  make_data(dir.path(), true);
  auto o = tiny_options(dir.path(), dir.file("whole"));
  o.steps = 5;
  o.document_mask = "off";
  o.model.dropout = 0.1;
  const auto whole = train::run_training(o);
  o.out_dir = dir.file("chunked");
  o.chunk = 8;  // 4 chunks of the context 32
  const auto chunked = train::run_training(o);
  ASSERT_EQ(whole.losses.size(), chunked.losses.size());
  for (size_t i = 0; i < whole.losses.size(); ++i) EXPECT_NEAR(chunked.losses[i], whole.losses[i], 1e-4 * whole.losses[i]) << i;
  // Document masking across the chunks follows the masked whole-sequence run (and masks: the
  // losses differ from the unmasked ones).
  o.document_mask = "on";
  o.chunk = 0;
  o.out_dir = dir.file("whole-docs");
  const auto whole_docs = train::run_training(o);
  o.chunk = 8;
  o.out_dir = dir.file("chunked-docs");
  const auto chunked_docs = train::run_training(o);
  ASSERT_EQ(whole_docs.losses.size(), chunked_docs.losses.size());
  double masking = 0;
  for (size_t i = 0; i < whole_docs.losses.size(); ++i) {
    EXPECT_NEAR(chunked_docs.losses[i], whole_docs.losses[i], 1e-4 * whole_docs.losses[i]) << i;
    masking = std::max(masking, std::abs(whole_docs.losses[i] - whole.losses[i]));
  }
  EXPECT_GT(masking, 1e-3) << "the data's documents should change the losses";
  o.out_dir = dir.file("x");
  o.document_mask = "off";
  o.chunk = 6;
  expect_error([&] { train::run_training(o); }, "not a whole number of blocks");
  o.chunk = 8;
  o.model.attention.mechanism = Mechanism::softmax;
  expect_error([&] { train::run_training(o); }, "needs a sketch mechanism");
}

// --init: a new run starts from a checkpoint's weights (an update of 1e-30 leaves every float
// as it was: the first checkpoint equals the source), at another context, records where it
// started, and refuses a missing source, --resume beside it and data of another tokenizer.
TEST(Training, InitStartsFromTheCheckpointsWeights) {
  TempDir dir;
  make_data(dir.path());
  auto src = tiny_options(dir.path(), dir.file("src"));
  src.steps = 20;
  train::run_training(src);
  auto o = tiny_options(dir.path(), dir.file("tuned"));
  o.init = dir.file("src");  // the run directory: its latest checkpoint
  o.init_context = 16;
  o.model.layers = 7;  // ignored: the model is the checkpoint's
  o.steps = 1;
  o.warmup = 0;
  o.lr = 1e-30;
  o.weight_decay = 0;
  const auto r = train::run_training(o);
  const auto a = model::read_checkpoint(dir.file("src/step-00000020"));
  const auto b = model::read_checkpoint(r.checkpoint);
  EXPECT_EQ(b.config.context, 16);
  EXPECT_EQ(b.config.layers, a.config.layers);
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (const auto& [name, t] : a.weights) EXPECT_EQ(t.data, b.weights.at(name).data) << name;
  EXPECT_EQ(b.state.at("initialized_from").get<std::string>(), a.dir);

  auto missing = tiny_options(dir.path(), dir.file("x1"));
  missing.init = dir.file("nowhere");
  expect_error([&] { train::run_training(missing); }, "nowhere");
  auto both = tiny_options(dir.path(), dir.file("x2"));
  both.init = dir.file("src");
  both.resume = dir.file("src");
  expect_error([&] { train::run_training(both); }, "--init");
  TempDir other;
  make_data(other.path());
  util::write_file_atomic(other.file("tokenizer.model"),
                          data::Tokenizer::train(sample_lines(250), 300));  // another tokenizer, same vocab
  auto foreign = tiny_options(other.path(), dir.file("x3"));
  foreign.init = dir.file("src");
  expect_error([&] { train::run_training(foreign); }, "prepare the data with");
}

TEST(Checkpoint, RoundTripAndCorruptFilesRejected) {
  TempDir dir;
  ModelConfig cfg;
  cfg.vocab = 50;
  cfg.layers = 1;
  cfg.width = 16;
  cfg.heads = 2;
  cfg.context = 8;
  Model model(cfg);
  train::AdamW opt(model.params(), {});
  opt.set_steps(7);  // as after 7 training steps (state.json checks adam_steps == step)
  const auto path = train::save_checkpoint(dir.path(), 7, model, &opt, "tok", {{"x", 1}});
  EXPECT_TRUE(fs::is_symlink(dir.file("latest")));
  const auto loaded = train::load_checkpoint(dir.path(), true);  // via `latest`
  EXPECT_EQ(loaded.state.at("step"), 7);
  EXPECT_EQ(loaded.tokenizer_bytes, "tok");
  Model copy(loaded.config);
  model::load_weights(copy, loaded.weights, "w");
  for (size_t i = 0; i < model.params().size(); ++i)
    EXPECT_EQ(copy.params()[i]->value, model.params()[i]->value);

  const std::string weights = util::read_file(path + "/model.safetensors");
  util::write_file_atomic(path + "/model.safetensors", weights.substr(0, weights.size() / 2));
  expect_error([&] { train::load_checkpoint(path, false); }, "model.safetensors");
  util::write_file_atomic(path + "/model.safetensors", std::string(4, 'x'));
  expect_error([&] { train::load_checkpoint(path, false); }, "truncated");
  util::write_file_atomic(path + "/model.safetensors", weights);
  // A config whose shapes disagree with the weights.
  auto other = cfg;
  other.width = 32;
  Model wider(other);
  expect_error([&] { model::load_weights(wider, train::load_checkpoint(path, false).weights, "m"); },
               "shape");
  util::write_file_atomic(path + "/config.json", "{\"width\": ");
  expect_error([&] { train::load_checkpoint(path, false); }, "config.json");
  fs::remove(path + "/state.json");
  expect_error([&] { train::load_checkpoint(path, false); }, "missing state.json");
  expect_error([&] { train::load_checkpoint(dir.file("nope"), false); }, "does not exist");
}

TEST(Schedule, WarmupThenCosine) {
  EXPECT_DOUBLE_EQ(train::learning_rate(0, 100, 10, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(train::learning_rate(9, 100, 10, 1.0, 0.1), 1.0);
  EXPECT_NEAR(train::learning_rate(100, 100, 10, 1.0, 0.1), 0.1, 1e-12);
  std::vector<std::vector<float>> g{{3.f}, {4.f}};
  EXPECT_DOUBLE_EQ(train::clip_grad_norm(g, 1.0), 5.0);
  EXPECT_FLOAT_EQ(g[0][0], 0.6f);
}

}  // namespace
}  // namespace polysketch::test
