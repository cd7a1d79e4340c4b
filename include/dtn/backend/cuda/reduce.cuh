#pragma once
// Deterministic reductions: a fixed two-pass tree, no atomics.
//
// Pass 1 runs a grid of G = min(ceil(n / kThreads), kMaxPartials) blocks; thread t of block b
// accumulates term(i) for i = b*kThreads + t, + G*kThreads, ... in that order, the block sums
// its threads with a fixed tree and writes partial[b]. Pass 2 (one block) sums the G partials
// the same way and writes finish(total) to device memory. G depends only on n, so the same inputs
// always give bitwise the same result, on any GPU. Nothing waits for the host and the partials
// live in the context's scratch buffer, so a reduction can be captured in a CUDA graph.
//
// A Term is a functor with `__device__ Acc operator()(std::size_t i) const`; it is called exactly
// once per index, so it may also write a per-element output (losses use this to fuse the
// gradient into the same pass). A Finish maps the total to the stored value.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "../../core/macros.hpp"
#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

constexpr unsigned kMaxPartials = 1024;

// Blocks of the first pass for n terms (0 for n = 0).
inline unsigned reduce_parts(std::size_t n) {
  return n == 0 ? 0u : static_cast<unsigned>(std::min<std::size_t>((n + kThreads - 1) / kThreads, kMaxPartials));
}

// What one thread does. The kernels call these with blockIdx.x and threadIdx.x; a host test runs
// them for every (block, thread) and sums with block_sum's tree (tests/cuda_host), so the order
// of the terms is checked without a GPU.
//
// Thread t of block b of `parts`: term(i) for i = b*kThreads + t, + parts*kThreads, ... in order.
template <class Acc, class Term>
DTN_HD Acc reduce_thread_sum(std::size_t n, const Term& term, unsigned parts, unsigned b, unsigned t) {
  Acc acc = Acc(0);
  const std::size_t stride = static_cast<std::size_t>(parts) * kThreads;
  for (std::size_t i = static_cast<std::size_t>(b) * kThreads + t; i < n; i += stride) acc += term(i);
  return acc;
}
// Thread t of the second pass: partials t, t + kThreads, ... in order.
template <class Acc>
DTN_HD Acc reduce_final_thread_sum(unsigned parts, const Acc* partials, unsigned t) {
  Acc acc = Acc(0);
  for (unsigned i = t; i < parts; i += kThreads) acc += partials[i];
  return acc;
}

template <class Acc, class Term>
__global__ void __launch_bounds__(kThreads) reduce_partials_kernel(std::size_t n, Term term, Acc* partials) {
  __shared__ Acc shared[kThreads];
  const Acc total = block_sum(reduce_thread_sum<Acc>(n, term, gridDim.x, blockIdx.x, threadIdx.x), shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <class Acc, class Out, class Finish>
__global__ void __launch_bounds__(kThreads) reduce_final_kernel(unsigned parts, const Acc* partials, Out* out,
                                                                Finish finish) {
  __shared__ Acc shared[kThreads];
  const Acc total = block_sum(reduce_final_thread_sum(parts, partials, threadIdx.x), shared);
  if (threadIdx.x == 0) *out = finish(total);
}

// Stores the total converted to Out, times a factor (1 for a plain sum, 1/n for a mean).
template <class Acc, class Out>
struct ScaleTo {
  Acc factor;
  DTN_HD Out operator()(Acc total) const { return static_cast<Out>(total * factor); }
};

// *out = finish(sum_{i<n} term(i)), deterministic, queued on the context stream.
template <class Acc, class Out, class Term, class Finish>
void reduce(std::size_t n, Term term, Out* out, Finish finish) {
  Context& ctx = context();
  const unsigned parts = reduce_parts(n);
  Acc* partials = static_cast<Acc*>(ctx.scratch(kMaxPartials * sizeof(Acc)));
  if (parts > 0) {
    reduce_partials_kernel<Acc><<<parts, kThreads, 0, ctx.stream()>>>(n, term, partials);
    DTN_CUDA_CHECK_LAUNCH();
  }
  reduce_final_kernel<Acc><<<1, kThreads, 0, ctx.stream()>>>(parts, partials, out, finish);
  DTN_CUDA_CHECK_LAUNCH();
}

// op(i) for every i in [0, n), in a grid-stride loop (element-wise work on flat buffers).
template <class Op>
__global__ void flat_map_kernel(std::size_t n, Op op) {
  for (std::size_t i = global_index(); i < n; i += grid_stride()) op(i);
}

// The executor of the flat reductions and maps (losses, argmax, Adam) on the context stream.
// The host emulation in tests/cuda_host has the same two members and runs them over every
// block and thread, so those ops' *_on sequences are checked against Backend<Cpu> without a GPU.
struct DeviceFlatExec {
  template <class Acc, class Out, class Term, class Finish>
  void reduce(std::size_t n, const Term& term, Out* out, const Finish& finish) const {
    detail::reduce<Acc>(n, term, out, finish);
  }
  template <class Op>
  void map(std::size_t n, const Op& op) const {
    if (n == 0) return;
    flat_map_kernel<<<grid_for(n), kThreads, 0, stream()>>>(n, op);
    DTN_CUDA_CHECK_LAUNCH();
  }
};

template <class T>
struct ValueTerm {
  const T* x;
  DTN_HD double operator()(std::size_t i) const { return static_cast<double>(x[i]); }
};

template <class T>
struct NonfiniteTerm {
  const T* x;
  DTN_HD long long operator()(std::size_t i) const {
#if defined(__CUDA_ARCH__)
    return isfinite(x[i]) ? 0 : 1;
#else
    return std::isfinite(x[i]) ? 0 : 1;
#endif
  }
};

template <class Exec, class T>
void sum_on(const Exec& ex, std::size_t n, const T* x, T* out) {
  ex.template reduce<double>(n, ValueTerm<T>{x}, out, ScaleTo<double, T>{1.0});
}

template <class Exec, class T>
void count_nonfinite_on(const Exec& ex, std::size_t n, const T* x, int* out) {
  ex.template reduce<long long>(n, NonfiniteTerm<T>{x}, out, ScaleTo<long long, int>{1});
}

}  // namespace detail

// *out = sum of x[0, n) (accumulated in double), deterministic.
template <class T>
void sum(std::size_t n, const T* x, T* out) {
  detail::sum_on(detail::DeviceFlatExec{}, n, x, out);
}

// *out = number of NaN/Inf in x[0, n) (a device int).
template <class T>
void count_nonfinite(std::size_t n, const T* x, int* out) {
  detail::count_nonfinite_on(detail::DeviceFlatExec{}, n, x, out);
}

}  // namespace cuda
}  // namespace dtn
