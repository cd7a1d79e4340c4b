#pragma once
// Layers that move pixels without parameters: Flatten, RepeatChannels (1 -> 3 for f, which reads
// RGB) and ResizeBilinear (MNIST 28 -> 32).
#include <string>

#include "../backend/backend.hpp"
#include "../nn/param.hpp"

namespace dtn {
namespace layers {

template <class T, class Dev>
class FlattenLayer {
 public:
  static constexpr const char* kind = "Flatten";
  Shape setup(const Shape& in) { return Shape{static_cast<std::int64_t>(in.numel())}; }
  template <class F>
  void for_each_param(F&&) {}
  void forward(View<const T, Dev> x, View<T, Dev> y, bool) { Copy<Dev, Dev>::run(y.data, x.data, x.size() * sizeof(T)); }
  void backward(View<const T, Dev>, View<const T, Dev>, View<const T, Dev> dy, View<T, Dev> dx, bool) {
    if (dx.data) Copy<Dev, Dev>::run(dx.data, dy.data, dy.size() * sizeof(T));
  }
};

template <class T, class Dev, int Reps>
class RepeatChannelsLayer {
  static_assert(Reps > 0, "RepeatChannels: Reps must be positive");

 public:
  static constexpr const char* kind = "RepeatChannels";
  Shape setup(const Shape& in) {
    if (in.rank() != 3) throw_shape(kind, "a [C, H, W] input", in);
    return Shape{in[0] * Reps, in[1], in[2]};
  }
  template <class F>
  void for_each_param(F&&) {}
  void forward(View<const T, Dev> x, View<T, Dev> y, bool) {
    Backend<Dev>::repeat_channels_forward(static_cast<int>(x.shape[0]), static_cast<int>(x.shape[1]), Reps,
                                          static_cast<long>(x.shape[2] * x.shape[3]), x.data, y.data);
  }
  void backward(View<const T, Dev> x, View<const T, Dev>, View<const T, Dev> dy, View<T, Dev> dx, bool) {
    if (dx.data)
      Backend<Dev>::repeat_channels_backward(static_cast<int>(x.shape[0]), static_cast<int>(x.shape[1]), Reps,
                                             static_cast<long>(x.shape[2] * x.shape[3]), dy.data, dx.data);
  }
};

template <class T, class Dev, int H, int W>
class ResizeBilinearLayer {
  static_assert(H > 0 && W > 0, "ResizeBilinear: the output size must be positive");

 public:
  static constexpr const char* kind = "ResizeBilinear";
  Shape setup(const Shape& in) {
    if (in.rank() != 3) throw_shape(kind, "a [C, H, W] input", in);
    return Shape{in[0], H, W};
  }
  template <class F>
  void for_each_param(F&&) {}
  void forward(View<const T, Dev> x, View<T, Dev> y, bool) { Backend<Dev>::resize_bilinear_forward(geom(x.shape), x.data, y.data); }
  void backward(View<const T, Dev> x, View<const T, Dev>, View<const T, Dev> dy, View<T, Dev> dx, bool) {
    if (dx.data) Backend<Dev>::resize_bilinear_backward(geom(x.shape), dy.data, dx.data);
  }

 private:
  static ResizeGeom geom(const Shape& x) {
    ResizeGeom g;
    g.n = static_cast<int>(x[0]);
    g.c = static_cast<int>(x[1]);
    g.h_in = static_cast<int>(x[2]);
    g.w_in = static_cast<int>(x[3]);
    g.h_out = H;
    g.w_out = W;
    return g;
  }
};

}  // namespace layers

struct Flatten {
  template <class T, class Dev>
  using layer = layers::FlattenLayer<T, Dev>;
};
template <int Reps>
struct RepeatChannels {
  template <class T, class Dev>
  using layer = layers::RepeatChannelsLayer<T, Dev, Reps>;
};
template <int H, int W = H>
struct ResizeBilinear {
  template <class T, class Dev>
  using layer = layers::ResizeBilinearLayer<T, Dev, H, W>;
};

}  // namespace dtn
