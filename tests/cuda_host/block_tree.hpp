#pragma once
// The fixed tree of dtn::cuda::detail::block_sum (launch.cuh) on the host: kThreads values, each
// level adding the upper half onto the lower, so a host emulation sums a block's threads in the
// order a GPU does. (block_sum itself needs __syncthreads and shared memory.)
#include <cstddef>
#include <vector>

#include <dtn/cuda.cuh>

namespace host_tree {

template <class Acc>
Acc block_sum(std::vector<Acc> v) {
  constexpr int threads = dtn::cuda::detail::kThreads;
  v.resize(threads, Acc{});
  for (int half = threads / 2; half > 0; half >>= 1)
    for (int t = 0; t < half; ++t) v[static_cast<std::size_t>(t)] += v[static_cast<std::size_t>(t + half)];
  return v[0];
}

}  // namespace host_tree
