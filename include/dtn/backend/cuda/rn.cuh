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
#include <type_traits>

#include "../../core/macros.hpp"

namespace dtn {
namespace cuda {
namespace detail {

// T is float or double; both operands have the same type (no silent widening or narrowing).
template <class T>
DTN_HD T add_rn(T a, T b) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "add_rn: float or double");
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<T, float>::value) return __fadd_rn(a, b);
  else return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
template <class T>
DTN_HD T mul_rn(T a, T b) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "mul_rn: float or double");
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<T, float>::value) return __fmul_rn(a, b);
  else return __dmul_rn(a, b);
#else
  const volatile T p = a * b;
  return p;
#endif
}
template <class T>
DTN_HD T div_rn(T a, T b) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "div_rn: float or double");
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<T, float>::value) return __fdiv_rn(a, b);
  else return __ddiv_rn(a, b);
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
