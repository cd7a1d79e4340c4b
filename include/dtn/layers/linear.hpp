#pragma once
// Linear: y = x W^T + b on [N, in] inputs; W is [out, in] (PyTorch's layout). An input with more
// than one dimension per sample is read flattened (as after nn.Flatten).
#include <string>

#include "../backend/backend.hpp"
#include "../nn/param.hpp"

namespace dtn {
namespace layers {

template <class T, class Dev, int Out, bool Bias>
class LinearLayer {
  static_assert(Out > 0, "Linear: Out must be positive");

 public:
  static constexpr const char* kind = "Linear";

  Shape setup(const Shape& in) {
    if (in.rank() < 1 || in.numel() == 0) throw_shape(kind, "a non-empty input", in);
    in_ = static_cast<int>(in.numel());
    declare_weight_and_bias(weight_, Shape{Out, in_}, in_, bias_, Out);
    return Shape{Out};
  }
  template <class F>
  void for_each_param(F&& f) {
    f("weight", weight_);
    if (Bias) f("bias", bias_);
  }
  void forward(View<const T, Dev> x, View<T, Dev> y, bool /*train*/) {
    const int n = static_cast<int>(x.shape[0]);
    Backend<Dev>::gemm(false, true, n, Out, in_, T(1), x.data, in_, weight_.value.data, in_, T(0), y.data, Out);
    if (Bias) Backend<Dev>::bias_add(n, Out, 1L, bias_.value.data, y.data);
  }
  void backward(View<const T, Dev> x, View<const T, Dev> /*y*/, View<const T, Dev> dy, View<T, Dev> dx,
                bool param_grads) {
    const int n = static_cast<int>(x.shape[0]);
    if (param_grads) {
      // dW [out, in] += dy^T [out, n] x [n, in]
      Backend<Dev>::gemm(true, false, Out, in_, n, T(1), dy.data, Out, x.data, in_, T(1), weight_.grad.data, in_);
      if (Bias) Backend<Dev>::bias_backward(n, Out, 1L, dy.data, bias_.grad.data);
    }
    // dx [n, in] = dy [n, out] W [out, in]
    if (dx.data) Backend<Dev>::gemm(false, false, n, in_, Out, T(1), dy.data, Out, weight_.value.data, in_, T(0), dx.data, in_);
  }

 private:
  int in_ = 0;
  Param<T, Dev> weight_, bias_;
};

}  // namespace layers

template <int Out, bool Bias = true>
struct Linear {
  template <class T, class Dev>
  using layer = layers::LinearLayer<T, Dev, Out, Bias>;
};

}  // namespace dtn
