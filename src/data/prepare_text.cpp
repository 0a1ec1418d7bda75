#include "data/prepare_text.h"

#include <fmt/core.h>
#include <fmt/format.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "data/corpus.h"
#include "data/dataset.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "polysketch/error.h"
#include "util/atomic_file.h"
#include "util/check.h"
#include "util/parallel.h"

namespace polysketch::data {

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr size_t kBatchBytesPerThread = size_t{4} << 20;  // text tokenized per batch, per thread
constexpr double kMinSpanBytes = 16384;                    // a held-out span of a long document
constexpr int kMaxSpans = 4;

// The documents of a source in order. The King James Bible (no inputs) is read once and held.
class Corpus {
 public:
  explicit Corpus(const DocumentSource& source) : source_(source) {
    if (source.inputs.empty()) {
      kjv_ = kjv_text();
      description_ = "King James Bible (Debian bible-kjv)";
    } else {
      DocumentReader reader(source);  // lists the files: a missing input fails before any work
      description_ = fmt::format("{} file(s)", reader.files().size());
    }
  }
  const std::string& description() const { return description_; }
  // fn(document, index, fraction of the input read so far)
  template <typename F>
  void for_each(F&& fn) const {
    if (source_.inputs.empty()) {
      fn(Document{kjv_, "King James Bible"}, int64_t{0}, 1.0);
      return;
    }
    DocumentReader reader(source_);
    Document doc;
    for (int64_t i = 0; reader.next(doc); ++i)
      fn(doc, i, reader.total_bytes() ? double(reader.bytes_read()) / double(reader.total_bytes()) : 1.0);
  }

 private:
  DocumentSource source_;
  std::string kjv_, description_;
};

// How a corpus's documents are divided between training and validation.
enum class Hold { none, all, whole, spans };

struct Piece {  // lines [begin, end) of a document, in one split
  bool val;
  size_t begin, end;
};

// Up to kMaxSpans held-out spans, one at the end of each equal part of the document (by bytes),
// together a fraction f of it, cut at line boundaries; the rest trains.
std::vector<Piece> span_pieces(const std::vector<std::string>& lines, double f) {
  const size_t n = lines.size();
  if (n < 2) return {{false, 0, n}};
  std::vector<double> start(n + 1, 0);  // byte offset of each line
  for (size_t i = 0; i < n; ++i) start[i + 1] = start[i] + double(lines[i].size() + 1);
  const double total = start[n];
  const int spans = static_cast<int>(std::clamp(std::floor(total * f / kMinSpanBytes), 1.0,
                                                std::min<double>(kMaxSpans, double(n / 2))));
  auto line_at = [&](double byte) {
    return static_cast<size_t>(std::lower_bound(start.begin(), start.end(), byte) - start.begin());
  };
  std::vector<Piece> pieces;
  size_t pos = 0;
  for (int s = 0; s < spans; ++s) {
    const double part_end = total * (s + 1) / spans;
    const size_t end = s == spans - 1 ? n : std::min(line_at(part_end), n);
    if (end <= pos) continue;
    const size_t val_begin = std::clamp(line_at(part_end - total * f / spans), pos, end - 1);
    if (val_begin > pos) pieces.push_back({false, pos, val_begin});
    pieces.push_back({true, val_begin, end});
    pos = end;
  }
  return pieces;
}

std::vector<Piece> split_document(const std::vector<std::string>& lines, Hold hold, int64_t index, double f) {
  switch (hold) {
    case Hold::none:
      return {{false, 0, lines.size()}};
    case Hold::all:
      return {{true, 0, lines.size()}};
    case Hold::whole: {
      const bool val = std::floor((index + 1) * static_cast<long double>(f)) >
                       std::floor(index * static_cast<long double>(f));
      return {{val, 0, lines.size()}};
    }
    case Hold::spans:
      return span_pieces(lines, f);
  }
  return {};
}

// A deterministic draw in [0, 1) for line `line` of document `doc` (splitmix64).
double line_draw(int64_t doc, size_t line) {
  uint64_t z = (static_cast<uint64_t>(doc) << 32) ^ line ^ 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return double(z >> 11) * 0x1.0p-53;
}

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

struct Survey {
  int64_t documents = 0;
  uint64_t bytes = 0;
};

Survey survey(const Corpus& corpus) {
  Survey s;
  corpus.for_each([&](const Document& doc, int64_t, double) {
    ++s.documents;
    s.bytes += doc.text.size();
  });
  return s;
}

// One split's output: its shard and where its documents start.
struct SplitWriter {
  ShardWriter shard;
  std::vector<uint64_t> starts;
  int64_t documents = 0;
};

struct PendingPiece {
  bool val;
  std::vector<std::string> lines;
};

// Tokenizes the pieces (their lines in parallel, on `threads` threads), then appends each to its
// split in order, followed by the end-of-document token.
void flush(std::vector<PendingPiece>& batch, const Tokenizer& tok, int threads, SplitWriter& train,
           SplitWriter& val) {
  std::vector<std::pair<size_t, size_t>> lines;  // (piece, line)
  for (size_t p = 0; p < batch.size(); ++p)
    for (size_t l = 0; l < batch[p].lines.size(); ++l) lines.emplace_back(p, l);
  std::vector<std::vector<int32_t>> ids(lines.size());
  std::optional<Error> failure;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
  for (int64_t i = 0; i < static_cast<int64_t>(lines.size()); ++i) {
    try {
      ids[i] = tok.encode(batch[lines[i].first].lines[lines[i].second]);
    } catch (const Error& e) {
#pragma omp critical
      if (!failure) failure = e;
    }
  }
  if (failure) throw *failure;
  const int32_t eod = tok.end_of_document();
  size_t next = 0;
  std::vector<int32_t> doc;
  for (const auto& piece : batch) {
    doc.clear();
    for (size_t l = 0; l < piece.lines.size(); ++l, ++next) doc.insert(doc.end(), ids[next].begin(), ids[next].end());
    if (piece.lines.empty()) continue;
    if (eod >= 0) doc.push_back(eod);
    auto& w = piece.val ? val : train;
    w.starts.push_back(w.shard.size());
    ++w.documents;
    w.shard.append(doc);
  }
  batch.clear();
}

std::string hold_rule(Hold hold, double f, int64_t val_inputs) {
  switch (hold) {
    case Hold::whole:
      return fmt::format("whole documents: a fraction {} of them, spread evenly", f);
    case Hold::spans:
      return fmt::format("fewer documents than 1/{}: a fraction {} of each document's lines, in up to "
                         "{} contiguous spans", f, f, kMaxSpans);
    default:
      return fmt::format("the {} --val-input document(s)", val_inputs);
  }
}
}  // namespace

TextPrepareReport prepare_text(const TextPrepareOptions& o, const std::string& out_dir) {
  const bool given_val = !o.val_input.inputs.empty();
  if (!given_val && !(o.val_fraction > 0 && o.val_fraction <= 0.5))
    throw Error(fmt::format("--val-fraction must be in (0, 0.5], got {}", o.val_fraction));
  if (o.tokenizer.empty()) util::check_range("--vocab-size", o.vocab_size, 16, int64_t{1} << 20);
  if (!(o.tokenizer_sample_mb >= 1 && o.tokenizer_sample_mb <= 1e6))
    throw Error(fmt::format("--tokenizer-sample-mb must be in [1, 1e6], got {}", o.tokenizer_sample_mb));
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  std::optional<Tokenizer> tok;  // --tokenizer: read before the corpus, to fail early
  if (!o.tokenizer.empty()) tok.emplace(Tokenizer::from_source(o.tokenizer));
  const Corpus corpus(o.input);
  std::optional<Corpus> val_corpus;
  if (given_val) val_corpus.emplace(o.val_input);

  // Pass 1: count the documents (the hold-out rule depends on it) and their bytes.
  const Survey s = survey(corpus);
  const Survey vs = given_val ? survey(*val_corpus) : Survey{};
  if (s.documents == 0) throw Error("no text in the input (every file is empty)");
  if (given_val && vs.documents == 0) throw Error("no text in --val-input (every file is empty)");
  const Hold hold = given_val ? Hold::none
                    : double(s.documents) * o.val_fraction >= 1 ? Hold::whole
                                                                 : Hold::spans;
  TextPrepareReport report;
  report.documents = s.documents + vs.documents;
  report.text_bytes = s.bytes + vs.bytes;
  report.source = corpus.description() + (given_val ? ", validation " + val_corpus->description() : "");

  // Pass 2 (a trained tokenizer): a deterministic sample of the training lines.
  if (!tok) {
    const double rate = std::min(1.0, o.tokenizer_sample_mb * 1e6 / double(std::max<uint64_t>(s.bytes, 1)));
    std::vector<std::string> sample;
    corpus.for_each([&](const Document& doc, int64_t index, double) {
      auto lines = text_lines(doc.text);
      for (const auto& piece : split_document(lines, hold, index, o.val_fraction))
        for (size_t l = piece.begin; l < piece.end && !piece.val; ++l)
          if (rate >= 1 || line_draw(index, l) < rate) sample.push_back(std::move(lines[l]));
    });
    if (sample.empty()) throw Error("no training text to train the tokenizer on");
    if (o.progress && ::isatty(STDERR_FILENO)) fmt::print(stderr, "training the tokenizer ({} pieces) on {} lines...\n", o.vocab_size, sample.size());
    tok.emplace(Tokenizer::from_bytes(Tokenizer::train(sample, static_cast<int>(o.vocab_size)), "tokenizer"));
  }
  report.vocab = tok->vocab_size();

  // Pass 3: tokenize and write, a batch of documents at a time.
  fs::create_directories(out_dir);
  const fs::path dir(out_dir);
  SplitWriter train{ShardWriter((dir / "train.bin").string(), report.vocab), {}, 0};
  SplitWriter val{ShardWriter((dir / "val.bin").string(), report.vocab), {}, 0};
  std::vector<std::string> held_out;
  std::vector<PendingPiece> batch;
  size_t batch_bytes = 0;
  const auto t0 = Clock::now();
  const bool tty = o.progress && ::isatty(STDERR_FILENO);
  uint64_t bytes_done = 0;
  auto show = [&](double fraction, const char* what) {
    if (!tty) return;
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const double eta = fraction > 0 ? secs * (1 - fraction) / fraction : 0;
    fmt::print(stderr, "\r{}: {:5.1f}%  {:.0f} MB  {:.1f} MB/s  ETA {}   ", what, 100 * fraction,
               bytes_done / 1e6, secs > 0 ? bytes_done / 1e6 / secs : 0.0, duration(eta));
  };
  auto read = [&](const Corpus& c, Hold h, const char* what) {
    c.for_each([&](const Document& doc, int64_t index, double fraction) {
      auto lines = text_lines(doc.text);
      for (const auto& piece : split_document(lines, h, index, o.val_fraction)) {
        if (piece.val)
          held_out.push_back(piece.begin == 0 && piece.end == lines.size()
                                 ? doc.where
                                 : fmt::format("{} lines {}-{} of {}", doc.where, piece.begin + 1, piece.end, lines.size()));
        PendingPiece p{piece.val, {}};
        for (size_t l = piece.begin; l < piece.end; ++l) {
          batch_bytes += lines[l].size();
          p.lines.push_back(std::move(lines[l]));
        }
        batch.push_back(std::move(p));
      }
      bytes_done += doc.text.size();
      if (batch_bytes >= kBatchBytesPerThread * static_cast<size_t>(threads)) {
        flush(batch, *tok, threads, train, val);
        batch_bytes = 0;
        show(fraction, what);
      }
    });
    flush(batch, *tok, threads, train, val);
    batch_bytes = 0;
    show(1.0, what);
  };
  read(corpus, hold, "tokenizing");
  if (given_val) read(*val_corpus, Hold::all, "tokenizing --val-input");
  if (tty) fmt::print(stderr, "\n");
  report.tokenize_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  report.train_tokens = train.shard.size();
  report.val_tokens = val.shard.size();
  report.train_documents = train.documents;
  report.val_documents = val.documents;
  if (report.train_tokens == 0) throw Error("no training text: every document was held out for validation");
  if (report.val_tokens == 0)
    throw Error(fmt::format("no validation text: {} document(s), each too short to split (held out: {}); "
                            "give --val-input or a larger --val-fraction",
                            s.documents, hold_rule(hold, o.val_fraction, 0)));

  train.shard.commit();
  val.shard.commit();
  write_document_starts((dir / "train.docs").string(), train.starts, report.train_tokens);
  write_document_starts((dir / "val.docs").string(), val.starts, report.val_tokens);
  util::write_file_atomic((dir / "tokenizer.model").string(), tok->model_bytes());
  const nlohmann::json meta{
      {"format", kTextFormat},
      {"source", report.source},
      {"vocab_size", report.vocab},
      {"tokenizer", o.tokenizer.empty() ? "trained on this corpus" : o.tokenizer},
      {"end_of_document", tok->end_of_document()},
      {"documents", report.documents},
      {"train_documents", report.train_documents},
      {"val_documents", report.val_documents},
      {"train_tokens", report.train_tokens},
      {"val_tokens", report.val_tokens},
      {"validation", hold_rule(hold, o.val_fraction, vs.documents)},
      {"held_out", held_out}};
  util::write_file_atomic((dir / "meta.json").string(), meta.dump(2) + "\n");  // last
  return report;
}

}  // namespace polysketch::data
