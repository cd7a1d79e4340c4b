#pragma once
// Element-wise formulas, written once as DTN_HD functors that both backends loop over.
#include <cmath>

#include "../core/macros.hpp"

namespace dtn {
namespace ops {

struct Relu {
  template <class T>
  DTN_HD T forward(T x) const { return x > T(0) ? x : T(0); }
  // Gradient given input x, output y and upstream gradient g.
  template <class T>
  DTN_HD T backward(T x, T /*y*/, T g) const { return x > T(0) ? g : T(0); }
};

// The product with the slope is formed unconditionally and then selected: a multiply inside the
// conditional is an operation that may trap, which GCC (-ftrapping-math, the default) will not
// speculate, so the loop would keep a branch and not vectorise (measured: 3% of a DTN step each
// for forward and backward on the CPU).
struct LeakyRelu {
  double slope = 0.01;  // PyTorch's default
  template <class T>
  DTN_HD T forward(T x) const {
    const T neg = T(slope) * x;
    return x > T(0) ? x : neg;
  }
  template <class T>
  DTN_HD T backward(T x, T /*y*/, T g) const {
    const T neg = T(slope) * g;
    return x > T(0) ? g : neg;
  }
};

struct Tanh {
  template <class T>
  DTN_HD T forward(T x) const { return tanh(x); }
  template <class T>
  DTN_HD T backward(T /*x*/, T y, T g) const { return g * (T(1) - y * y); }
};

// Scales uint8 pixels into [-1, 1]: x / 127.5 - 1.
struct U8ToSigned {
  template <class T>
  DTN_HD T operator()(unsigned char v) const { return T(v) * T(1.0 / 127.5) - T(1); }
};

}  // namespace ops
}  // namespace dtn
