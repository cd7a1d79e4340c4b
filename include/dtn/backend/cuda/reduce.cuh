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

#include <cstddef>

#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

constexpr unsigned kMaxPartials = 1024;

template <class Acc, class Term>
__global__ void __launch_bounds__(kThreads) reduce_partials_kernel(std::size_t n, Term term, Acc* partials) {
  __shared__ Acc shared[kThreads];
  Acc acc = Acc(0);
  for (std::size_t i = global_index(); i < n; i += grid_stride()) acc += term(i);
  const Acc total = block_sum(acc, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <class Acc, class Out, class Finish>
__global__ void __launch_bounds__(kThreads) reduce_final_kernel(unsigned parts, const Acc* partials, Out* out,
                                                                Finish finish) {
  __shared__ Acc shared[kThreads];
  Acc acc = Acc(0);
  for (unsigned i = threadIdx.x; i < parts; i += kThreads) acc += partials[i];
  const Acc total = block_sum(acc, shared);
  if (threadIdx.x == 0) *out = finish(total);
}

// Stores the total converted to Out, times a factor (1 for a plain sum, 1/n for a mean).
template <class Acc, class Out>
struct ScaleTo {
  Acc factor;
  __device__ Out operator()(Acc total) const { return static_cast<Out>(total * factor); }
};

// *out = finish(sum_{i<n} term(i)), deterministic, queued on the context stream.
template <class Acc, class Out, class Term, class Finish>
void reduce(std::size_t n, Term term, Out* out, Finish finish) {
  Context& ctx = context();
  const unsigned parts =
      n == 0 ? 0u : static_cast<unsigned>(std::min<std::size_t>((n + kThreads - 1) / kThreads, kMaxPartials));
  Acc* partials = static_cast<Acc*>(ctx.scratch(kMaxPartials * sizeof(Acc)));
  if (parts > 0) {
    reduce_partials_kernel<Acc><<<parts, kThreads, 0, ctx.stream()>>>(n, term, partials);
    DTN_CUDA_CHECK_LAUNCH();
  }
  reduce_final_kernel<Acc><<<1, kThreads, 0, ctx.stream()>>>(parts, partials, out, finish);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
struct ValueTerm {
  const T* x;
  __device__ double operator()(std::size_t i) const { return static_cast<double>(x[i]); }
};

template <class T>
struct NonfiniteTerm {
  const T* x;
  __device__ long long operator()(std::size_t i) const { return isfinite(x[i]) ? 0 : 1; }
};

}  // namespace detail

// *out = sum of x[0, n) (accumulated in double), deterministic.
template <class T>
void sum(std::size_t n, const T* x, T* out) {
  detail::reduce<double>(n, detail::ValueTerm<T>{x}, out, detail::ScaleTo<double, T>{1.0});
}

// *out = number of NaN/Inf in x[0, n) (a device int).
template <class T>
void count_nonfinite(std::size_t n, const T* x, int* out) {
  detail::reduce<long long>(n, detail::NonfiniteTerm<T>{x}, out, detail::ScaleTo<long long, int>{1});
}

}  // namespace cuda
}  // namespace dtn
