// Binary token shards: a 32-byte header then the tokens, little-endian.
//   0  magic "PSKSHARD"   8  u32 version (1)   12 u32 vocab size
//   16 u64 token count    24 u32 bytes per token (2 or 4)   28 u32 reserved (0)
// Readers check every field and the file size, and reject ids >= vocab.
//
// Document starts (`train.docs`, `val.docs` beside a shard): a 32-byte header then u64 offsets.
//   0  magic "PSKDOCS1"   8  u64 count   16 u64 tokens in the shard   24 u64 reserved (0)
// Offsets are token indices where a document begins: the first is 0, strictly increasing, each
// below the token count. One document runs from its start to the next (or the shard's end).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/atomic_file.h"

namespace polysketch::data {

// A shard written as it is produced (memory independent of its size), atomically: commit()
// completes the header and renames it into place; destroyed uncommitted, nothing is written.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, int64_t vocab);
  void append(const std::vector<int32_t>& tokens);
  uint64_t size() const { return count_; }
  void commit();

 private:
  util::AtomicWriter out_;
  int64_t vocab_;
  uint32_t bytes_per_token_;
  uint64_t count_ = 0;
  std::string buf_;
};

void write_document_starts(const std::string& path, const std::vector<uint64_t>& starts, uint64_t tokens);
// Checks the header against the shard's token count and every offset; throws Error naming the file.
std::vector<uint64_t> read_document_starts(const std::string& path, uint64_t tokens);

void write_shard(const std::string& path, int64_t vocab, const std::vector<int32_t>& tokens);
// expected_vocab < 0: any. Throws Error naming the file and the problem.
std::vector<int32_t> read_shard(const std::string& path, int64_t expected_vocab = -1,
                                int64_t* vocab_out = nullptr);

}  // namespace polysketch::data
