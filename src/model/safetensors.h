// The safetensors format (readable by other tools): u64 little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}} (+ optional "__metadata__"), then raw data.
// Only F32 tensors are written and read. We add a CRC-32 of each tensor's bytes to the metadata
// ("crc32.NAME": 8 hex digits), checked on reading when present.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace polysketch::model {

inline const std::string kChecksumPrefix = "crc32.";

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

std::string safetensors_encode(const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                               const std::map<std::string, std::string>& metadata = {});
// Throws Error naming `where` and the problem (truncation, bad JSON, offsets, dtype, shape, data
// not tiling the data area exactly, a failed checksum with the tensor's name).
std::map<std::string, Tensor> safetensors_decode(const std::string& bytes, const std::string& where);

}  // namespace polysketch::model
