#pragma once
// Launch helpers shared by the kernels: block size, grid size for grid-stride loops, and a
// deterministic block-wide sum.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

namespace dtn {
namespace cuda {
namespace detail {

constexpr int kThreads = 256;           // threads per block for every hand-written kernel
constexpr unsigned kMaxBlocks = 65535;  // grid cap; kernels use grid-stride loops beyond it

// Blocks for n elements at kThreads per block (at least 1, at most kMaxBlocks).
inline unsigned grid_for(std::size_t n) {
  const std::size_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(blocks, kMaxBlocks)));
}

// Index of this thread and stride of a grid-stride loop, in size_t (no int overflow).
__device__ __forceinline__ std::size_t global_index() {
  return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ std::size_t grid_stride() { return static_cast<std::size_t>(gridDim.x) * blockDim.x; }

// Sum of v over the block, returned to every thread. A fixed tree over shared memory: the same
// inputs in the same threads always give bitwise the same result (no atomics, no warp-order
// dependence). Requires blockDim.x == kThreads; `shared` holds kThreads values.
template <class Acc>
__device__ Acc block_sum(Acc v, Acc* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const Acc total = shared[0];
  __syncthreads();  // shared may be reused right after
  return total;
}

}  // namespace detail
}  // namespace cuda
}  // namespace dtn
