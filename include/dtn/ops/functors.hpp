#pragma once
// Element-wise formulas, written once as DTN_HD functors that both backends loop over.
//
// An activation whose gradient is a function of its output alone also has
// grad_from_output(y, g), equal bit for bit to backward(x, y, g) for every x (NaN included): batch
// norm runs such an activation fused into its own passes (layers/batch_norm.hpp), reading the
// activation's output where the unfused backward would have read its input.
#include <cmath>
#include <cstddef>

#include "../core/macros.hpp"

namespace dtn {
namespace ops {

// No activation: what an unfused batch norm applies.
struct Identity {
  template <class T>
  DTN_HD T forward(T x) const { return x; }
  template <class T>
  DTN_HD T backward(T /*x*/, T /*y*/, T g) const { return g; }
  template <class T>
  DTN_HD T grad_from_output(T /*y*/, T g) const { return g; }
};

// y > 0 exactly when x > 0 (a NaN x gives y = 0), so the output decides the gradient as the
// input does.
struct Relu {
  template <class T>
  DTN_HD T forward(T x) const { return x > T(0) ? x : T(0); }
  // Gradient given input x, output y and upstream gradient g.
  template <class T>
  DTN_HD T backward(T x, T /*y*/, T g) const { return x > T(0) ? g : T(0); }
  template <class T>
  DTN_HD T grad_from_output(T y, T g) const { return y > T(0) ? g : T(0); }
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
  // Exact only for slope >= 0 (then y > 0 exactly when x > 0; a NaN x gives a NaN y). The
  // LeakyReLU layer offers fusion only then.
  template <class T>
  DTN_HD T grad_from_output(T y, T g) const {
    const T neg = T(slope) * g;
    return y > T(0) ? g : neg;
  }
};

struct Tanh {
  template <class T>
  DTN_HD T forward(T x) const { return tanh(x); }
  template <class T>
  DTN_HD T backward(T /*x*/, T y, T g) const { return g * (T(1) - y * y); }
  template <class T>
  DTN_HD T grad_from_output(T y, T g) const { return g * (T(1) - y * y); }
};

// The gradient through activation `act` at element o of its output y, for the upstream gradient
// g. With Identity, y is not read (it may be null).
template <class Act, class T>
DTN_HD T grad_at(const Act& act, const T* y, std::size_t o, T g) {
  return act.grad_from_output(y[o], g);
}
template <class T>
DTN_HD T grad_at(const Identity&, const T*, std::size_t, T g) {
  return g;
}

// Scales uint8 pixels into [-1, 1]: x / 127.5 - 1.
struct U8ToSigned {
  template <class T>
  DTN_HD T operator()(unsigned char v) const { return T(v) * T(1.0 / 127.5) - T(1); }
};

}  // namespace ops
}  // namespace dtn
