#include "data/tokenizer.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <regex>

#include "polysketch/error.h"
#include "util/atomic_file.h"

namespace polysketch::data {

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& lines_;
  size_t i_ = 0;
};
}  // namespace

std::string Tokenizer::train(const std::vector<std::string>& lines, int vocab_size) {
  if (vocab_size < 16) throw Error(fmt::format("--vocab-size must be >= 16, got {}", vocab_size));
  LineIterator it(lines);
  std::string model;
  sentencepiece::SetRandomGeneratorSeed(1);  // its sampling and shuffling, when it does any
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      {{"vocab_size", std::to_string(vocab_size)},
       {"model_type", "unigram"},
       {"character_coverage", "1.0"},
       {"byte_fallback", "true"},  // any UTF-8 text round-trips, unseen characters included
       {"num_threads", "2"},
       {"input_sentence_size", "2000000"},
       {"shuffle_input_sentence", "true"},
       {"max_sentence_length", "16384"},
       {"bos_id", "-1"},
       {"eos_id", "1"},  // </s>: ends each document in the shards
       {"minloglevel", "1"}},
      &it, &model);
  if (!status.ok()) {
    // Turn sentencepiece's two size complaints into advice in terms of --vocab-size.
    const std::string msg = status.ToString();
    std::smatch m;
    if (std::regex_search(msg, m, std::regex(R"(smaller than required_chars\. \d+ vs (\d+))")))
      throw Error(fmt::format("--vocab-size {} is too small for this text: it needs at least {} "
                              "pieces (one per distinct character, the 256 byte pieces, <unk> and </s>)",
                              vocab_size, m[1].str()));
    if (std::regex_search(msg, m, std::regex(R"(Please set it to a value <= (\d+))")))
      throw Error(fmt::format("--vocab-size {} is too large for this text: at most {}", vocab_size,
                              m[1].str()));
    throw Error(fmt::format("tokenizer training failed: {}", msg));
  }
  return model;
}

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_bytes(const std::string& model, const std::string& where) {
  Tokenizer t;
  const auto status = t.impl_->sp.LoadFromSerializedProto(model);
  if (!status.ok())
    throw Error(fmt::format("{}: not a valid sentencepiece model ({})", where, status.ToString()));
  t.bytes_ = model;
  return t;
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  return from_bytes(util::read_file(path), path);
}

Tokenizer Tokenizer::from_source(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return from_file(path);
  for (const auto& candidate : {fs::path(path) / "tokenizer.model", fs::path(path) / "latest" / "tokenizer.model"})
    if (fs::is_regular_file(candidate, ec)) return from_file(candidate.string());
  throw Error(fmt::format("{}: no tokenizer.model in it (nor in its latest checkpoint)", path));
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) throw Error(fmt::format("tokenizer: cannot encode text ({})", status.ToString()));
  return {ids.begin(), ids.end()};
}

std::vector<int32_t> Tokenizer::encode_lines(const std::vector<std::string>& lines) const {
  std::vector<int32_t> ids;
  for (const auto& l : lines) {
    const auto e = encode(l);
    ids.insert(ids.end(), e.begin(), e.end());
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  const auto status = impl_->sp.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok()) throw Error(fmt::format("tokenizer: cannot decode ids ({})", status.ToString()));
  return text;
}

int Tokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }

int32_t Tokenizer::end_of_document() const {
  const int id = impl_->sp.eos_id();
  return id >= 0 && impl_->sp.IsControl(id) ? id : -1;
}

std::vector<int16_t> Tokenizer::byte_pieces() const {
  std::vector<int16_t> bytes(static_cast<size_t>(vocab_size()), -1);
  for (int id = 0; id < vocab_size(); ++id) {
    if (!impl_->sp.IsByte(id)) continue;
    const std::string& piece = impl_->sp.IdToPiece(id);  // "<0xAB>"
    if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>')
      bytes[id] = static_cast<int16_t>(std::stoi(piece.substr(3, 2), nullptr, 16));
  }
  return bytes;
}

std::vector<std::string> Tokenizer::piece_texts() const {
  const auto bytes = byte_pieces();
  std::vector<std::string> texts(static_cast<size_t>(vocab_size()));
  static const std::string kWordMark = "\xe2\x96\x81";  // U+2581, SentencePiece's space
  for (int id = 0; id < vocab_size(); ++id) {
    if (bytes[id] >= 0) {
      texts[id] = std::string(1, static_cast<char>(bytes[id]));
      continue;
    }
    const std::string& piece = impl_->sp.IdToPiece(id);
    for (size_t i = 0; i < piece.size();) {
      const bool mark = piece.compare(i, kWordMark.size(), kWordMark) == 0;
      texts[id] += mark ? ' ' : piece[i];
      i += mark ? kWordMark.size() : 1;
    }
  }
  return texts;
}

}  // namespace polysketch::data
