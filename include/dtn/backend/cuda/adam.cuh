#pragma once
// One fused Adam kernel over a flat parameter buffer (PyTorch torch.optim.Adam semantics, with
// weight decay as L2 added to the gradient). The float operations are rn.cuh's round-to-nearest
// ones in the CPU reference's order, so the compiler cannot contract them into FMAs and the
// update matches the CPU's float arithmetic. The element update is a DTN_HD op that the host
// emulation in tests/cuda_host runs for every element and compares with Backend<Cpu>.
#include <cuda_runtime.h>

#include <cstddef>

#include "../../core/macros.hpp"
#include "../backend.hpp"
#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"
#include "reduce.cuh"
#include "rn.cuh"

namespace dtn {
namespace cuda {
namespace detail {

template <class T>
DTN_HD void adam_element(std::size_t i, T* param, const T* grad, T* m, T* v, const AdamStep<T>& s) {
  const float p = param[i];
  const float g = add_rn(grad[i], mul_rn(s.weight_decay, p));
  const float mi = add_rn(mul_rn(s.beta1, m[i]), mul_rn(s.one_minus_beta1, g));
  const float vi = add_rn(mul_rn(s.beta2, v[i]), mul_rn(mul_rn(s.one_minus_beta2, g), g));
  m[i] = mi;
  v[i] = vi;
  const float mhat = div_rn(mi, s.bias_correction1);
  const float vhat = div_rn(vi, s.bias_correction2);
  param[i] = add_rn(p, -div_rn(mul_rn(s.lr, mhat), add_rn(sqrt_rn(vhat), s.eps)));
}

template <class T>
struct AdamOp {
  T* param;
  const T* grad;
  T* m;
  T* v;
  AdamStep<T> s;
  DTN_HD void operator()(std::size_t i) const { adam_element(i, param, grad, m, v, s); }
};

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

template <class Exec>
void adam_update_on(const Exec& ex, std::size_t n, float* param, const float* grad, float* m, float* v,
                    const AdamStep<float>& s) {
  ex.map(n, AdamOp<float>{param, grad, m, v, s});
}

}  // namespace detail

inline void adam_update(std::size_t n, float* param, const float* grad, float* m, float* v, const AdamStep<float>& s) {
  detail::adam_update_on(detail::DeviceFlatExec{}, n, param, grad, m, v, s);
}

inline void adam_update_device(std::size_t n, float* param, const float* grad, float* m, float* v,
                               const AdamStep<float>* s, const int* skip) {
  if (n == 0) return;
  detail::adam_kernel_device<float><<<detail::grid_for(n), detail::kThreads, 0, stream()>>>(n, param, grad, m, v, s, skip);
  DTN_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace dtn
