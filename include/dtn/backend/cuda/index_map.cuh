#pragma once
// Element kernels with 32-bit indices. An op is a DTN_HD functor op(i) that writes output element
// i; index_map_kernel calls it for i in [0, total) in a grid-stride loop. Ops that must find an
// element's image plane, row and column divide i by divisors fixed before the launch
// (FastDivmod: a multiply-high and a shift, where `i / plane` on a 64-bit index costs a long
// emulated division per element on a GPU). That needs i < 2^31: run_plane_chunks cuts a tensor of
// equal planes into launches of whole planes that each stay below that, so any size still works
// (one launch for every shape of the example).
//
// Written against an executor with run(op, total): DeviceIndexExec below launches the kernel; the
// host emulation in tests/cuda_host calls op(i) for every i, so the index arithmetic of the
// pooling, resize and channel-repeat kernels is checked against Backend<Cpu> without a GPU.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "../../core/error.hpp"
#include "../../core/fastdiv.hpp"
#include "check.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

// Elements per launch: below FastDivmod's dividend limit. (i + grid stride stays below 2^32:
// the stride is at most kMaxBlocks * kThreads < 2^24.)
constexpr std::uint32_t kIndexLimit = FastDivmod::limit - 1;

template <class Op>
__global__ void __launch_bounds__(kThreads) index_map_kernel(Op op, std::uint32_t total) {
  const std::uint32_t stride = gridDim.x * blockDim.x;
  for (std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) op(i);
}

struct DeviceIndexExec {
  cudaStream_t stream;
  template <class Op>
  void run(const Op& op, std::uint32_t total) const {
    if (total == 0) return;
    index_map_kernel<<<grid_for(total), kThreads, 0, stream>>>(op, total);
    DTN_CUDA_CHECK_LAUNCH();
  }
};

// Throws argument_error naming `where` if one plane (an image's channel, or a whole image for
// channel repeat) has more than `limit` elements. run_plane_chunks checks the plane it launches
// over; the ops also index the plane of the tensor the launch does not run over (a pooling's
// input plane when it runs over outputs, and the reverse) with 32-bit numbers, which their
// callers check against kIndexLimit, whatever the chunking.
inline void check_plane(std::size_t plane, const char* where, std::uint32_t limit = kIndexLimit) {
  if (plane > limit)
    throw argument_error(std::string("dtn::Backend<Cuda>::") + where + ": one plane (an image's channel, or a whole " +
                         "image for channel repeat) of " + std::to_string(plane) +
                         " elements exceeds the kernels' 32-bit index range (" + std::to_string(limit) + ")");
}

// ex.run(make_op(p0), np * per_plane) for consecutive chunks of np whole planes starting at plane
// p0, each chunk at most max_elems elements (max_elems below kIndexLimit only in tests, to force
// several chunks); make_op(p0) returns the op with its pointers moved to plane p0. Throws
// argument_error naming `where` if one plane alone exceeds max_elems.
template <class Exec, class MakeOp>
void run_plane_chunks(const Exec& ex, std::size_t planes, std::size_t per_plane, const char* where, MakeOp&& make_op,
                      std::uint32_t max_elems = kIndexLimit) {
  if (planes == 0 || per_plane == 0) return;
  check_plane(per_plane, where, max_elems);
  const std::size_t per_chunk = max_elems / per_plane;
  for (std::size_t p0 = 0; p0 < planes; p0 += per_chunk) {
    const std::size_t np = planes - p0 < per_chunk ? planes - p0 : per_chunk;
    ex.run(make_op(p0), static_cast<std::uint32_t>(np * per_plane));
  }
}

inline FastDivmod divisor(std::size_t d) { return FastDivmod(static_cast<std::uint32_t>(d)); }

}  // namespace detail
}  // namespace cuda
}  // namespace dtn
