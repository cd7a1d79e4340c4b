#pragma once
// Shape: up to 4 dimensions (NCHW for images, N x F for features).
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>

#include "error.hpp"

namespace dtn {

class Shape {
 public:
  static constexpr int max_rank = 4;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) {
    if (dims.size() > static_cast<std::size_t>(max_rank))
      throw argument_error("dtn::Shape: rank " + std::to_string(dims.size()) + " exceeds 4");
    for (std::int64_t d : dims) {
      if (d < 0) throw argument_error("dtn::Shape: negative dimension " + std::to_string(d));
      dims_[static_cast<std::size_t>(rank_++)] = d;
    }
  }

  int rank() const { return rank_; }
  std::int64_t operator[](int i) const { return dims_[static_cast<std::size_t>(i)]; }
  std::int64_t& operator[](int i) { return dims_[static_cast<std::size_t>(i)]; }

  std::size_t numel() const {
    if (rank_ == 0) return 0;
    std::size_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= static_cast<std::size_t>(dims_[static_cast<std::size_t>(i)]);
    return n;
  }
  // Elements per sample: product of all dimensions but the first.
  std::size_t sample_numel() const {
    std::size_t n = 1;
    for (int i = 1; i < rank_; ++i) n *= static_cast<std::size_t>(dims_[static_cast<std::size_t>(i)]);
    return n;
  }
  // The same shape with the first (batch) dimension replaced.
  Shape with_batch(std::int64_t n) const {
    Shape s = *this;
    s.dims_[0] = n;
    return s;
  }

  friend bool operator==(const Shape& a, const Shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
    return true;
  }
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

  std::string str() const {
    std::ostringstream os;
    os << '[';
    for (int i = 0; i < rank_; ++i) os << (i ? ", " : "") << dims_[static_cast<std::size_t>(i)];
    os << ']';
    return os.str();
  }

 private:
  std::array<std::int64_t, max_rank> dims_{};
  int rank_ = 0;
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

// Throws shape_error "<where>: expected <what>, got <shape>".
[[noreturn]] inline void throw_shape(const std::string& where, const std::string& expected, const Shape& got) {
  throw shape_error(where + ": expected " + expected + ", got " + got.str());
}

}  // namespace dtn
