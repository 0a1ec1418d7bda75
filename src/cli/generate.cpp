// polysketch generate: sample text from a checkpoint (temperature, top-k, top-p, seed), streamed.
// The prompt is consumed by one pass of the block algorithm (prefill), then each token is one
// step against the decoding state: constant time and memory per token for the sketch mechanisms.
#include <fmt/core.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "cli/commands.h"
#include "cli/common.h"
#include "data/text_stream.h"
#include "data/tokenizer.h"
#include "polysketch/decode.h"
#include "model/checkpoint.h"
#include "model/generator.h"
#include "util/check.h"

namespace polysketch::cli {

namespace {
struct GenerateOptions {
  std::string checkpoint, prompt;
  int64_t max_tokens = 200;
  model::SamplingOptions sampling;
  Runtime runtime;
  std::string save_state, load_state;
};

void run(const GenerateOptions& o) {
  util::check_range("--max-tokens", o.max_tokens, 0, int64_t{1} << 30);
  model::check_sampling(o.sampling, true);
  const ComputeContext ctx = apply_runtime(o.runtime).ctx;
  const auto ck = model::read_checkpoint(o.checkpoint);
  if (ck.tokenizer_bytes.empty())
    throw Error(fmt::format("{} has no tokenizer: it was trained on a synthetic task (`prepare "
                            "--task`), which has no text to generate; use `eval`", ck.dir));
  Model model(ck.config, ctx);
  model::load_weights(model, ck.weights, ck.dir + "/model.safetensors");
  model.prepare_decoding();
  const auto tok = data::Tokenizer::from_bytes(ck.tokenizer_bytes, ck.dir + "/tokenizer.model");
  const std::string identity = model.identity();
  auto state = o.load_state.empty() ? DecodeState(ck.config)
                                    : DecodeState::load(o.load_state, ck.config, identity);
  std::vector<int32_t> ids = tok.encode(o.prompt);
  // A document ends with the tokenizer's end-of-document token: so does the generated text.
  model::Generator gen(model, state, o.sampling, tok.end_of_document());
  data::TextStream text(tok, ids);  // never shows broken UTF-8 (byte pieces held back)
  fmt::print("{}", text.shown());
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  gen.prompt(ids);
  const auto t1 = std::chrono::steady_clock::now();
  const size_t prompt_tokens = ids.size();
  int64_t generated = 0;
  for (; generated < o.max_tokens && !gen.ended(); ++generated) {
    const std::string fresh = text.push(gen.next(text.allowed()));
    if (!fresh.empty()) {
      fmt::print("{}", fresh);
      std::fflush(stdout);
    }
  }
  const auto t2 = std::chrono::steady_clock::now();
  fmt::print("\n");
  if (!o.save_state.empty()) state.save(o.save_state, identity);
  const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  fmt::print(stderr, "prefill: {} tokens in {:.3f} s ({:.0f} tokens/s); decode: {} tokens in {:.3f} s "
             "({:.1f} tokens/s){}; position {}, state {:.2f} MiB{}\n",
             prompt_tokens, prefill_s, prompt_tokens / std::max(prefill_s, 1e-9), generated,
             decode_s, generated / std::max(decode_s, 1e-9), gen.ended() ? ", ended by the end-of-document token" : "",
             state.position(), state.bytes() / 1048576.0, o.save_state.empty() ? "" : ", saved to " + o.save_state);
}
}  // namespace

void add_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  auto* cmd = app.add_subcommand("generate", "Sample text from a trained checkpoint");
  cmd->add_option("--checkpoint", o->checkpoint)->required();
  cmd->add_option("--prompt", o->prompt, "text to continue")->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens)->capture_default_str();
  cmd->add_option("--temperature", o->sampling.temperature, "0: greedy")->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "0: off")->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p)->capture_default_str();
  cmd->add_option("--seed", o->sampling.seed)->capture_default_str();
  add_runtime_flags(cmd, o->runtime);
  cmd->add_option("--save-state", o->save_state, "write the decoding state at the end to this file");
  cmd->add_option("--load-state", o->load_state, "continue from a saved decoding state (the prompt, if any, is appended)");
  cmd->callback([o] { run(*o); });
}

}  // namespace polysketch::cli
