#pragma once
// Conv2d and ConvTranspose2d. Weights are laid out as PyTorch's: Conv2d [out, in, k, k],
// ConvTranspose2d [in, out, k, k]; so checkpoints map one to one onto torch.nn modules.
// A transposed convolution is the backward-data pass of a convolution with the roles of input
// and output exchanged (as cuDNN computes it), so both layers share the three conv ops.
#include <string>

#include "../backend/backend.hpp"
#include "../nn/param.hpp"

namespace dtn {
namespace layers {

namespace detail {
// The geometry of a convolution with a k x k kernel from an NCHW input x to an NCHW output y.
inline ConvGeom square_conv_geom(const Shape& x, const Shape& y, int k, int stride, int pad) {
  ConvGeom g;
  g.n = static_cast<int>(x[0]);
  g.c_in = static_cast<int>(x[1]);
  g.h_in = static_cast<int>(x[2]);
  g.w_in = static_cast<int>(x[3]);
  g.c_out = static_cast<int>(y[1]);
  g.kh = g.kw = k;
  g.stride = stride;
  g.pad = pad;
  g.h_out = static_cast<int>(y[2]);
  g.w_out = static_cast<int>(y[3]);
  return g;
}
}  // namespace detail

template <class T, class Dev, int Out, int K, int Stride, int Pad, bool Bias>
class Conv2dLayer {
  static_assert(Out > 0 && K > 0 && Stride > 0 && Pad >= 0, "Conv2d: Out, K, Stride must be positive, Pad >= 0");

 public:
  static constexpr const char* kind = "Conv2d";

  Shape setup(const Shape& in) {
    if (in.rank() != 3) throw_shape(kind, "a [C, H, W] input", in);
    const int h = ConvGeom::out_size(static_cast<int>(in[1]), K, Stride, Pad);
    const int w = ConvGeom::out_size(static_cast<int>(in[2]), K, Stride, Pad);
    if (in[1] + 2 * Pad < K || in[2] + 2 * Pad < K || h <= 0 || w <= 0)
      throw_shape(kind, "an input of at least " + std::to_string(K - 2 * Pad) + "x" + std::to_string(K - 2 * Pad) +
                            " pixels for kernel " + std::to_string(K) + " and padding " + std::to_string(Pad), in);
    const int c_in = static_cast<int>(in[0]);
    declare_weight_and_bias(weight_, Shape{Out, c_in, K, K}, static_cast<long>(c_in) * K * K, bias_, Out);
    return Shape{Out, h, w};
  }
  template <class F>
  void for_each_param(F&& f) {
    f("weight", weight_);
    if (Bias) f("bias", bias_);
  }
  void forward(View<const T, Dev> x, View<T, Dev> y, bool /*train*/) {
    Backend<Dev>::conv2d_forward(geom(x.shape, y.shape), x.data, weight_.value.data, Bias ? bias_.value.data : nullptr,
                                 y.data);
  }
  void backward(View<const T, Dev> x, View<const T, Dev> /*y*/, View<const T, Dev> dy, View<T, Dev> dx,
                bool param_grads) {
    Backend<Dev>::conv2d_backward(geom(x.shape, dy.shape), x.data, dy.data, weight_.value.data, dx.data,
                                  param_grads ? weight_.grad.data : nullptr,
                                  param_grads && Bias ? bias_.grad.data : nullptr);
  }

 private:
  ConvGeom geom(const Shape& x, const Shape& y) const { return detail::square_conv_geom(x, y, K, Stride, Pad); }
  Param<T, Dev> weight_, bias_;
};

template <class T, class Dev, int Out, int K, int Stride, int Pad, bool Bias>
class ConvTranspose2dLayer {
  static_assert(Out > 0 && K > 0 && Stride > 0 && Pad >= 0,
                "ConvTranspose2d: Out, K, Stride must be positive, Pad >= 0");

 public:
  static constexpr const char* kind = "ConvTranspose2d";

  Shape setup(const Shape& in) {
    if (in.rank() != 3) throw_shape(kind, "a [C, H, W] input", in);
    const long h = (in[1] - 1) * Stride - 2 * Pad + K;
    const long w = (in[2] - 1) * Stride - 2 * Pad + K;
    if (h <= 0 || w <= 0) throw_shape(kind, "an input large enough for a positive output size", in);
    const int c_in = static_cast<int>(in[0]);
    // PyTorch computes fan_in from dimension 1 of the weight, which is Out for this layer.
    declare_weight_and_bias(weight_, Shape{c_in, Out, K, K}, static_cast<long>(Out) * K * K, bias_, Out);
    return Shape{Out, h, w};
  }
  template <class F>
  void for_each_param(F&& f) {
    f("weight", weight_);
    if (Bias) f("bias", bias_);
  }
  // y = conv^T(x): the backward-data pass of the conv that maps y-shaped images to x-shaped ones.
  void forward(View<const T, Dev> x, View<T, Dev> y, bool /*train*/) {
    const ConvGeom g = geom(x.shape, y.shape);
    Backend<Dev>::conv2d_backward_data(g, x.data, weight_.value.data, y.data);
    if (Bias) Backend<Dev>::bias_add(g.n, Out, static_cast<long>(g.h_in) * g.w_in, bias_.value.data, y.data);
  }
  void backward(View<const T, Dev> x, View<const T, Dev> /*y*/, View<const T, Dev> dy, View<T, Dev> dx,
                bool param_grads) {
    // dW[in, out] += sum over the batch of x (as the conv's output gradient) * unfolded dy; dx = conv(dy).
    Backend<Dev>::conv_transpose2d_backward(geom(x.shape, dy.shape), x.data, dy.data, weight_.value.data, dx.data,
                                            param_grads ? weight_.grad.data : nullptr,
                                            param_grads && Bias ? bias_.grad.data : nullptr);
  }

 private:
  // The equivalent convolution maps y [n, Out, H, W] to x [n, c_in, h, w].
  ConvGeom geom(const Shape& x, const Shape& y) const { return detail::square_conv_geom(y, x, K, Stride, Pad); }
  Param<T, Dev> weight_, bias_;
};

}  // namespace layers

// Layer specs: what users write in Sequential<...>. Each binds to a concrete layer for a
// value type and a device through its member template `layer<T, Dev>`.
template <int Out, int K, int Stride = 1, int Pad = 0, bool Bias = true>
struct Conv2d {
  template <class T, class Dev>
  using layer = layers::Conv2dLayer<T, Dev, Out, K, Stride, Pad, Bias>;
};
template <int Out, int K, int Stride = 1, int Pad = 0, bool Bias = true>
struct ConvTranspose2d {
  template <class T, class Dev>
  using layer = layers::ConvTranspose2dLayer<T, Dev, Out, K, Stride, Pad, Bias>;
};

}  // namespace dtn
