// FastDivmod (the GPU kernels' index division) against plain division, on the host: the same
// DTN_HD code the kernels run, with the host's mulhi.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "dtn/core/fastdiv.hpp"

namespace {

// The dividends most likely to expose an off-by-one: around multiples of d, around powers of
// two, the ends of the domain, and random ones.
std::vector<std::uint32_t> dividends(std::uint32_t d, std::mt19937& rng) {
  std::vector<std::uint32_t> ns;
  const std::uint32_t top = dtn::FastDivmod::limit - 1;
  auto add = [&](std::uint64_t n) {
    if (n <= top) ns.push_back(static_cast<std::uint32_t>(n));
  };
  for (std::uint64_t n = 0; n < 4096; ++n) add(n);
  for (std::uint64_t q : {std::uint64_t(1), std::uint64_t(2), std::uint64_t(3), std::uint64_t(1000),
                          std::uint64_t(top / d), std::uint64_t(top / d) - 1})
    for (int delta = -2; delta <= 2; ++delta) add(q * d + static_cast<std::uint64_t>(static_cast<std::int64_t>(delta)));
  for (int b = 1; b <= 31; ++b)
    for (int delta = -2; delta <= 2; ++delta) add((std::uint64_t(1) << b) + static_cast<std::uint64_t>(delta));
  add(top);
  std::uniform_int_distribution<std::uint32_t> any(0, top);
  for (int i = 0; i < 2000; ++i) add(any(rng));
  return ns;
}

long long mismatches(std::uint32_t d, std::mt19937& rng) {
  const dtn::FastDivmod f(d);
  long long bad = 0;
  for (std::uint32_t n : dividends(d, rng)) {
    std::uint32_t q = 0, r = 0;
    f.divmod(n, q, r);
    if (q != n / d || r != n % d || f.div(n) != n / d) ++bad;
  }
  return bad;
}

}  // namespace

TEST_CASE("FastDivmod equals plain division over its whole domain's edge cases") {
  std::mt19937 rng(7);
  std::vector<std::uint32_t> divisors;
  for (std::uint32_t d = 1; d <= 1100; ++d) divisors.push_back(d);
  for (int b = 11; b <= 30; ++b)
    for (int delta = -3; delta <= 3; ++delta) divisors.push_back((std::uint32_t(1) << b) + static_cast<std::uint32_t>(delta));
  divisors.push_back(dtn::FastDivmod::limit - 1);
  std::uniform_int_distribution<std::uint32_t> any_d(1, dtn::FastDivmod::limit - 1);
  for (int i = 0; i < 200; ++i) divisors.push_back(any_d(rng));
  long long bad = 0;
  for (std::uint32_t d : divisors) bad += mismatches(d, rng);
  CHECK(bad == 0);
  CHECK(divisors.size() > 1300);
}

TEST_CASE("FastDivmod: every dividend below 2^20 for the tensor plane sizes dtn uses") {
  // hw of the example's layers (1x1 .. 32x32) and odd sizes; all n < 2^20 exhaustively.
  for (std::uint32_t d : {1u, 3u, 4u, 16u, 25u, 49u, 64u, 100u, 256u, 784u, 1000u, 1024u}) {
    const dtn::FastDivmod f(d);
    long long bad = 0;
    for (std::uint32_t n = 0; n < (1u << 20); ++n)
      if (f.div(n) != n / d) ++bad;
    CHECK_MESSAGE(bad == 0, "divisor " << d);
  }
}

TEST_CASE("FastDivmod: divisor 1 by default, and 0 or >= 2^31 rejected") {
  const dtn::FastDivmod one;
  CHECK(one.divisor() == 1);
  CHECK(one.div(12345) == 12345);
  CHECK_THROWS_AS(dtn::FastDivmod(0), dtn::argument_error);
  CHECK_THROWS_AS(dtn::FastDivmod{dtn::FastDivmod::limit}, dtn::argument_error);  // braces: with parentheses Clang reads a declaration
  CHECK_THROWS_WITH(dtn::FastDivmod(0), doctest::Contains("outside [1, 2^31)"));
}
