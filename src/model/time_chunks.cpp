#include "model/time_chunks.h"

#include <fmt/format.h>

namespace polysketch::model {

std::string chunking_problem(const ModelConfig& config, int64_t context, int64_t chunk, const char* what) {
  if (chunk < 1) return fmt::format("--chunk must be >= 1, got {}", chunk);
  if (const auto problem = chunk_layout_problem(config.attention, chunk); !problem.empty())
    return fmt::format("--chunk {}: {} in chunks {}", chunk, what, problem);
  if (context % config.attention.block != 0)
    return fmt::format("--chunk: the context {} is not a whole number of blocks of {} (the chunks "
                       "after the first start on a block)", context, config.attention.block);
  return "";
}

}  // namespace polysketch::model
