#include "train/options.h"

#include <fmt/format.h>

#include "kernels/gemm.h"
#include "util/check.h"

namespace polysketch::train {

void validate_options(const TrainOptions& o) {
  util::check_range("--batch", o.batch, 1, int64_t{1} << 20);
  util::check_range("--accum", o.accum, 1, int64_t{1} << 20);
  if (o.steps != 0) util::check_range("--steps", o.steps, 1, int64_t{1} << 40);
  util::check_range("--warmup", o.warmup, 0, int64_t{1} << 40);
  util::check_positive("--lr", o.lr, 10.0);
  util::check_range("--min-lr-ratio", o.min_lr_ratio, 0.0, 1.0);
  util::check_range("--clip", o.clip, 0.0, 1e12);
  util::check_range("--weight-decay", o.weight_decay, 0.0, 10.0);
  util::check_range("--eval-every", o.eval_every, 0, int64_t{1} << 40);
  util::check_range("--eval-batches", o.eval_batches, 1, int64_t{1} << 20);
  util::check_range("--checkpoint-every", o.checkpoint_every, 0, int64_t{1} << 40);
  util::check_range("--keep", o.keep, 0, int64_t{1} << 20);
  util::check_range("--context-parallel", o.context_parallel, 1, int64_t{1} << 20);
  util::check_range("--chunk", o.chunk, 0, int64_t{1} << 30);
  util::check_range("--time-budget (seconds)", o.time_budget_s, 0.0, 1e9);
  if (!o.init.empty() && !o.resume.empty())
    throw Error("--init starts a new run from a checkpoint's weights and --resume continues one: give one");
  if (o.init_context != 0) util::check_range("--context", o.init_context, 1, int64_t{1} << 30);
  if (o.document_mask != "auto" && o.document_mask != "on" && o.document_mask != "off")
    throw Error(fmt::format("--document-mask must be auto, on or off, got '{}'", o.document_mask));
  try {
    parse_precision(o.precision);
  } catch (const Error& e) {
    throw Error(fmt::format("--precision: {}", e.what()));
  }
}

nlohmann::json options_json(const TrainOptions& o) {
  return {{"batch", o.batch}, {"accum", o.accum}, {"steps", o.steps}, {"warmup", o.warmup},
          {"lr", o.lr}, {"min_lr_ratio", o.min_lr_ratio}, {"clip", o.clip},
          {"weight_decay", o.weight_decay}, {"seed", o.seed}, {"data_dir", o.data_dir},
          {"precision", o.precision}, {"document_mask", o.document_mask}};
}

void options_from_json(const nlohmann::json& j, TrainOptions& o, const std::string& where) {
  auto integer = [&](const char* key, int64_t& field) {
    if (!j.contains(key) || !j.at(key).is_number_integer())
      throw Error(fmt::format("{}: options.{} must be an integer", where, key));
    field = j.at(key).get<int64_t>();
  };
  auto real = [&](const char* key, double& field) {
    if (!j.contains(key) || !j.at(key).is_number())
      throw Error(fmt::format("{}: options.{} must be a number", where, key));
    field = j.at(key).get<double>();
  };
  if (!j.is_object()) throw Error(fmt::format("{}: missing training options", where));
  integer("batch", o.batch);
  integer("accum", o.accum);
  integer("steps", o.steps);
  integer("warmup", o.warmup);
  real("lr", o.lr);
  real("min_lr_ratio", o.min_lr_ratio);
  real("clip", o.clip);
  real("weight_decay", o.weight_decay);
  if (!j.contains("seed") || !j.at("seed").is_number_unsigned())
    throw Error(fmt::format("{}: options.seed must be a non-negative integer", where));
  o.seed = j.at("seed").get<uint64_t>();
  if (j.contains("precision")) {  // runs saved before bf16 existed trained in f32
    if (!j.at("precision").is_string())
      throw Error(fmt::format("{}: options.precision must be a string", where));
    o.precision = j.at("precision").get<std::string>();
  } else {
    o.precision = "f32";
  }
  // Runs saved before document masking trained without it: their resumes do too.
  o.document_mask = j.contains("document_mask") && j.at("document_mask").is_string()
                        ? j.at("document_mask").get<std::string>()
                        : "off";
  if (o.data_dir.empty()) {
    if (!j.contains("data_dir") || !j.at("data_dir").is_string())
      throw Error(fmt::format("{}: options.data_dir must be a string", where));
    o.data_dir = j.at("data_dir").get<std::string>();
  }
}

}  // namespace polysketch::train
