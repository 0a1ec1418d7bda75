#include "model/safetensors.h"

#include <fmt/format.h>

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "polysketch/error.h"

namespace polysketch::model {

namespace {
constexpr uint64_t kMaxHeader = 100'000'000;  // the format's own limit

std::string crc_of(const char* data, uint64_t bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (bytes > 0) {  // zlib takes at most 4 GiB per call
    const uInt chunk = static_cast<uInt>(std::min<uint64_t>(bytes, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data), chunk);
    data += chunk;
    bytes -= chunk;
  }
  return fmt::format("{:08x}", static_cast<uint32_t>(crc));
}
}  // namespace

std::string safetensors_encode(const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  auto meta = metadata;
  for (const auto& [name, t] : tensors)
    meta[kChecksumPrefix + name] = crc_of(reinterpret_cast<const char*>(t->data.data()),
                                          t->data.size() * sizeof(float));
  header["__metadata__"] = meta;
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
  if (n > bytes.size() - 8 || n > kMaxHeader)
    throw Error(fmt::format("{}: corrupt or truncated safetensors file (header of {} bytes, file {})",
                            where, n, bytes.size()));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.substr(8, n));
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: corrupt safetensors header ({})", where, e.what()));
  }
  if (!header.is_object()) throw Error(fmt::format("{}: corrupt safetensors header (not an object)", where));
  const uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;
  std::map<std::string, Tensor> out;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  std::map<std::string, std::string> checksums;
  try {
    for (const auto& [name, info] : header.items()) {
      if (name == "__metadata__") {
        for (const auto& [key, value] : info.items())
          if (key.rfind(kChecksumPrefix, 0) == 0) checksums[key.substr(kChecksumPrefix.size())] = value.get<std::string>();
        continue;
      }
      if (info.at("dtype").get<std::string>() != "F32")
        throw Error(fmt::format("{}: tensor '{}' has dtype {}, only F32 is supported", where, name,
                                info.at("dtype").get<std::string>()));
      Tensor t;
      t.shape = info.at("shape").get<std::vector<int64_t>>();
      const auto off = info.at("data_offsets").get<std::vector<uint64_t>>();
      uint64_t count = 1;
      for (auto s : t.shape) {
        if (s < 0) throw Error(fmt::format("{}: tensor '{}' has a negative dimension", where, name));
        if (s > 0 && count > data_size / static_cast<uint64_t>(s))
          throw Error(fmt::format("{}: tensor '{}' has a shape larger than the file", where, name));
        count *= static_cast<uint64_t>(s);
      }
      if (off.size() != 2 || off[0] > off[1] || off[1] > data_size ||
          off[1] - off[0] != count * sizeof(float))
        throw Error(fmt::format("{}: tensor '{}' has data offsets inconsistent with its shape or "
                                "the file size (truncated or corrupt)",
                                where, name));
      spans.emplace_back(off[0], off[1]);
      t.data.resize(count);
      std::memcpy(t.data.data(), data + off[0], count * sizeof(float));
      out.emplace(name, std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: corrupt safetensors header ({})", where, e.what()));
  }
  // The format requires the tensors to tile the data area exactly: no gaps, no overlaps.
  std::sort(spans.begin(), spans.end());
  uint64_t end = 0;
  for (const auto& [b, e] : spans) {
    if (b != end) throw Error(fmt::format("{}: tensor data has a gap or an overlap at byte {} (corrupt)", where, b));
    end = e;
  }
  if (end != data_size)
    throw Error(fmt::format("{}: {} bytes of data after the last tensor (corrupt or wrong header length)",
                            where, data_size - end));
  // Files we wrote carry a CRC-32 per tensor; files from other tools may have none.
  for (const auto& [name, crc] : checksums) {
    const auto it = out.find(name);
    if (it == out.end())
      throw Error(fmt::format("{}: checksum for a tensor '{}' that the file does not hold", where, name));
    const auto& d = it->second.data;
    if (crc_of(reinterpret_cast<const char*>(d.data()), d.size() * sizeof(float)) != crc)
      throw Error(fmt::format("{}: tensor '{}' fails its checksum (the file is corrupt)", where, name));
  }
  if (!checksums.empty() && checksums.size() != out.size())
    for (const auto& [name, t] : out)
      if (!checksums.count(name))
        throw Error(fmt::format("{}: tensor '{}' has no checksum (the header is corrupt)", where, name));
  return out;
}

}  // namespace polysketch::model
