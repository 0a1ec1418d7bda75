#include "eval/evaluate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "data/windows.h"
#include "model/time_chunks.h"

namespace polysketch::eval {

namespace {
// The evaluation windows (or examples), batch by batch: body(x, y, documents, rows), documents
// null unless asked for.
template <typename F>
void for_each_eval_batch(const data::Dataset& data, int64_t context, int64_t batch, int64_t batches,
                         bool documents, F&& body) {
  data::check_context(data, context, /*val_only=*/true);
  const int64_t available = static_cast<int64_t>(data::start_count(data.val, data.example_tokens, context));
  const int64_t windows = std::min(std::max<int64_t>(1, batch * batches),
                                   data.synthetic() ? available : std::numeric_limits<int64_t>::max());
  const int64_t last = available - 1;  // the last start that fits
  std::vector<int32_t> x, y, ids;
  for (int64_t done = 0; done < windows;) {
    const int64_t b = std::min(batch, windows - done);
    std::vector<uint64_t> starts(static_cast<size_t>(b));
    for (int64_t i = 0; i < b; ++i)
      starts[i] = windows == 1 ? 0 : static_cast<uint64_t>((done + i) * last / (windows - 1));
    data::fill_batch(data.val, data.val_scored, data.example_tokens, context, starts, x, y,
                     &data.val_docs, documents ? &ids : nullptr);
    body(x, y, documents ? ids.data() : nullptr, b);
    done += b;
  }
}
}  // namespace

EvalResult evaluate(const Model& model, const data::Dataset& data, int64_t context, int64_t batch,
                    int64_t batches, bool by_position, bool documents, int64_t chunk) {
  if (chunk > 0) {
    if (const auto problem = model::chunking_problem(model.config(), context, chunk, "evaluation"); !problem.empty())
      throw Error(problem);
  }
  double loss = 0;
  int64_t scored = 0, correct = 0;
  std::vector<PositionBucket> buckets;
  for (int64_t begin = 0, end = 64; begin < context; begin = end, end *= 4)
    buckets.push_back({begin, std::min(end, context)});
  // One score call's results, its positions starting at `offset`.
  auto add = [&](const Model::Score& s, int64_t offset) {
    loss += s.loss * static_cast<double>(s.scored);
    scored += s.scored;
    correct += s.correct;
    for (size_t t = 0; t < s.position_loss.size(); ++t)
      for (auto& bucket : buckets)
        if (offset + static_cast<int64_t>(t) >= bucket.begin && offset + static_cast<int64_t>(t) < bucket.end) {
          bucket.loss += s.position_loss[t];
          bucket.scored += s.position_scored[t];
        }
  };
  Workspace ws;
  std::vector<int32_t> xc, yc, idc, before;
  std::vector<int64_t> starts;
  for_each_eval_batch(data, context, batch, batches, documents,
                      [&](const auto& x, const auto& y, const int32_t* ids, int64_t b) {
    if (chunk <= 0 || chunk >= context) return add(model.score(x.data(), y.data(), b, context, &ws, by_position, ids), 0);
    // A chunk at a time, the block states passed on (memory of one chunk, whatever the context).
    const int64_t chunks = (context + chunk - 1) / chunk;
    const auto total = static_cast<int64_t>(std::count_if(y.begin(), y.end(), [](int32_t t) { return t != kIgnoreTarget; }));
    model::TimeChunks<float> exchange(chunks, /*keep=*/false);
    starts.assign(static_cast<size_t>(b), 0);  // of each sequence's current document
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t begin = c * chunk, len = std::min(chunk, context - begin);
      model::chunk_columns(x.data(), b, context, begin, len, xc);
      model::chunk_columns(y.data(), b, context, begin, len, yc);
      exchange.begin(model::TimeChunks<float>::Pass::forward, c);
      ContextChunk part{&exchange, begin, context, std::max<int64_t>(1, total)};
      if (ids) {
        part.documents_before = model::chunk_documents(ids, b, context, begin, len, idc, before);
        if (part.documents_before) part.document_starts = starts.data();
      }
      // Positions come back in whole-window terms (Model::score with a chunk).
      add(model.score(xc.data(), yc.data(), b, len, &ws, by_position, ids ? idc.data() : nullptr, &part), 0);
      if (ids)  // where the document of each sequence's last token of this chunk starts
        for (int64_t s = 0; s < b; ++s)
          for (int64_t t = begin; t < begin + len; ++t)
            if (t > 0 && ids[s * context + t] != ids[s * context + t - 1]) starts[static_cast<size_t>(s)] = t;
    }
  });
  EvalResult r{loss / static_cast<double>(scored), static_cast<double>(correct) / static_cast<double>(scored), scored, {}};
  if (!by_position) return r;
  for (auto& bucket : buckets)
    if (bucket.scored > 0) {
      bucket.loss /= static_cast<double>(bucket.scored);
      r.by_position.push_back(bucket);
    }
  return r;
}

std::vector<double> sketch_error(const Model& model, const data::Dataset& data, int64_t context,
                                 int64_t batch, int64_t batches) {
  std::vector<double> mean(static_cast<size_t>(model.config().layers), 0.0);
  int64_t count = 0;
  Workspace ws;
  for_each_eval_batch(data, context, batch, batches, false, [&](const auto& x, const auto&, const int32_t*, int64_t b) {
    const auto e = model.sketch_error(x.data(), b, context, &ws);
    for (size_t l = 0; l < mean.size(); ++l) mean[l] += e[l];
    ++count;
  });
  for (auto& m : mean) m /= static_cast<double>(count);
  return mean;
}

double unigram_loss(const data::Dataset& data) {
  // Over the scored tokens only (all of running text; a synthetic task's answers).
  auto counted = [&](const std::vector<uint8_t>& scored, size_t i) { return !data.synthetic() || scored[i]; };
  std::vector<double> count(static_cast<size_t>(data.vocab), 1.0);
  double total = static_cast<double>(data.vocab);
  for (size_t i = 0; i < data.train.size(); ++i)
    if (counted(data.train_scored, i)) {
      count[data.train[i]] += 1;
      total += 1;
    }
  double loss = 0, n = 0;
  for (size_t i = 0; i < data.val.size(); ++i)
    if (counted(data.val_scored, i)) {
      loss -= std::log(count[data.val[i]] / total);
      n += 1;
    }
  return loss / n;
}

}  // namespace polysketch::eval
