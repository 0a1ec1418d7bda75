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
std::string encode_params(const std::vector<const Param<float>*>& params,
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

}  // namespace

std::string save_checkpoint(const std::string& root, int64_t step, const Model& model, AdamW* optimizer,
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
    const auto step = model::checkpoint_step_of(name);
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
  LoadedCheckpoint c;
  static_cast<model::Checkpoint&>(c) = model::read_checkpoint(path);
  if (!with_optimizer) return c;
  const auto st_path = c.dir + "/state.json";
  const auto& adam = c.state.contains("adam_steps") ? c.state.at("adam_steps") : nlohmann::json();
  if (!adam.is_number_integer() || adam.get<int64_t>() != c.state.at("step").get<int64_t>())
    throw Error(fmt::format("{}: adam_steps {} does not match step {} (needed to resume)", st_path,
                            adam.dump(), c.state.at("step").dump()));
  for (const char* f : {"optimizer_m.safetensors", "optimizer_v.safetensors"}) {
    const auto p = (fs::path(c.dir) / f).string();
    if (!fs::exists(p)) throw Error(fmt::format("{}: missing {} (needed to resume)", c.dir, f));
    for (auto& [k, t] : model::safetensors_decode(util::read_file(p), p)) c.optimizer.emplace(k, std::move(t));
  }
  return c;
}

void load_optimizer(AdamW& opt, Model& model, const std::map<std::string, model::Tensor>& state,
                    const std::string& where) {
  const auto params = model.params();
  for (size_t i = 0; i < params.size(); ++i) {
    model::copy_tensor(*params[i], state, params[i]->name + ".adam_m", opt.m()[i], where);
    model::copy_tensor(*params[i], state, params[i]->name + ".adam_v", opt.v()[i], where);
  }
}

}  // namespace polysketch::train
