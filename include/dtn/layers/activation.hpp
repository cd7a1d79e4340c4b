#pragma once
// Element-wise activations over the shared functors of ops/functors.hpp.
#include "../backend/backend.hpp"
#include "../nn/param.hpp"
#include "../ops/functors.hpp"

namespace dtn {
namespace layers {

template <class T, class Dev, class Op>
class ActivationLayer {
 public:
  explicit ActivationLayer(Op op = Op{}) : op_(op) {}
  Shape setup(const Shape& in) { return in; }
  template <class F>
  void for_each_param(F&&) {}
  void forward(View<const T, Dev> x, View<T, Dev> y, bool) { Backend<Dev>::map_forward(op_, x.size(), x.data, y.data); }
  void backward(View<const T, Dev> x, View<const T, Dev> y, View<const T, Dev> dy, View<T, Dev> dx, bool) {
    if (dx.data) Backend<Dev>::map_backward(op_, x.size(), x.data, y.data, dy.data, dx.data);
  }
  const Op& op() const { return op_; }

 private:
  Op op_;
};

template <class T, class Dev>
struct ReLULayer : ActivationLayer<T, Dev, ops::Relu> {
  static constexpr const char* kind = "ReLU";
  static constexpr bool fusable_after_batch_norm = true;  // see layers/batch_norm.hpp
};
template <class T, class Dev>
struct TanhLayer : ActivationLayer<T, Dev, ops::Tanh> {
  static constexpr const char* kind = "Tanh";
  static constexpr bool fusable_after_batch_norm = true;
};
template <class T, class Dev, int Num, int Den>
struct LeakyReLULayer : ActivationLayer<T, Dev, ops::LeakyRelu> {
  static_assert(Den > 0, "LeakyReLU: the slope's denominator must be positive");
  static constexpr const char* kind = "LeakyReLU";
  // ops::LeakyRelu::grad_from_output is exact for a slope >= 0 only.
  static constexpr bool fusable_after_batch_norm = Num >= 0;
  LeakyReLULayer() : ActivationLayer<T, Dev, ops::LeakyRelu>(ops::LeakyRelu{static_cast<double>(Num) / Den}) {}
};

}  // namespace layers

struct ReLU {
  template <class T, class Dev>
  using layer = layers::ReLULayer<T, Dev>;
};
struct Tanh {
  template <class T, class Dev>
  using layer = layers::TanhLayer<T, Dev>;
};
// LeakyReLU with slope Num/Den for negative inputs (default 0.01, PyTorch's; LeakyReLU<1, 5> is 0.2).
template <int Num = 1, int Den = 100>
struct LeakyReLU {
  template <class T, class Dev>
  using layer = layers::LeakyReLULayer<T, Dev, Num, Den>;
};

}  // namespace dtn
