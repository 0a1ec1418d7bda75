// The safetensors format (readable by other tools): u64 little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}} (+ optional "__metadata__"), then raw data.
// Only F32 tensors are written and read.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace polysketch::model {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

std::string safetensors_encode(const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                               const std::map<std::string, std::string>& metadata = {});
// Throws Error naming `where` and the problem (truncation, bad JSON, offsets, dtype, shape).
std::map<std::string, Tensor> safetensors_decode(const std::string& bytes, const std::string& where);

}  // namespace polysketch::model
