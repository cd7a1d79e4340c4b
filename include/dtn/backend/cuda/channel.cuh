#pragma once
// Per-channel work on [n, c, hw] tensors (NCHW, spatial dims flattened): reductions over n and hw
// for each channel (batch-norm statistics, bias gradients) and maps with per-channel coefficients
// (bias add, batch-norm normalisation).
//
// The grid is (c, slices): blockIdx.x is the channel, blockIdx.y a slice of it. Channel ch's
// m = n*hw elements, numbered e = img*hw + j, are cut into `slices` runs of `len` consecutive e
// (the last runs may be shorter or empty). Thread t of a block takes e = start + t,
// start + t + kThreads, ...: a warp reads consecutive j of one image plane, so loads coalesce.
// The slice count depends on m only (about kThreads * kElemsPerThread elements per block, at
// most kMaxSlices), never on the GPU, so a reduction's order and its result bit for bit are the
// same on any device. A reduction block sums its threads with block_sum (a fixed tree) into one
// partial per (channel, slice); a finishing kernel, one thread per channel, adds that channel's
// partials in slice order. No atomics.
//
// Before this, batch norm and the bias gradient ran one block per channel: 64 to 128 blocks for
// most of the example's layers on a 132-SM GPU, one block per SM, each thread waiting on one load
// at a time (and a 64-bit division per element). Element numbers are 32-bit here (e / hw by
// FastDivmod): m must be below 2^31 per channel (checked; offsets are size_t, so the tensor
// itself may be larger).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "../../core/error.hpp"
#include "../../core/fastdiv.hpp"
#include "../../core/macros.hpp"
#include "check.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

constexpr unsigned kElemsPerThread = 16;  // per thread per block, before the slice cap
constexpr unsigned kMaxSlices = 64;

struct ChannelGrid {
  unsigned c = 0;       // channels
  unsigned hw = 1;      // elements per image plane
  unsigned m = 0;       // elements per channel, n * hw
  unsigned slices = 1;  // blocks per channel
  unsigned len = 0;     // elements per slice, ceil(m / slices)
  FastDivmod by_hw;

  // Offset in the [n, c, hw] tensor of element e (< m) of channel ch.
  DTN_HD std::size_t offset(std::uint32_t e, unsigned ch) const {
    std::uint32_t img = 0, j = 0;
    by_hw.divmod(e, img, j);
    return (static_cast<std::size_t>(img) * c + ch) * hw + j;
  }
  // Slice s is the elements [begin(s), end(s)) of each channel.
  DTN_HD unsigned begin(unsigned s) const { return s * len; }
  DTN_HD unsigned end(unsigned s) const { return s * len + len < m ? s * len + len : m; }
  dim3 grid() const { return dim3(c, slices); }
  std::size_t partials() const { return static_cast<std::size_t>(c) * slices; }
};

// The grid for an [n, c, hw] tensor. Throws argument_error (naming `where`) for a negative n, a
// c or hw below 1, or n * hw >= 2^31.
inline ChannelGrid channel_grid(int n, int c, long hw, const char* where) {
  const unsigned long long m = static_cast<unsigned long long>(n < 0 ? 0 : n) * static_cast<unsigned long long>(hw < 0 ? 0 : hw);
  if (n < 0 || c <= 0 || hw <= 0 || m >= FastDivmod::limit || static_cast<unsigned long long>(hw) >= FastDivmod::limit)
    throw argument_error(std::string("dtn::Backend<Cuda>::") + where + ": unsupported shape [n " + std::to_string(n) +
                         ", c " + std::to_string(c) + ", hw " + std::to_string(hw) +
                         "] (n must be >= 0, c and hw positive, and n * hw below 2^31)");
  ChannelGrid g;
  g.c = static_cast<unsigned>(c);
  g.hw = static_cast<unsigned>(hw);
  g.m = static_cast<unsigned>(m);
  const unsigned long long per_block = static_cast<unsigned long long>(kThreads) * kElemsPerThread;
  const unsigned long long want = (m + per_block - 1) / per_block;
  g.slices = static_cast<unsigned>(want < 1 ? 1 : (want > kMaxSlices ? kMaxSlices : want));
  g.len = static_cast<unsigned>((m + g.slices - 1) / g.slices);
  g.by_hw = FastDivmod(g.hw);
  return g;
}

// Two sums carried together (batch-norm backward: sum dy and sum dy * xhat). Trivial, so it can
// live in __shared__ memory for block_sum.
struct SumPair {
  double a, b;
  DTN_HD SumPair& operator+=(const SumPair& o) {
    a += o.a;
    b += o.b;
    return *this;
  }
};

// What one thread of block (ch, s) does. The kernels below call these with threadIdx.x; a host
// test runs the same functions over every (ch, s, t) (tests/cuda_host), so the index arithmetic,
// the functors and the order of stages are checked on machines without a GPU.
//
// Thread t's share of slice s of channel ch: term summed over e = begin + t, + kThreads, ...
template <class Acc, class Term>
DTN_HD Acc channel_thread_sum(const ChannelGrid& g, const Term& term, unsigned ch, unsigned s, unsigned t) {
  Acc acc{};
  for (unsigned e = g.begin(s) + t; e < g.end(s); e += kThreads) acc += term(g.offset(e, ch), ch);
  return acc;
}
// Thread t's share of a map: f (the channel's op.at(ch)) at the same elements.
template <class F>
DTN_HD void channel_thread_map(const ChannelGrid& g, const F& f, unsigned ch, unsigned s, unsigned t) {
  for (unsigned e = g.begin(s) + t; e < g.end(s); e += kThreads) f(g.offset(e, ch));
}
// Channel ch's partials added in slice order, handed to finish.
template <class Acc, class Finish>
DTN_HD void channel_finish_one(const ChannelGrid& g, const Acc* partials, const Finish& finish, unsigned ch) {
  const Acc* p = partials + static_cast<std::size_t>(ch) * g.slices;
  Acc total{};
  for (unsigned s = 0; s < g.slices; ++s) total += p[s];
  finish(ch, total);
}

// Thread t of block (ch, s) of a finishing map: channel ch's partials added in slice order (as
// channel_finish_one, so the total is bitwise the same in every block of the channel), turned
// into the channel's coefficients by op.coeffs(ch, total); thread 0 of slice 0 alone stores what
// the channel keeps (op.store: running statistics, parameter gradients), then every thread maps
// its elements with op.at(coefficients). One kernel instead of a finishing kernel and a map.
template <class Acc, class Op>
DTN_HD void channel_thread_finish_map(const ChannelGrid& g, const Acc* partials, const Op& op, unsigned ch, unsigned s,
                                      unsigned t) {
  const Acc* p = partials + static_cast<std::size_t>(ch) * g.slices;
  Acc total{};
  for (unsigned i = 0; i < g.slices; ++i) total += p[i];
  const auto k = op.coeffs(ch, total);
  if (s == 0 && t == 0) op.store(ch, k);
  channel_thread_map(g, op.at(k), ch, s, t);
}

// partials[ch * slices + s] = the block's threads' sums added with block_sum (a fixed tree).
template <class Acc, class Term>
__global__ void __launch_bounds__(kThreads) channel_partials_kernel(ChannelGrid g, Term term, Acc* partials) {
  __shared__ Acc shared[kThreads];
  const unsigned ch = blockIdx.x, s = blockIdx.y;
  const Acc total = block_sum(channel_thread_sum<Acc>(g, term, ch, s, threadIdx.x), shared);
  if (threadIdx.x == 0) partials[static_cast<std::size_t>(ch) * g.slices + s] = total;
}

// finish(ch, total) for each channel, one thread each.
template <class Acc, class Finish>
__global__ void channel_finish_kernel(ChannelGrid g, const Acc* partials, Finish finish) {
  for (std::size_t ch = global_index(); ch < g.c; ch += grid_stride())
    channel_finish_one(g, partials, finish, static_cast<unsigned>(ch));
}

// For each element of each channel: op.at(ch) once per block (the channel's coefficients, kept
// in registers), then the returned functor called with each element's offset.
template <class Op>
__global__ void __launch_bounds__(kThreads) channel_map_kernel(ChannelGrid g, Op op) {
  const unsigned ch = blockIdx.x;
  channel_thread_map(g, op.at(ch), ch, blockIdx.y, threadIdx.x);
}

// The finishing map above, one block per (channel, slice); runs for m = 0 too (the stores).
template <class Acc, class Op>
__global__ void __launch_bounds__(kThreads) channel_finish_map_kernel(ChannelGrid g, const Acc* partials, Op op) {
  channel_thread_finish_map(g, partials, op, blockIdx.x, blockIdx.y, threadIdx.x);
}

// ---- Segments: a batch made of up to kMaxSegments batches one after the other (batch norm on
// Network::forward's segments), each reduced on its own, in one launch per stage. Segment z has
// the grid channel_grid would give it alone (so its sums are bit for bit those of a launch on it
// alone) and its own op (pointers already offset to its samples); the launch grid is
// (c, the largest slice count, segments), and blocks past a segment's slice count return at once.
// What every segment of a channel keeps (running statistics, parameter gradients) is stored by
// one thread, segment after segment, in order, exactly as consecutive launches would.
constexpr unsigned kMaxSegments = 4;

struct SegmentGrids {
  ChannelGrid g[kMaxSegments];
  std::size_t first_partial[kMaxSegments] = {};  // where segment z's partials start
  unsigned count = 0;
  unsigned max_slices = 1;
  dim3 grid() const { return dim3(g[0].c, max_slices, count); }
  std::size_t partials() const { return first_partial[count - 1] + g[count - 1].partials(); }
  // Elements of segment z's [n, c, hw] tensor, and of all the segments'.
  std::size_t numel(unsigned z) const { return static_cast<std::size_t>(g[z].m) * g[z].c; }
  std::size_t numel() const {
    std::size_t n = 0;
    for (unsigned z = 0; z < count; ++z) n += numel(z);
    return n;
  }
};
// The grids of `count` (1..kMaxSegments) segments of sizes[z] images of [c, hw] each.
inline SegmentGrids segment_grids(int count, const int* sizes, int c, long hw, const char* where) {
  if (count < 1 || count > static_cast<int>(kMaxSegments))
    throw argument_error(std::string("dtn::Backend<Cuda>::") + where + ": " + std::to_string(count) +
                         " segments in one launch (1 to " + std::to_string(kMaxSegments) + ")");
  SegmentGrids sg;
  sg.count = static_cast<unsigned>(count);
  std::size_t at = 0;
  for (unsigned z = 0; z < sg.count; ++z) {
    if (sizes[z] < 1)
      throw argument_error(std::string("dtn::Backend<Cuda>::") + where + ": a segment of " + std::to_string(sizes[z]) +
                           " images");
    sg.g[z] = channel_grid(sizes[z], c, hw, where);
    sg.first_partial[z] = at;
    at += sg.g[z].partials();
    if (sg.g[z].slices > sg.max_slices) sg.max_slices = sg.g[z].slices;
  }
  return sg;
}
// One op (or term) per segment, passed by value to a kernel.
template <class Op>
struct PerSegment {
  Op v[kMaxSegments];
};

// Channel ch's partials added in slice order (as channel_finish_one and the finishing map do).
template <class Acc>
DTN_HD Acc channel_total(const ChannelGrid& g, const Acc* partials, unsigned ch) {
  const Acc* p = partials + static_cast<std::size_t>(ch) * g.slices;
  Acc total{};
  for (unsigned i = 0; i < g.slices; ++i) total += p[i];
  return total;
}
// Thread t of block (ch, s, z) of a segmented finishing map: as channel_thread_finish_map on
// segment z, except that op.store runs for every segment of the channel, in segment order, in
// thread 0 of slice 0 of segment 0.
template <class Acc, class Op>
DTN_HD void channel_thread_finish_map_seg(const SegmentGrids& sg, const Acc* partials, const Op* ops, unsigned ch,
                                          unsigned s, unsigned z, unsigned t) {
  const ChannelGrid& g = sg.g[z];
  if (s >= g.slices) return;
  if (s == 0 && t == 0 && z == 0)
    for (unsigned q = 0; q < sg.count; ++q)
      ops[q].store(ch, ops[q].coeffs(ch, channel_total(sg.g[q], partials + sg.first_partial[q], ch)));
  const auto k = ops[z].coeffs(ch, channel_total(g, partials + sg.first_partial[z], ch));
  channel_thread_map(g, ops[z].at(k), ch, s, t);
}
// A segmented finish: finish[z](ch, total of segment z) for each segment in order, one thread
// per channel.
template <class Acc, class Finish>
DTN_HD void channel_finish_one_seg(const SegmentGrids& sg, const Acc* partials, const Finish* finish, unsigned ch) {
  for (unsigned q = 0; q < sg.count; ++q) channel_finish_one(sg.g[q], partials + sg.first_partial[q], finish[q], ch);
}

template <class Acc, class Term>
__global__ void __launch_bounds__(kThreads)
    channel_partials_seg_kernel(SegmentGrids sg, PerSegment<Term> terms, Acc* partials) {
  __shared__ Acc shared[kThreads];
  const unsigned ch = blockIdx.x, s = blockIdx.y, z = blockIdx.z;
  const ChannelGrid& g = sg.g[z];
  if (s >= g.slices) return;  // the whole block: block_sum's barriers are not split
  const Acc total = block_sum(channel_thread_sum<Acc>(g, terms.v[z], ch, s, threadIdx.x), shared);
  if (threadIdx.x == 0) partials[sg.first_partial[z] + static_cast<std::size_t>(ch) * g.slices + s] = total;
}
template <class Acc, class Finish>
__global__ void channel_finish_seg_kernel(SegmentGrids sg, const Acc* partials, PerSegment<Finish> finish) {
  for (std::size_t ch = global_index(); ch < sg.g[0].c; ch += grid_stride())
    channel_finish_one_seg(sg, partials, finish.v, static_cast<unsigned>(ch));
}
template <class Op>
__global__ void __launch_bounds__(kThreads) channel_map_seg_kernel(SegmentGrids sg, PerSegment<Op> ops) {
  const unsigned ch = blockIdx.x, s = blockIdx.y, z = blockIdx.z;
  if (s >= sg.g[z].slices) return;
  channel_thread_map(sg.g[z], ops.v[z].at(ch), ch, s, threadIdx.x);
}
template <class Acc, class Op>
__global__ void __launch_bounds__(kThreads)
    channel_finish_map_seg_kernel(SegmentGrids sg, const Acc* partials, PerSegment<Op> ops) {
  channel_thread_finish_map_seg(sg, partials, ops.v, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
}

// Runs the stages on a stream. Ops that chain stages are written once against an executor (this
// one, or the host emulation in tests/cuda_host) with the members partials, finish, map and
// finish_map, and their segmented forms (the same names on SegmentGrids and PerSegment ops).
struct DeviceExec {
  cudaStream_t stream;
  template <class Acc, class Term>
  void partials(const ChannelGrid& g, const Term& term, Acc* out) const {
    channel_partials_kernel<Acc><<<g.grid(), kThreads, 0, stream>>>(g, term, out);
    DTN_CUDA_CHECK_LAUNCH();
  }
  template <class Acc, class Finish>
  void finish(const ChannelGrid& g, const Acc* partials, const Finish& f) const {
    channel_finish_kernel<Acc><<<grid_for(g.c), kThreads, 0, stream>>>(g, partials, f);
    DTN_CUDA_CHECK_LAUNCH();
  }
  template <class Op>
  void map(const ChannelGrid& g, const Op& op) const {
    if (g.m == 0) return;
    channel_map_kernel<<<g.grid(), kThreads, 0, stream>>>(g, op);
    DTN_CUDA_CHECK_LAUNCH();
  }
  template <class Acc, class Op>
  void finish_map(const ChannelGrid& g, const Acc* partials, const Op& op) const {
    channel_finish_map_kernel<Acc><<<g.grid(), kThreads, 0, stream>>>(g, partials, op);
    DTN_CUDA_CHECK_LAUNCH();
  }
  template <class Acc, class Term>
  void partials(const SegmentGrids& sg, const PerSegment<Term>& terms, Acc* out) const {
    channel_partials_seg_kernel<Acc><<<sg.grid(), kThreads, 0, stream>>>(sg, terms, out);
    DTN_CUDA_CHECK_LAUNCH();
  }
  template <class Acc, class Finish>
  void finish(const SegmentGrids& sg, const Acc* partials, const PerSegment<Finish>& f) const {
    channel_finish_seg_kernel<Acc><<<grid_for(sg.g[0].c), kThreads, 0, stream>>>(sg, partials, f);
    DTN_CUDA_CHECK_LAUNCH();
  }
  template <class Op>
  void map(const SegmentGrids& sg, const PerSegment<Op>& ops) const {
    channel_map_seg_kernel<<<sg.grid(), kThreads, 0, stream>>>(sg, ops);
    DTN_CUDA_CHECK_LAUNCH();
  }
  template <class Acc, class Op>
  void finish_map(const SegmentGrids& sg, const Acc* partials, const PerSegment<Op>& ops) const {
    channel_finish_map_seg_kernel<Acc><<<sg.grid(), kThreads, 0, stream>>>(sg, partials, ops);
    DTN_CUDA_CHECK_LAUNCH();
  }
};

}  // namespace detail
}  // namespace cuda
}  // namespace dtn
