#pragma once
// Round-to-nearest float and double arithmetic that no compiler may contract into FMAs, for the
// kernels whose results are compared with the CPU reference (Adam, the losses), which rounds
// each product on its own. On the device: the CUDA intrinsics (__fmul_rn and friends, which
// nvcc never fuses). On the host, where tests/cuda_host runs the same element code: the plain
// IEEE operation, each product read back through a volatile so that the host compiler cannot
// fuse it with the addition that follows either.
#include <cuda_runtime.h>

#include <cmath>
#include <limits>

#include "../../core/macros.hpp"

namespace dtn {
namespace cuda {
namespace detail {

DTN_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
DTN_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  const volatile float p = a * b;
  return p;
#endif
}
DTN_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
DTN_HD float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

DTN_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
DTN_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  const volatile double p = a * b;
  return p;
#endif
}
DTN_HD double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

// A quiet NaN in double (no host-only constexpr call in device code).
DTN_HD double quiet_nan() {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(0x7ff8000000000000LL);
#else
  return std::numeric_limits<double>::quiet_NaN();
#endif
}

}  // namespace detail
}  // namespace cuda
}  // namespace dtn
