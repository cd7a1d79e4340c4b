#pragma once
// One fused Adam kernel over a flat parameter buffer (PyTorch torch.optim.Adam semantics, with
// weight decay as L2 added to the gradient). The float operations are written with
// round-to-nearest intrinsics in the CPU reference's order, so nvcc cannot contract them into
// FMAs and the update matches the CPU's float arithmetic.
#include <cuda_runtime.h>

#include <cstddef>

#include "../backend.hpp"
#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

// A template (instantiated for float only), like every kernel here: a non-template __global__
// function in a header would be defined once per translation unit.
template <class T>
__device__ __forceinline__ void adam_element(std::size_t i, T* param, const T* grad, T* m, T* v, const AdamStep<T>& s) {
  {
    const float p = param[i];
    const float g = __fadd_rn(grad[i], __fmul_rn(s.weight_decay, p));
    const float mi = __fadd_rn(__fmul_rn(s.beta1, m[i]), __fmul_rn(s.one_minus_beta1, g));
    const float vi = __fadd_rn(__fmul_rn(s.beta2, v[i]), __fmul_rn(__fmul_rn(s.one_minus_beta2, g), g));
    m[i] = mi;
    v[i] = vi;
    const float mhat = __fdiv_rn(mi, s.bias_correction1);
    const float vhat = __fdiv_rn(vi, s.bias_correction2);
    param[i] = __fadd_rn(p, -__fdiv_rn(__fmul_rn(s.lr, mhat), __fadd_rn(__fsqrt_rn(vhat), s.eps)));
  }
}

template <class T>
__global__ void adam_kernel(std::size_t n, T* param, const T* grad, T* m, T* v, AdamStep<T> s) {
  for (std::size_t i = global_index(); i < n; i += grid_stride()) adam_element(i, param, grad, m, v, s);
}

// The same update with its scalars read from device memory and skipped when *skip != 0: a
// captured CUDA graph replays it with the scalars of each new step and a device-side
// non-finite guard, with no host round trip.
template <class T>
__global__ void adam_kernel_device(std::size_t n, T* param, const T* grad, T* m, T* v, const AdamStep<T>* sp,
                                   const int* skip) {
  if (skip != nullptr && *skip != 0) return;
  const AdamStep<T> s = *sp;
  for (std::size_t i = global_index(); i < n; i += grid_stride()) adam_element(i, param, grad, m, v, s);
}

}  // namespace detail

inline void adam_update(std::size_t n, float* param, const float* grad, float* m, float* v, const AdamStep<float>& s) {
  if (n == 0) return;
  detail::adam_kernel<float><<<detail::grid_for(n), detail::kThreads, 0, stream()>>>(n, param, grad, m, v, s);
  DTN_CUDA_CHECK_LAUNCH();
}

inline void adam_update_device(std::size_t n, float* param, const float* grad, float* m, float* v,
                               const AdamStep<float>* s, const int* skip) {
  if (n == 0) return;
  detail::adam_kernel_device<float><<<detail::grid_for(n), detail::kThreads, 0, stream()>>>(n, param, grad, m, v, s, skip);
  DTN_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace dtn
