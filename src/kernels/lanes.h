// One AVX-512 register's worth of floats as a GCC vector type, for kernels that keep their
// accumulators in registers (any target: GCC splits the type where vectors are narrower).
#pragma once

namespace polysketch::kernels {

inline constexpr int kLanes = 16;
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float))));
// The same, loadable from any float address (matrix rows are not vector aligned).
using UnalignedLanes = float __attribute__((vector_size(kLanes * sizeof(float)), aligned(alignof(float)), may_alias));

}  // namespace polysketch::kernels
