// Binary token shards: a 32-byte header then the tokens, little-endian.
//   0  magic "PSKSHARD"   8  u32 version (1)   12 u32 vocab size
//   16 u64 token count    24 u32 bytes per token (2 or 4)   28 u32 reserved (0)
// Readers check every field and the file size, and reject ids >= vocab.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace polysketch::data {

void write_shard(const std::string& path, int64_t vocab, const std::vector<int32_t>& tokens);
// expected_vocab < 0: any. Throws Error naming the file and the problem.
std::vector<int32_t> read_shard(const std::string& path, int64_t expected_vocab = -1,
                                int64_t* vocab_out = nullptr);

}  // namespace polysketch::data
