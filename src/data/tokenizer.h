// SentencePiece tokenizer (Debian libsentencepiece): training from text and encode/decode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace polysketch::data {

class Tokenizer {
 public:
  // Trains a unigram model with `vocab_size` pieces (one of them the end-of-document control
  // piece </s>) on the given lines; returns the serialized model (the bytes of tokenizer.model).
  // Deterministic: the same lines give the same model.
  static std::string train(const std::vector<std::string>& lines, int vocab_size);

  static Tokenizer from_file(const std::string& path);
  // `path`: a tokenizer.model file, a directory holding one (a data directory, a checkpoint), or
  // a run directory (its latest checkpoint's). Throws Error naming what is missing.
  static Tokenizer from_source(const std::string& path);
  static Tokenizer from_bytes(const std::string& model, const std::string& where);
  Tokenizer(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(const std::string& text) const;
  // Each line encoded, the ids concatenated: how `polysketch prepare` tokenizes text.
  std::vector<int32_t> encode_lines(const std::vector<std::string>& lines) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  int vocab_size() const;
  // The id that ends every document in a data directory (the control piece </s>), or -1 for a
  // tokenizer without one (made before documents were recorded, or elsewhere).
  int32_t end_of_document() const;
  // Per id: the byte a byte-fallback piece (<0xNN>) stands for, else -1.
  std::vector<int16_t> byte_pieces() const;
  // Per id: the bytes the piece stands for on its own ("\xe2\x96\x81" word marks as spaces, a
  // byte piece as its byte, a control piece as its name, e.g. "</s>"): how a server shows tokens.
  std::vector<std::string> piece_texts() const;
  const std::string& model_bytes() const { return bytes_; }

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string bytes_;
};

}  // namespace polysketch::data
