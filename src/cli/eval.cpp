// polysketch eval: a checkpoint on a data directory's validation split or on raw text
// (eval::evaluate), at one or several context lengths.
#include <fmt/core.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "attention/mechanism.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/documents.h"
#include "data/tokenizer.h"
#include "data/windows.h"
#include "eval/evaluate.h"
#include "model/time_chunks.h"
#include "model/checkpoint.h"
#include "util/check.h"

namespace polysketch::cli {

namespace {

struct EvalCli {
  std::string checkpoint, data;
  std::vector<std::string> inputs;  // raw text instead of a data directory
  std::vector<int64_t> contexts;
  int64_t batch = 8, batches = 16;
  bool sketch_error = false, json = false, by_position = false;
  std::string document_mask = "auto";
  int64_t chunk = 0;
  Runtime runtime;
};

// `eval --input`: the documents of the inputs, tokenized as prepare tokenizes with the
// checkpoint's own tokenizer (each ended by its end-of-document token, where it has one, and
// recorded as a document), as the validation split (there is no training split).
data::Dataset text_dataset(const std::vector<std::string>& inputs, const model::Checkpoint& ck) {
  if (ck.tokenizer_bytes.empty())
    throw Error(fmt::format("{}: no tokenizer (a synthetic task's model): evaluate it with --data", ck.dir));
  const auto tok = data::Tokenizer::from_bytes(ck.tokenizer_bytes, ck.dir + "/tokenizer.model");
  data::Dataset d;
  d.dir = "--input";
  d.vocab = tok.vocab_size();
  data::DocumentReader reader({inputs, {}, "text"});
  data::Document doc;
  d.end_of_document = tok.end_of_document();
  while (reader.next(doc)) {
    auto ids = tok.encode_lines(data::text_lines(doc.text));
    if (d.end_of_document >= 0) ids.push_back(d.end_of_document);
    d.val_docs.push_back(d.val.size());
    d.val.insert(d.val.end(), ids.begin(), ids.end());
  }
  return d;
}

void run_eval(const EvalCli& e) {
  if (e.inputs.empty() == e.data.empty()) throw Error("eval needs --data DIR or --input FILE... (one of them)");
  util::check_range("--batch", e.batch, 1, int64_t{1} << 20);
  util::check_range("--batches", e.batches, 1, int64_t{1} << 20);
  for (int64_t ctx : e.contexts) util::check_range("--context", ctx, 1, int64_t{1} << 30);
  const ComputeContext ctx = apply_runtime(e.runtime).ctx;
  const auto ck = model::read_checkpoint(e.checkpoint);
  if (e.sketch_error && !attention::uses_sketch(ck.config.attention.mechanism))
    throw Error(fmt::format("--sketch-error needs a sketch mechanism; this checkpoint's {} is exact",
                            mechanism_name(ck.config.attention.mechanism)));
  const auto data = e.inputs.empty() ? data::load_dataset(e.data) : text_dataset(e.inputs, ck);
  if (data.vocab != ck.config.vocab)
    throw Error(fmt::format("{}: vocab {} does not match the checkpoint's {}", e.data, data.vocab,
                            ck.config.vocab));
  auto contexts = e.contexts.empty() ? std::vector<int64_t>{ck.config.context} : e.contexts;
  for (int64_t ctx : contexts) data::check_context(data, ctx, /*val_only=*/!e.inputs.empty());
  util::check_range("--chunk", e.chunk, 0, int64_t{1} << 30);
  const bool documents = data::document_mask(data, e.document_mask, "--document-mask");
  if (e.chunk > 0)
    for (int64_t c : contexts)
      if (const auto problem = model::chunking_problem(ck.config, c, e.chunk, "evaluation"); !problem.empty())
        throw Error(problem);
  Model model(ck.config, ctx);
  model::load_weights(model, ck.weights, ck.dir + "/model.safetensors");
  for (int64_t ctx : contexts) {
    const auto r = eval::evaluate(model, data, ctx, e.batch, e.batches, e.by_position, documents, e.chunk);
    if (!std::isfinite(r.loss))
      throw Error(fmt::format("context {}: validation loss is {} (the model's outputs overflow)", ctx, r.loss));
    const auto err = e.sketch_error ? eval::sketch_error(model, data, ctx, e.batch, e.batches)
                                    : std::vector<double>{};
    if (e.json) {
      nlohmann::json j{{"context", ctx}, {"loss", r.loss}, {"perplexity", std::exp(r.loss)},
                       {"accuracy", r.accuracy}, {"scored", r.scored}};
      if (e.sketch_error) j["sketch_error"] = err;
      if (e.by_position) {
        j["by_position"] = nlohmann::json::array();
        for (const auto& b : r.by_position)
          j["by_position"].push_back({{"begin", b.begin}, {"end", b.end}, {"loss", b.loss}, {"scored", b.scored}});
      }
      fmt::print("{}\n", j.dump());
      continue;
    }
    fmt::print("context {}: validation loss {:.4f}, perplexity {:.2f}, {} accuracy {:.4f} ({} tokens)\n",
               ctx, r.loss, std::exp(r.loss), data.synthetic() ? "answer" : "next-token", r.accuracy,
               r.scored);
    for (const auto& b : r.by_position)
      fmt::print("context {}: positions {}-{}: loss {:.4f}, perplexity {:.2f} ({} tokens)\n", ctx, b.begin,
                 b.end, b.loss, std::exp(b.loss), b.scored);
    if (e.sketch_error) {
      std::string layers;
      for (double x : err) layers += fmt::format(" {:.4f}", x);
      fmt::print("context {}: sketch error per layer (||o - o_exact|| / ||o_exact|| against exact "
                 "degree-{} attention):{}\n", ctx, ck.config.attention.p, layers);
    }
  }
}

}  // namespace

void add_eval(CLI::App& app) {
  auto e = std::make_shared<EvalCli>();
  auto* ev = app.add_subcommand("eval", "Validation loss and perplexity of a checkpoint");
  ev->add_option("--checkpoint", e->checkpoint)->required();
  auto* data_dir = ev->add_option("--data", e->data, "directory made by `polysketch prepare` (its validation split)");
  ev->add_option("--input", e->inputs, "or raw text: files and folders as `prepare --input` reads "
                                       "them, tokenized with the checkpoint's tokenizer")->excludes(data_dir);
  ev->add_option("--context", e->contexts, "context lengths (default: the model's)")->delimiter(',');
  ev->add_option("--batch", e->batch)->capture_default_str();
  ev->add_option("--chunk", e->chunk, "score each window a chunk of this many tokens at a time (memory "
                                      "independent of the context; sketch mechanisms, a multiple of "
                                      "the block; document masking carries across chunks; 0: whole "
                                      "windows)")
      ->capture_default_str();
  ev->add_option("--batches", e->batches)->capture_default_str();
  ev->add_flag("--json", e->json, "one JSON object per context (loss, perplexity, accuracy, scored, sketch_error)");
  ev->add_flag("--by-position", e->by_position, "also the loss by position (from the window's or, "
                                                "with document masking, the document's start): "
                                                "buckets 0-64, 64-256, 256-1024, ... (each 4x the last)");
  ev->add_option("--document-mask", e->document_mask, "auto, on or off: tokens attend only within "
                                                     "their document, and --by-position counts from "
                                                     "each document's start (auto: when the data "
                                                     "records document boundaries)")->capture_default_str();
  ev->add_flag("--sketch-error", e->sketch_error, "also report each layer's attention error against "
                                                  "exact polynomial attention (sketch mechanisms; quadratic)");
  add_runtime_flags(ev, e->runtime);
  ev->callback([e] { run_eval(*e); });
}

}  // namespace polysketch::cli
