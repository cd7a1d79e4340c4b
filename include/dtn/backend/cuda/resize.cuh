#pragma once
// Bilinear resize with align_corners = false (PyTorch's default). The source coordinates and
// weights are computed in double with the same operations as the CPU reference, on the device
// with rn.cuh's round-to-nearest operations so nvcc cannot fuse them into FMAs: both backends
// pick the same source pixels and weights. The backward pass is a gather over the outputs that
// read each input pixel, summed in the CPU's order (outputs row-major, then the four corners), so
// it needs no atomics. 32-bit indices divided by FastDivmod, launched through index_map.cuh
// (checked on the host in tests/cuda_host).
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../../core/fastdiv.hpp"
#include "../../core/macros.hpp"
#include "context.cuh"
#include "index_map.cuh"
#include "rn.cuh"

namespace dtn {
namespace cuda {
namespace detail {

struct Lerp {
  int i0, i1;
  double w0, w1;
};

// src = (out + 0.5) * (in / out) - 0.5, clamped below at 0; i0 = floor(src), i1 = i0 + 1 inside.
DTN_HD Lerp lerp_index(int out_index, int in_size, int out_size) {
  const double scale = div_rn(static_cast<double>(in_size), static_cast<double>(out_size));
  double src = add_rn(mul_rn(add_rn(static_cast<double>(out_index), 0.5), scale), -0.5);
  if (src < 0) src = 0;
  int i0 = static_cast<int>(src);
  if (i0 > in_size - 1) i0 = in_size - 1;
  const int i1 = i0 < in_size - 1 ? i0 + 1 : i0;
  const double w1 = add_rn(src, -static_cast<double>(i0));
  return {i0, i1, add_rn(1.0, -w1), w1};
}

// Conservative range of outputs along one axis whose source pixels may include `in_index`
// (i0 in {in_index - 1, in_index}); widened by one on each side against rounding, and then
// filtered exactly with lerp_index. Input 1 also takes the first outputs, whose source was
// clamped to 0 (i0 = 0, i1 = 1 with weight 0): the CPU adds 0 * dy for them too, which is NaN
// where dy is infinite, and the two devices must agree there.
DTN_HD void lerp_range(int in_index, int in_size, int out_size, int& lo, int& hi) {
  const double inv_scale = static_cast<double>(out_size) / static_cast<double>(in_size);
  lo = static_cast<int>(floor((in_index - 0.5) * inv_scale - 0.5)) - 1;
  hi = static_cast<int>(ceil((in_index + 1.5) * inv_scale - 0.5)) + 1;
  if (lo < 0 || in_index <= 1) lo = 0;
  if (hi > out_size - 1) hi = out_size - 1;
}

// y[i] for output element i of a run of planes.
template <class T>
struct ResizeForwardOp {
  const T* x;
  T* y;
  int h_in, w_in, h_out, w_out;
  FastDivmod by_out_plane, by_w_out;
  DTN_HD void operator()(std::uint32_t i) const {
    std::uint32_t p = 0, o = 0, oh = 0, ow = 0;
    by_out_plane.divmod(i, p, o);
    by_w_out.divmod(o, oh, ow);
    const Lerp h = lerp_index(static_cast<int>(oh), h_in, h_out);
    const Lerp w = lerp_index(static_cast<int>(ow), w_in, w_out);
    const T* xp = x + static_cast<std::size_t>(p) * h_in * w_in;
    const double top = add_rn(mul_rn(w.w0, static_cast<double>(xp[h.i0 * w_in + w.i0])),
                              mul_rn(w.w1, static_cast<double>(xp[h.i0 * w_in + w.i1])));
    const double bottom = add_rn(mul_rn(w.w0, static_cast<double>(xp[h.i1 * w_in + w.i0])),
                                 mul_rn(w.w1, static_cast<double>(xp[h.i1 * w_in + w.i1])));
    y[i] = static_cast<T>(add_rn(mul_rn(h.w0, top), mul_rn(h.w1, bottom)));
  }
};

// dx[i] for input element i of a run of planes.
template <class T>
struct ResizeBackwardOp {
  const T* dy;
  T* dx;
  int h_in, w_in, h_out, w_out;
  FastDivmod by_in_plane, by_w_in;
  DTN_HD void operator()(std::uint32_t i) const {
    std::uint32_t p = 0, idx = 0, uh = 0, uw = 0;
    by_in_plane.divmod(i, p, idx);
    by_w_in.divmod(idx, uh, uw);
    const int ih = static_cast<int>(uh), iw = static_cast<int>(uw);
    int oh_lo = 0, oh_hi = 0, ow_lo = 0, ow_hi = 0;
    lerp_range(ih, h_in, h_out, oh_lo, oh_hi);
    lerp_range(iw, w_in, w_out, ow_lo, ow_hi);
    const T* dyp = dy + static_cast<std::size_t>(p) * h_out * w_out;
    T acc = T(0);
    for (int oh = oh_lo; oh <= oh_hi; ++oh) {
      const Lerp h = lerp_index(oh, h_in, h_out);
      if (h.i0 != ih && h.i1 != ih) continue;
      for (int ow = ow_lo; ow <= ow_hi; ++ow) {
        const Lerp w = lerp_index(ow, w_in, w_out);
        if (w.i0 != iw && w.i1 != iw) continue;
        const double d = static_cast<double>(dyp[oh * w_out + ow]);
        if (h.i0 == ih && w.i0 == iw) acc += static_cast<T>(mul_rn(mul_rn(h.w0, w.w0), d));
        if (h.i0 == ih && w.i1 == iw) acc += static_cast<T>(mul_rn(mul_rn(h.w0, w.w1), d));
        if (h.i1 == ih && w.i0 == iw) acc += static_cast<T>(mul_rn(mul_rn(h.w1, w.w0), d));
        if (h.i1 == ih && w.i1 == iw) acc += static_cast<T>(mul_rn(mul_rn(h.w1, w.w1), d));
      }
    }
    dx[i] = acc;
  }
};

template <class Exec, class T>
void resize_bilinear_forward_on(const Exec& ex, int n, int c, int h_in, int w_in, int h_out, int w_out, const T* x,
                                T* y, std::uint32_t max_elems = kIndexLimit) {
  const std::size_t in_plane = static_cast<std::size_t>(h_in) * w_in, out_plane = static_cast<std::size_t>(h_out) * w_out;
  check_plane(in_plane, "resize_bilinear_forward");
  run_plane_chunks(ex, static_cast<std::size_t>(n) * c, out_plane, "resize_bilinear_forward", [&](std::size_t p0) {
    return ResizeForwardOp<T>{x + p0 * in_plane, y + p0 * out_plane, h_in, w_in, h_out, w_out, divisor(out_plane),
                              divisor(w_out)};
  }, max_elems);
}

template <class Exec, class T>
void resize_bilinear_backward_on(const Exec& ex, int n, int c, int h_in, int w_in, int h_out, int w_out, const T* dy,
                                 T* dx, std::uint32_t max_elems = kIndexLimit) {
  const std::size_t in_plane = static_cast<std::size_t>(h_in) * w_in, out_plane = static_cast<std::size_t>(h_out) * w_out;
  check_plane(out_plane, "resize_bilinear_backward");
  run_plane_chunks(ex, static_cast<std::size_t>(n) * c, in_plane, "resize_bilinear_backward", [&](std::size_t p0) {
    return ResizeBackwardOp<T>{dy + p0 * out_plane, dx + p0 * in_plane, h_in, w_in, h_out, w_out, divisor(in_plane),
                               divisor(w_in)};
  }, max_elems);
}

}  // namespace detail

template <class T>
void resize_bilinear_forward(int n, int c, int h_in, int w_in, int h_out, int w_out, const T* x, T* y) {
  detail::resize_bilinear_forward_on(detail::DeviceIndexExec{stream()}, n, c, h_in, w_in, h_out, w_out, x, y);
}

template <class T>
void resize_bilinear_backward(int n, int c, int h_in, int w_in, int h_out, int w_out, const T* dy, T* dx) {
  detail::resize_bilinear_backward_on(detail::DeviceIndexExec{stream()}, n, c, h_in, w_in, h_out, w_out, dy, dx);
}

}  // namespace cuda
}  // namespace dtn
