#include "model/checkpoint.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "util/atomic_file.h"

namespace polysketch::model {

namespace fs = std::filesystem;

int64_t checkpoint_step_of(const std::string& name) {
  if (name.size() <= 5 || name.compare(0, 5, "step-") != 0 || name.size() > 5 + 18) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

void copy_tensor(const Param<float>& p, const std::map<std::string, Tensor>& t,
                 const std::string& key, std::vector<float>& dst, const std::string& where) {
  const auto it = t.find(key);
  if (it == t.end()) throw Error(fmt::format("{}: missing tensor '{}'", where, key));
  if (it->second.shape != p.shape)
    throw Error(fmt::format("{}: tensor '{}' has shape [{}], the model expects [{}]", where, key,
                            fmt::join(it->second.shape, ","), fmt::join(p.shape, ",")));
  for (size_t i = 0; i < it->second.data.size(); ++i)
    if (!std::isfinite(it->second.data[i]))
      throw Error(fmt::format("{}: tensor '{}' holds NaN or Inf (element {}): a diverged or "
                              "damaged checkpoint",
                              where, key, i));
  dst = it->second.data;
}

namespace {
// The path without a trailing separator ("run/step-2/" names "run/step-2").
fs::path normal_path(const std::string& path) {
  auto p = fs::path(path).lexically_normal();
  return p.filename().empty() && p.has_parent_path() ? p.parent_path() : p;
}
}  // namespace

std::string run_directory(const std::string& path) {
  const auto p = normal_path(path);
  if (!fs::exists(p / "config.json")) return p.string();
  return p.has_parent_path() ? p.parent_path().string() : std::string(".");
}

Checkpoint read_checkpoint(const std::string& path) {
  fs::path dir = normal_path(path);
  if (!fs::exists(dir)) throw Error(fmt::format("checkpoint {} does not exist", path));
  if (!fs::is_directory(dir))
    throw Error(fmt::format("checkpoint {} is not a directory (give a run directory or its step-N)", path));
  std::error_code ec;
  if (!fs::exists(dir / "config.json") && fs::is_symlink(dir / "latest", ec)) {
    if (!fs::exists(dir / "latest"))
      throw Error(fmt::format("{}/latest points to {}, which does not exist (give one of the "
                              "run's step-N directories instead)",
                              path, fs::read_symlink(dir / "latest", ec).string()));
    dir = fs::canonical(dir / "latest");
  }
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "state.json"})
    if (!fs::exists(dir / f))
      throw Error(fmt::format("{}: not a polysketch checkpoint (missing {})", dir.string(), f));
  Checkpoint c;
  c.dir = dir.string();
  const auto cfg_path = (dir / "config.json").string();
  c.config = ModelConfig::from_json(util::read_file(cfg_path), cfg_path);
  c.tokenizer_bytes = util::read_file((dir / "tokenizer.model").string());
  const auto st_path = (dir / "state.json").string();
  try {
    c.state = nlohmann::json::parse(util::read_file(st_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: corrupt state ({})", st_path, e.what()));
  }
  // `step` is an exact non-negative integer agreeing with the directory's name.
  if (!c.state.is_object() || !c.state.contains("step"))
    throw Error(fmt::format("{}: missing field 'step'", st_path));
  const auto& sv = c.state.at("step");
  if (!sv.is_number_integer() || sv.get<int64_t>() < 0 || sv.get<int64_t>() > (int64_t{1} << 48))
    throw Error(fmt::format("{}: 'step' must be a non-negative integer, got {}", st_path, sv.dump()));
  const int64_t named = checkpoint_step_of(dir.filename().string());
  if (named >= 0 && named != sv.get<int64_t>())
    throw Error(fmt::format("{}: step {} does not match the directory {}", st_path, sv.dump(),
                            dir.filename().string()));
  const auto w_path = (dir / "model.safetensors").string();
  c.weights = safetensors_decode(util::read_file(w_path), w_path);
  return c;
}

void load_weights(Model& model, const std::map<std::string, Tensor>& weights, const std::string& where) {
  const auto params = model.params();
  if (weights.size() != params.size())
    throw Error(fmt::format("{}: holds {} tensors, the model configured by config.json has {}",
                            where, weights.size(), params.size()));
  for (auto* p : params) copy_tensor(*p, weights, p->name, p->value, where);
}

}  // namespace polysketch::model
