#pragma once
// MaxPool2d with a K x K window and stride S (default S = K), no padding.
#include <string>

#include "../backend/backend.hpp"
#include "../nn/param.hpp"

namespace dtn {
namespace layers {

template <class T, class Dev, int K, int S>
class MaxPool2dLayer {
  static_assert(K > 0 && S > 0, "MaxPool2d: K and S must be positive");

 public:
  static constexpr const char* kind = "MaxPool2d";

  Shape setup(const Shape& in) {
    if (in.rank() != 3) throw_shape(kind, "a [C, H, W] input", in);
    if (in[1] < K || in[2] < K) throw_shape(kind, "an input of at least " + std::to_string(K) + "x" + std::to_string(K), in);
    return Shape{in[0], (in[1] - K) / S + 1, (in[2] - K) / S + 1};
  }
  template <class F>
  void for_each_param(F&&) {}
  void forward(View<const T, Dev> x, View<T, Dev> y, bool /*train*/) {
    argmax_.resize(Shape{static_cast<std::int64_t>(y.size())});
    Backend<Dev>::maxpool_forward(geom(x.shape, y.shape), x.data, y.data, argmax_.data());
  }
  void backward(View<const T, Dev> x, View<const T, Dev> y, View<const T, Dev> dy, View<T, Dev> dx, bool) {
    if (dx.data) Backend<Dev>::maxpool_backward(geom(x.shape, y.shape), dy.data, argmax_.data(), dx.data);
  }

 private:
  static PoolGeom geom(const Shape& x, const Shape& y) {
    PoolGeom g;
    g.n = static_cast<int>(x[0]);
    g.c = static_cast<int>(x[1]);
    g.h_in = static_cast<int>(x[2]);
    g.w_in = static_cast<int>(x[3]);
    g.k = K;
    g.stride = S;
    g.h_out = static_cast<int>(y[2]);
    g.w_out = static_cast<int>(y[3]);
    return g;
  }
  Tensor<int, Dev> argmax_;
};

}  // namespace layers

template <int K, int S = K>
struct MaxPool2d {
  template <class T, class Dev>
  using layer = layers::MaxPool2dLayer<T, Dev, K, S>;
};

}  // namespace dtn
