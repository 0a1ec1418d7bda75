#include "model/safetensors.h"

#include <fmt/format.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "polysketch/attention.h"

namespace polysketch::model {

std::string safetensors_encode(const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t bytes = t->data.size() * sizeof(float);
    header[name] = {{"dtype", "F32"}, {"shape", t->shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  while ((json.size() + 8) % 8 != 0) json.push_back(' ');  // align the data to 8 bytes
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  out += json;
  out.reserve(out.size() + offset);
  for (const auto& [name, t] : tensors)
    out.append(reinterpret_cast<const char*>(t->data.data()), t->data.size() * sizeof(float));
  return out;
}

std::map<std::string, Tensor> safetensors_decode(const std::string& bytes, const std::string& where) {
  if (bytes.size() < 8) throw Error(fmt::format("{}: truncated safetensors file (no header)", where));
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  if (n > bytes.size() - 8)
    throw Error(fmt::format("{}: truncated safetensors file (header of {} bytes, file {})", where,
                            n, bytes.size()));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.substr(8, n));
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: corrupt safetensors header ({})", where, e.what()));
  }
  const uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;
  std::map<std::string, Tensor> out;
  try {
    for (const auto& [name, info] : header.items()) {
      if (name == "__metadata__") continue;
      if (info.at("dtype").get<std::string>() != "F32")
        throw Error(fmt::format("{}: tensor '{}' has dtype {}, only F32 is supported", where, name,
                                info.at("dtype").get<std::string>()));
      Tensor t;
      t.shape = info.at("shape").get<std::vector<int64_t>>();
      const auto off = info.at("data_offsets").get<std::vector<uint64_t>>();
      uint64_t count = 1;
      for (auto s : t.shape) {
        if (s < 0) throw Error(fmt::format("{}: tensor '{}' has a negative dimension", where, name));
        count *= static_cast<uint64_t>(s);
      }
      if (off.size() != 2 || off[0] > off[1] || off[1] > data_size ||
          off[1] - off[0] != count * sizeof(float))
        throw Error(fmt::format("{}: tensor '{}' has data offsets inconsistent with its shape or "
                                "the file size (truncated or corrupt)",
                                where, name));
      t.data.resize(count);
      std::memcpy(t.data.data(), data + off[0], count * sizeof(float));
      out.emplace(name, std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: corrupt safetensors header ({})", where, e.what()));
  }
  return out;
}

}  // namespace polysketch::model
