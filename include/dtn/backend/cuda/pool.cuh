#pragma once
// Max pooling without padding. argmax holds the index within the input plane. The backward pass
// is a gather (each input element sums the outputs whose window chose it, in output order), so it
// needs no atomics and overlapping windows (stride < k) stay deterministic. 32-bit indices
// divided by FastDivmod, launched through index_map.cuh (checked on the host in tests/cuda_host).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../../core/fastdiv.hpp"
#include "../../core/macros.hpp"
#include "context.cuh"
#include "index_map.cuh"

namespace dtn {
namespace cuda {
namespace detail {

// y[i], argmax[i] for output element i of a run of planes.
template <class T>
struct MaxPoolForwardOp {
  const T* x;
  T* y;
  int* argmax;
  int w_in, k, stride;
  std::uint32_t in_plane;
  FastDivmod by_out_plane, by_w_out;
  DTN_HD void operator()(std::uint32_t i) const {
    std::uint32_t p = 0, o = 0, oh = 0, ow = 0;
    by_out_plane.divmod(i, p, o);
    by_w_out.divmod(o, oh, ow);
    const T* xp = x + static_cast<std::size_t>(p) * in_plane;
    // The CPU reference's rule: first maximum in row-major window order; a NaN wins and then
    // stays (PyTorch propagates NaN).
    const int base = static_cast<int>(oh) * stride * w_in + static_cast<int>(ow) * stride;
    int best = base;
    T bv = xp[best];
    for (int a = 0; a < k; ++a) {
      const int row = base + a * w_in;
      for (int b = 0; b < k; ++b) {
        const T v = xp[row + b];
        if (!(v <= bv) && bv == bv) {
          bv = v;
          best = row + b;
        }
      }
    }
    y[i] = bv;
    argmax[i] = best;
  }
};

// dx[i] for input element i: the outputs whose window [o*stride, o*stride + k) holds it, in
// output order, added where their argmax is i.
template <class T>
struct MaxPoolBackwardOp {
  const T* dy;
  const int* argmax;
  T* dx;
  int h_out, w_out, k;
  std::uint32_t out_plane;
  FastDivmod by_in_plane, by_w_in, by_stride;
  DTN_HD int first_window(std::uint32_t pos) const {  // the first o with o*stride + k > pos
    return static_cast<int>(pos) + 1 <= k ? 0 : static_cast<int>(by_stride.div(pos + 1 - k + by_stride.divisor() - 1));
  }
  DTN_HD void operator()(std::uint32_t i) const {
    std::uint32_t p = 0, idx = 0, ih = 0, iw = 0;
    by_in_plane.divmod(i, p, idx);
    by_w_in.divmod(idx, ih, iw);
    const int oh_lo = first_window(ih), ow_lo = first_window(iw);
    const int oh_last = static_cast<int>(by_stride.div(ih)), ow_last = static_cast<int>(by_stride.div(iw));
    const int oh_hi = oh_last < h_out - 1 ? oh_last : h_out - 1, ow_hi = ow_last < w_out - 1 ? ow_last : w_out - 1;
    const T* dyp = dy + static_cast<std::size_t>(p) * out_plane;
    const int* ap = argmax + static_cast<std::size_t>(p) * out_plane;
    T acc = T(0);
    for (int oh = oh_lo; oh <= oh_hi; ++oh)
      for (int ow = ow_lo; ow <= ow_hi; ++ow) {
        const int o = oh * w_out + ow;
        if (ap[o] == static_cast<int>(idx)) acc += dyp[o];
      }
    dx[i] = acc;
  }
};

template <class Exec, class T>
void maxpool_forward_on(const Exec& ex, int n, int c, int h_in, int w_in, int h_out, int w_out, int k, int stride,
                        const T* x, T* y, int* argmax, std::uint32_t max_elems = kIndexLimit) {
  const std::size_t in_plane = static_cast<std::size_t>(h_in) * w_in, out_plane = static_cast<std::size_t>(h_out) * w_out;
  check_plane(in_plane, "maxpool_forward");
  run_plane_chunks(ex, static_cast<std::size_t>(n) * c, out_plane, "maxpool_forward", [&](std::size_t p0) {
    return MaxPoolForwardOp<T>{x + p0 * in_plane, y + p0 * out_plane, argmax + p0 * out_plane, w_in, k, stride,
                               static_cast<std::uint32_t>(in_plane), divisor(out_plane), divisor(w_out)};
  }, max_elems);
}

template <class Exec, class T>
void maxpool_backward_on(const Exec& ex, int n, int c, int h_in, int w_in, int h_out, int w_out, int k, int stride,
                         const T* dy, const int* argmax, T* dx, std::uint32_t max_elems = kIndexLimit) {
  const std::size_t in_plane = static_cast<std::size_t>(h_in) * w_in, out_plane = static_cast<std::size_t>(h_out) * w_out;
  check_plane(out_plane, "maxpool_backward");
  run_plane_chunks(ex, static_cast<std::size_t>(n) * c, in_plane, "maxpool_backward", [&](std::size_t p0) {
    return MaxPoolBackwardOp<T>{dy + p0 * out_plane, argmax + p0 * out_plane, dx + p0 * in_plane, h_out, w_out, k,
                                static_cast<std::uint32_t>(out_plane), divisor(in_plane), divisor(w_in),
                                divisor(stride)};
  }, max_elems);
}

}  // namespace detail

template <class T>
void maxpool_forward(int n, int c, int h_in, int w_in, int h_out, int w_out, int k, int stride, const T* x, T* y,
                     int* argmax) {
  detail::maxpool_forward_on(detail::DeviceIndexExec{stream()}, n, c, h_in, w_in, h_out, w_out, k, stride, x, y,
                             argmax);
}

template <class T>
void maxpool_backward(int n, int c, int h_in, int w_in, int h_out, int w_out, int k, int stride, const T* dy,
                      const int* argmax, T* dx) {
  detail::maxpool_backward_on(detail::DeviceIndexExec{stream()}, n, c, h_in, w_in, h_out, w_out, k, stride, dy,
                              argmax, dx);
}

}  // namespace cuda
}  // namespace dtn
