#include "train/checkpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "util/atomic_file.h"

namespace polysketch::train {

namespace fs = std::filesystem;

namespace {
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
  dst = it->second.data;
}
}  // namespace

std::string save_checkpoint(const std::string& root, int64_t step, Model& model, AdamW* optimizer,
                            const std::string& tokenizer_bytes, const nlohmann::json& state) {
  fs::create_directories(root);
  const std::string name = fmt::format("step-{:08d}", step);
  const fs::path final_dir = fs::path(root) / name;
  const fs::path tmp = fs::path(root) / fmt::format(".{}.tmp-{}", name, getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const auto params = model.params();
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
  fs::remove_all(final_dir);  // re-saving the same step
  fs::rename(tmp, final_dir);
  const fs::path link_tmp = fs::path(root) / fmt::format(".latest.tmp-{}", getpid());
  fs::remove(link_tmp);
  fs::create_directory_symlink(name, link_tmp);
  fs::rename(link_tmp, fs::path(root) / "latest");
  return final_dir.string();
}

LoadedCheckpoint load_checkpoint(const std::string& path, bool with_optimizer) {
  fs::path dir = path;
  if (!fs::exists(dir)) throw Error(fmt::format("checkpoint {} does not exist", path));
  if (!fs::exists(dir / "config.json") && fs::exists(dir / "latest")) dir = fs::canonical(dir / "latest");
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
