#pragma once
// A seeded random source whose sequences are the same on every platform: std::mt19937_64 is
// fully specified by the standard, and the uniform/normal transforms below are written out
// (the standard's distributions are implementation-defined).
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>

#include "error.hpp"

namespace dtn {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) : engine_(seed) {}
  std::uint64_t next_u64() { return engine_(); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal (Box-Muller; one value per call, the second is discarded for simplicity).
  double normal() {
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  double normal(double mean, double stddev) { return mean + stddev * normal(); }
  // Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) {
    // Rejection sampling avoids modulo bias.
    const std::uint64_t limit = ~std::uint64_t(0) - (~std::uint64_t(0) % n);
    std::uint64_t r;
    do r = engine_();
    while (r >= limit);
    return r % n;
  }
  // The full engine state as text (for checkpoints) and back.
  std::string state() const {
    std::ostringstream os;
    os << engine_;
    return os.str();
  }
  void set_state(const std::string& s) {
    std::istringstream is(s);
    is >> engine_;
    if (!is) throw error("dtn::Rng::set_state: malformed generator state");
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace dtn
