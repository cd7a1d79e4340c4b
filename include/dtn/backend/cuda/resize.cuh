#pragma once
// Bilinear resize with align_corners = false (PyTorch's default). The source coordinates and
// weights are computed in double with the same operations as the CPU reference, written with
// explicit round-to-nearest intrinsics so nvcc cannot fuse them into FMAs: both backends pick the
// same source pixels and weights. The backward pass is a gather over the outputs that read each
// input pixel, summed in the CPU's order (outputs row-major, then the four corners), so it needs
// no atomics.
#include <cuda_runtime.h>

#include <cstddef>

#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

struct Lerp {
  int i0, i1;
  double w0, w1;
};

// src = (out + 0.5) * (in / out) - 0.5, clamped below at 0; i0 = floor(src), i1 = i0 + 1 inside.
__device__ __forceinline__ Lerp lerp_index(int out_index, int in_size, int out_size) {
  const double scale = __ddiv_rn(static_cast<double>(in_size), static_cast<double>(out_size));
  double src = __dadd_rn(__dmul_rn(__dadd_rn(static_cast<double>(out_index), 0.5), scale), -0.5);
  if (src < 0) src = 0;
  int i0 = static_cast<int>(src);
  if (i0 > in_size - 1) i0 = in_size - 1;
  const int i1 = i0 < in_size - 1 ? i0 + 1 : i0;
  const double w1 = __dadd_rn(src, -static_cast<double>(i0));
  return {i0, i1, __dadd_rn(1.0, -w1), w1};
}

template <class T>
__global__ void resize_forward_kernel(std::size_t total, int h_in, int w_in, int h_out, int w_out, const T* x, T* y) {
  const std::size_t out_plane = static_cast<std::size_t>(h_out) * w_out;
  const std::size_t in_plane = static_cast<std::size_t>(h_in) * w_in;
  for (std::size_t i = global_index(); i < total; i += grid_stride()) {
    const std::size_t p = i / out_plane;
    const int o = static_cast<int>(i % out_plane);
    const Lerp h = lerp_index(o / w_out, h_in, h_out);
    const Lerp w = lerp_index(o % w_out, w_in, w_out);
    const T* xp = x + p * in_plane;
    const double top = __dadd_rn(__dmul_rn(w.w0, static_cast<double>(xp[h.i0 * w_in + w.i0])),
                                 __dmul_rn(w.w1, static_cast<double>(xp[h.i0 * w_in + w.i1])));
    const double bottom = __dadd_rn(__dmul_rn(w.w0, static_cast<double>(xp[h.i1 * w_in + w.i0])),
                                    __dmul_rn(w.w1, static_cast<double>(xp[h.i1 * w_in + w.i1])));
    y[i] = static_cast<T>(__dadd_rn(__dmul_rn(h.w0, top), __dmul_rn(h.w1, bottom)));
  }
}

// Conservative range of outputs along one axis whose source pixels may include `in_index`
// (i0 in {in_index - 1, in_index}); widened by one on each side against rounding, and then
// filtered exactly with lerp_index.
__device__ __forceinline__ void lerp_range(int in_index, int in_size, int out_size, int& lo, int& hi) {
  const double inv_scale = static_cast<double>(out_size) / static_cast<double>(in_size);
  lo = static_cast<int>(floor((in_index - 0.5) * inv_scale - 0.5)) - 1;
  hi = static_cast<int>(ceil((in_index + 1.5) * inv_scale - 0.5)) + 1;
  if (lo < 0) lo = 0;
  if (hi > out_size - 1) hi = out_size - 1;
}

template <class T>
__global__ void resize_backward_kernel(std::size_t total, int h_in, int w_in, int h_out, int w_out, const T* dy,
                                       T* dx) {
  const std::size_t out_plane = static_cast<std::size_t>(h_out) * w_out;
  const std::size_t in_plane = static_cast<std::size_t>(h_in) * w_in;
  for (std::size_t i = global_index(); i < total; i += grid_stride()) {
    const std::size_t p = i / in_plane;
    const int idx = static_cast<int>(i % in_plane);
    const int ih = idx / w_in, iw = idx % w_in;
    int oh_lo, oh_hi, ow_lo, ow_hi;
    lerp_range(ih, h_in, h_out, oh_lo, oh_hi);
    lerp_range(iw, w_in, w_out, ow_lo, ow_hi);
    const T* dyp = dy + p * out_plane;
    T acc = T(0);
    for (int oh = oh_lo; oh <= oh_hi; ++oh) {
      const Lerp h = lerp_index(oh, h_in, h_out);
      if (h.i0 != ih && h.i1 != ih) continue;
      for (int ow = ow_lo; ow <= ow_hi; ++ow) {
        const Lerp w = lerp_index(ow, w_in, w_out);
        if (w.i0 != iw && w.i1 != iw) continue;
        const double d = static_cast<double>(dyp[oh * w_out + ow]);
        if (h.i0 == ih && w.i0 == iw) acc += static_cast<T>(__dmul_rn(__dmul_rn(h.w0, w.w0), d));
        if (h.i0 == ih && w.i1 == iw) acc += static_cast<T>(__dmul_rn(__dmul_rn(h.w0, w.w1), d));
        if (h.i1 == ih && w.i0 == iw) acc += static_cast<T>(__dmul_rn(__dmul_rn(h.w1, w.w0), d));
        if (h.i1 == ih && w.i1 == iw) acc += static_cast<T>(__dmul_rn(__dmul_rn(h.w1, w.w1), d));
      }
    }
    dx[i] = acc;
  }
}

}  // namespace detail

template <class T>
void resize_bilinear_forward(int n, int c, int h_in, int w_in, int h_out, int w_out, const T* x, T* y) {
  const std::size_t total = static_cast<std::size_t>(n) * c * static_cast<std::size_t>(h_out) * w_out;
  if (total == 0) return;
  detail::resize_forward_kernel<<<detail::grid_for(total), detail::kThreads, 0, stream()>>>(total, h_in, w_in,
                                                                                           h_out, w_out, x, y);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void resize_bilinear_backward(int n, int c, int h_in, int w_in, int h_out, int w_out, const T* dy, T* dx) {
  const std::size_t total = static_cast<std::size_t>(n) * c * static_cast<std::size_t>(h_in) * w_in;
  if (total == 0) return;
  detail::resize_backward_kernel<<<detail::grid_for(total), detail::kThreads, 0, stream()>>>(total, h_in, w_in,
                                                                                            h_out, w_out, dy, dx);
  DTN_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace dtn
