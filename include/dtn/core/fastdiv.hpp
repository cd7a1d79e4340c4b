#pragma once
// FastDivmod: division of a 32-bit index by a divisor fixed before a kernel starts, as one
// multiply-high, one add and one shift instead of the ~20-instruction sequence of a 32-bit
// division (or the much longer emulation of a 64-bit one) that `i / hw` costs on a GPU.
//
// The method (round-up multiplier, Granlund & Montgomery 1994): for a divisor d, let s be the
// least integer with 2^s >= d and M = floor(2^32 (2^s - d) / d) + 1 (< 2^32, since 2^s - d < d).
// Then q = (mulhi(n, M) + n) >> s equals floor(n / d). Proof: mulhi(n, M) + n is
// floor(n (M + 2^32) / 2^32), and M + 2^32 = 2^(32+s)/d + err with 0 < err <= 1, so
// n (M + 2^32) / 2^(32+s) = n/d + n err / 2^(32+s), where the added term is below
// 2^31 / 2^(32+s) <= 1/(2d) for n < 2^31: too small to carry n/d (whose fraction is at most
// 1 - 1/d) past the next integer. Hence the domain: divisors in [1, 2^31), dividends in
// [0, 2^31) (which also keeps mulhi(n, M) + n below 2^32). tests/cpu/test_fastdiv.cpp checks it
// against plain division.
//
// Host and device (DTN_HD): the kernels take it by value; the host tests run the same code.
#include <cstdint>
#include <string>

#include "error.hpp"
#include "macros.hpp"

namespace dtn {

class FastDivmod {
 public:
  static constexpr std::uint32_t limit = std::uint32_t(1) << 31;  // divisors and dividends below this

  FastDivmod() = default;  // divides by 1
  explicit FastDivmod(std::uint32_t d) : d_(d) {
    if (d == 0 || d >= limit)
      throw argument_error("dtn::FastDivmod: divisor " + std::to_string(d) + " is outside [1, 2^31)");
    while ((std::uint64_t(1) << shift_) < d) ++shift_;
    const std::uint64_t m = ((std::uint64_t(1) << 32) * ((std::uint64_t(1) << shift_) - d)) / d + 1;
    magic_ = static_cast<std::uint32_t>(m);
  }

  DTN_HD std::uint32_t divisor() const { return d_; }
  // floor(n / divisor) for n < 2^31.
  DTN_HD std::uint32_t div(std::uint32_t n) const { return (mulhi(n, magic_) + n) >> shift_; }
  // n = q * divisor + r, 0 <= r < divisor, for n < 2^31.
  DTN_HD void divmod(std::uint32_t n, std::uint32_t& q, std::uint32_t& r) const {
    q = div(n);
    r = n - q * d_;
  }

 private:
  DTN_HD static std::uint32_t mulhi(std::uint32_t a, std::uint32_t b) {
#if defined(__CUDA_ARCH__)
    return __umulhi(a, b);
#else
    return static_cast<std::uint32_t>((std::uint64_t(a) * b) >> 32);
#endif
  }

  std::uint32_t d_ = 1;
  std::uint32_t magic_ = 1;  // for d = 1: s = 0, M = 1, and mulhi(n, 1) = 0
  std::uint32_t shift_ = 0;
};

}  // namespace dtn
