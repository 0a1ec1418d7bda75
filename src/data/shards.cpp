#include "data/shards.h"

#include <fmt/format.h>

#include <cstring>

#include "polysketch/error.h"
#include "util/atomic_file.h"

namespace polysketch::data {

namespace {
constexpr char kMagic[8] = {'P', 'S', 'K', 'S', 'H', 'A', 'R', 'D'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeader = 32;

template <typename U>
void put(std::string& s, size_t at, U v) {
  std::memcpy(s.data() + at, &v, sizeof(U));  // x86/arm64 hosts are little-endian
}
template <typename U>
U get(const std::string& s, size_t at) {
  U v;
  std::memcpy(&v, s.data() + at, sizeof(U));
  return v;
}

std::string header(uint64_t count, int64_t vocab, uint32_t bpt) {
  std::string h(kHeader, '\0');
  std::memcpy(h.data(), kMagic, 8);
  put<uint32_t>(h, 8, kVersion);
  put<uint32_t>(h, 12, static_cast<uint32_t>(vocab));
  put<uint64_t>(h, 16, count);
  put<uint32_t>(h, 24, bpt);
  return h;
}
}  // namespace

ShardWriter::ShardWriter(const std::string& path, int64_t vocab)
    : out_(path), vocab_(vocab), bytes_per_token_(vocab <= 65536 ? 2 : 4) {
  if (vocab < 1 || vocab > INT32_MAX) throw Error(fmt::format("{}: invalid vocab {}", path, vocab));
  out_.append(header(0, vocab, bytes_per_token_));  // the count is filled in by commit()
}

void ShardWriter::append(const std::vector<int32_t>& tokens) {
  buf_.resize(tokens.size() * bytes_per_token_);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_)
      throw Error(fmt::format("{}: token {} outside vocabulary {}", out_.path(), tokens[i], vocab_));
    if (bytes_per_token_ == 2) {
      put<uint16_t>(buf_, 2 * i, static_cast<uint16_t>(tokens[i]));
    } else {
      put<uint32_t>(buf_, 4 * i, static_cast<uint32_t>(tokens[i]));
    }
  }
  out_.append(buf_);
  count_ += tokens.size();
}

void ShardWriter::commit() {
  out_.write_at(0, header(count_, vocab_, bytes_per_token_));
  out_.commit();
}

void write_shard(const std::string& path, int64_t vocab, const std::vector<int32_t>& tokens) {
  ShardWriter w(path, vocab);
  w.append(tokens);
  w.commit();
}

namespace {
constexpr char kDocsMagic[8] = {'P', 'S', 'K', 'D', 'O', 'C', 'S', '1'};
}  // namespace

void write_document_starts(const std::string& path, const std::vector<uint64_t>& starts, uint64_t tokens) {
  std::string buf(kHeader + 8 * starts.size(), '\0');
  std::memcpy(buf.data(), kDocsMagic, 8);
  put<uint64_t>(buf, 8, starts.size());
  put<uint64_t>(buf, 16, tokens);
  for (size_t i = 0; i < starts.size(); ++i) put<uint64_t>(buf, kHeader + 8 * i, starts[i]);
  util::write_file_atomic(path, buf);
}

std::vector<uint64_t> read_document_starts(const std::string& path, uint64_t tokens) {
  const std::string buf = util::read_file(path);
  if (buf.size() < kHeader || std::memcmp(buf.data(), kDocsMagic, 8) != 0)
    throw Error(fmt::format("{}: not a polysketch document-start file", path));
  const uint64_t count = get<uint64_t>(buf, 8);
  if (count > (buf.size() - kHeader) / 8 || buf.size() != kHeader + 8 * count)
    throw Error(fmt::format("{}: size mismatch: header says {} documents, file has {} bytes "
                            "(truncated or corrupt)", path, count, buf.size()));
  if (get<uint64_t>(buf, 16) != tokens)
    throw Error(fmt::format("{}: written for {} tokens, but its shard has {} (the files do not "
                            "belong together)", path, get<uint64_t>(buf, 16), tokens));
  std::vector<uint64_t> starts(count);
  for (uint64_t i = 0; i < count; ++i) {
    starts[i] = get<uint64_t>(buf, kHeader + 8 * i);
    const bool ok = i == 0 ? starts[i] == 0 : starts[i] > starts[i - 1] && starts[i] < tokens;
    if (!ok)
      throw Error(fmt::format("{}: document {} starts at {}: starts must be 0, then strictly "
                              "increasing and below the token count {}", path, i, starts[i], tokens));
  }
  if (count == 0 && tokens > 0) throw Error(fmt::format("{}: no documents for {} tokens", path, tokens));
  return starts;
}

std::vector<int32_t> read_shard(const std::string& path, int64_t expected_vocab,
                                int64_t* vocab_out) {
  const std::string buf = util::read_file(path);
  if (buf.size() < kHeader)
    throw Error(fmt::format("{}: truncated token shard ({} bytes, header needs {})", path,
                            buf.size(), kHeader));
  if (std::memcmp(buf.data(), kMagic, 8) != 0)
    throw Error(fmt::format("{}: not a polysketch token shard (wrong magic)", path));
  if (get<uint32_t>(buf, 8) != kVersion)
    throw Error(fmt::format("{}: unsupported shard version {}", path, get<uint32_t>(buf, 8)));
  const int64_t vocab = get<uint32_t>(buf, 12);
  const uint64_t count = get<uint64_t>(buf, 16);
  const uint32_t bpt = get<uint32_t>(buf, 24);
  if (bpt != 2 && bpt != 4) throw Error(fmt::format("{}: invalid bytes per token {}", path, bpt));
  if (vocab < 1) throw Error(fmt::format("{}: invalid vocab size {}", path, vocab));
  if (count > (buf.size() - kHeader) / bpt || buf.size() != kHeader + count * bpt)
    throw Error(fmt::format("{}: size mismatch: header says {} tokens ({} bytes), file has {} "
                            "bytes (truncated or corrupt)",
                            path, count, kHeader + count * bpt, buf.size()));
  if (expected_vocab >= 0 && vocab != expected_vocab)
    throw Error(fmt::format("{}: vocab size {} does not match the expected {}", path, vocab,
                            expected_vocab));
  std::vector<int32_t> tokens(count);
  for (uint64_t i = 0; i < count; ++i) {
    const int64_t t = bpt == 2 ? get<uint16_t>(buf, kHeader + 2 * i) : get<uint32_t>(buf, kHeader + 4 * i);
    if (t >= vocab)
      throw Error(fmt::format("{}: token {} at index {} is outside the vocabulary {}", path, t, i,
                              vocab));
    tokens[i] = static_cast<int32_t>(t);
  }
  if (vocab_out) *vocab_out = vocab;
  return tokens;
}

}  // namespace polysketch::data
