#include "train/checkpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "util/atomic_file.h"

namespace polysketch::train {

namespace fs = std::filesystem;

namespace {
// "step-00000042" -> 42; -1 for any other name.
int64_t step_of(const std::string& name) {
  if (name.size() <= 5 || name.compare(0, 5, "step-") != 0 || name.size() > 5 + 18) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::string encode_params(const std::vector<Param<float>*>& params,
                          const std::vector<std::vector<float>>* values, const char* suffix) {
  std::vector<model::Tensor> tensors;
  tensors.reserve(params.size());
  std::vector<std::pair<std::string, const model::Tensor*>> named;
  for (size_t i = 0; i < params.size(); ++i)
    tensors.push_back({params[i]->shape, values ? (*values)[i] : params[i]->value});
  for (size_t i = 0; i < params.size(); ++i)
    named.emplace_back(params[i]->name + suffix, &tensors[i]);
  return model::safetensors_encode(named, {{"format", "pt"}});
}

void copy_checked(Param<float>& p, const std::map<std::string, model::Tensor>& t,
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

// state.json: `step` (and `adam_steps`, needed to resume) are exact non-negative integers that
// agree with each other and with the directory's name.
void validate_state(const nlohmann::json& st, const std::string& dir_name, bool with_optimizer,
                    const std::string& where) {
  auto count = [&](const char* key) -> int64_t {
    if (!st.is_object() || !st.contains(key))
      throw Error(fmt::format("{}: missing field '{}'", where, key));
    const auto& v = st.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (int64_t{1} << 48))
      throw Error(fmt::format("{}: '{}' must be a non-negative integer, got {}", where, key, v.dump()));
    return v.get<int64_t>();
  };
  const int64_t step = count("step");
  const int64_t named = step_of(dir_name);
  if (named >= 0 && named != step)
    throw Error(fmt::format("{}: step {} does not match the directory {}", where, step, dir_name));
  if (with_optimizer && count("adam_steps") != step)
    throw Error(fmt::format("{}: adam_steps {} does not match step {}", where,
                            st.at("adam_steps").dump(), step));
}
}  // namespace

std::string save_checkpoint(const std::string& root, int64_t step, Model& model, AdamW* optimizer,
                            const std::string& tokenizer_bytes, const nlohmann::json& state) {
  const auto params = model.params();
  for (const auto* p : params)
    for (float v : p->value)
      if (!std::isfinite(v))
        throw Error(fmt::format("step {}: tensor '{}' holds NaN or Inf; not saved (the previous "
                                "checkpoint is kept; lower --lr?)",
                                step, p->name));
  fs::create_directories(root);
  const std::string name = fmt::format("step-{:08d}", step);
  const fs::path final_dir = fs::path(root) / name;
  const fs::path tmp = fs::path(root) / fmt::format(".{}.tmp-{}", name, getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  util::write_file_atomic(tmp / "model.safetensors", encode_params(params, nullptr, ""));
  if (optimizer) {
    util::write_file_atomic(tmp / "optimizer_m.safetensors",
                            encode_params(params, &optimizer->m(), ".adam_m"));
    util::write_file_atomic(tmp / "optimizer_v.safetensors",
                            encode_params(params, &optimizer->v(), ".adam_v"));
  }
  util::write_file_atomic(tmp / "config.json", model.config().to_json());
  util::write_file_atomic(tmp / "tokenizer.model", tokenizer_bytes);
  nlohmann::json st = state;
  st["step"] = step;
  if (optimizer) st["adam_steps"] = optimizer->steps();
  util::write_file_atomic(tmp / "state.json", st.dump(2) + "\n");
  util::fsync_dir(tmp.string());
  if (!fs::exists(final_dir)) {
    fs::rename(tmp, final_dir);
  } else if (util::exchange_paths(tmp.string(), final_dir.string())) {
    fs::remove_all(tmp);  // re-saving a step: swapped in one step, tmp now holds the old save
  } else {
    // No atomic exchange on this file system: a kill between these two renames loses this step
    // (the directory of another step, if any, is untouched).
    const fs::path old = fs::path(root) / fmt::format(".{}.tmp-{}-old", name, getpid());
    fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fs::remove_all(old);
  }
  util::fsync_dir(root);
  const fs::path link_tmp = fs::path(root) / fmt::format(".latest.tmp-{}", getpid());
  fs::remove(link_tmp);
  fs::create_directory_symlink(name, link_tmp);
  fs::rename(link_tmp, fs::path(root) / "latest");
  util::fsync_dir(root);
  return final_dir.string();
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    const auto step = step_of(name);
    if (step >= 0 && e.is_directory()) out.emplace_back(step, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void prune_checkpoints(const std::string& root, int64_t keep) {
  if (keep < 1) return;
  std::error_code ec;
  const fs::path latest = fs::read_symlink(fs::path(root) / "latest", ec);
  auto all = list_checkpoints(root);
  // Never the one `latest` names, whatever its step; then the oldest steps go first.
  std::erase_if(all, [&](const auto& c) { return !ec && fs::path(c.second).filename() == latest; });
  const int64_t excess = static_cast<int64_t>(all.size()) - (keep - (ec ? 0 : 1));
  for (int64_t i = 0; i < excess; ++i) fs::remove_all(all[static_cast<size_t>(i)].second);
}

LoadedCheckpoint load_checkpoint(const std::string& path, bool with_optimizer) {
  fs::path dir = path;
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
  LoadedCheckpoint c;
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
  validate_state(c.state, dir.filename().string(), with_optimizer, st_path);
  const auto w_path = (dir / "model.safetensors").string();
  c.weights = model::safetensors_decode(util::read_file(w_path), w_path);
  if (with_optimizer) {
    for (const char* f : {"optimizer_m.safetensors", "optimizer_v.safetensors"}) {
      const auto p = (dir / f).string();
      if (!fs::exists(p)) throw Error(fmt::format("{}: missing {} (needed to resume)", dir.string(), f));
      for (auto& [k, t] : model::safetensors_decode(util::read_file(p), p)) c.optimizer.emplace(k, std::move(t));
    }
  }
  return c;
}

void load_weights(Model& model, const std::map<std::string, model::Tensor>& weights,
                  const std::string& where) {
  const auto params = model.params();
  if (weights.size() != params.size())
    throw Error(fmt::format("{}: holds {} tensors, the model configured by config.json has {}",
                            where, weights.size(), params.size()));
  for (auto* p : params) copy_checked(*p, weights, p->name, p->value, where);
}

void load_optimizer(AdamW& opt, Model& model, const std::map<std::string, model::Tensor>& state,
                    const std::string& where) {
  const auto params = model.params();
  for (size_t i = 0; i < params.size(); ++i) {
    copy_checked(*params[i], state, params[i]->name + ".adam_m", opt.m()[i], where);
    copy_checked(*params[i], state, params[i]->name + ".adam_v", opt.v()[i], where);
  }
}

}  // namespace polysketch::train
