// Synthetic tasks that probe in-context abilities (the known weak point of linear attention).
// Each example is length + 1 tokens: the model reads tokens [0, length) and is scored only where
// `scored` is set (token t is the target predicted from tokens < t). Definitions: docs/RESULTS.md.
//   selective-copying (Mamba, Gu & Dao 2023): `items` data tokens scattered among blanks, then a
//     separator, then the same tokens in order: the answers.
//   induction-heads (Mamba): random tokens; a trigger token once, followed by the target; the
//     trigger again as the last input: the answer is the token that followed it.
//   mqar (multi-query associative recall; Zoology, Arora et al. 2023): `items` key-value pairs,
//     then every key queried once at random places among blanks: each answer is the key's value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace polysketch::data {

enum class Task { selective_copying, induction_heads, mqar };
Task parse_task(std::string_view name);  // throws Error listing the names
std::string task_name(Task task);

struct TaskOptions {
  Task task = Task::mqar;
  int64_t length = 256;  // model input tokens per example (the training context)
  int64_t vocab = 0;     // 0: the task's default (selective copying 18, induction 16, mqar 256)
  int64_t items = 0;     // 0: default (selective copying: 16 tokens; mqar: 8 pairs); induction: unused
};

// Fills in the defaults; throws Error naming the flag (--length, --vocab-size, --items) when the
// task does not fit (e.g. 4 * items + 1 > length for mqar, or too few keys for the pairs).
TaskOptions resolve_task_options(TaskOptions options);

struct TaskExamples {
  int64_t example_tokens = 0;    // length + 1
  std::vector<int32_t> tokens;   // examples concatenated
  std::vector<uint8_t> scored;   // per token: 1 if it is an answer
};

// `count` examples, a pure function of (options, seed): train and validation use different seeds.
TaskExamples generate_task(const TaskOptions& options, int64_t count, uint64_t seed);

}  // namespace polysketch::data
