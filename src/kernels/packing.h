// Packed symmetric self-tensoring: row x (length r) -> x (x) x stored as its r(r+1)/2 distinct
// entries, the off-diagonal ones scaled by sqrt(2), so that <pack(x), pack(y)> = <x,y>^2 exactly.
// Halves the dominant r^2 work of the block algorithm (docs/DESIGN.md).
#pragma once

#include <cstdint>

namespace polysketch::kernels {

inline int64_t packed_size(int64_t r) { return r * (r + 1) / 2; }

// x [rows x r] (row stride ldx) -> out [rows x r(r+1)/2]
template <typename T>
void pack_self_tensor(int64_t rows, int64_t r, const T* x, int64_t ldx, T* out);

// Backward of pack_self_tensor: dx[rows x r] += d pack / d x applied to dpacked.
template <typename T>
void pack_self_tensor_backward(int64_t rows, int64_t r, const T* x, int64_t ldx, const T* dpacked,
                               T* dx, int64_t lddx);

}  // namespace polysketch::kernels
