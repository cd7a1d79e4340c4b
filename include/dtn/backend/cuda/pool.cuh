#pragma once
// Max pooling without padding. argmax holds the index within the input plane. The backward pass
// is a gather (each input element sums the outputs whose window chose it, in output order), so it
// needs no atomics and overlapping windows (stride < k) stay deterministic.
#include <cuda_runtime.h>

#include <cstddef>

#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

template <class T>
__global__ void maxpool_forward_kernel(std::size_t total, int h_in, int w_in, int h_out, int w_out, int k, int stride,
                                       const T* x, T* y, int* argmax) {
  const std::size_t out_plane = static_cast<std::size_t>(h_out) * w_out;
  const std::size_t in_plane = static_cast<std::size_t>(h_in) * w_in;
  for (std::size_t i = global_index(); i < total; i += grid_stride()) {
    const std::size_t p = i / out_plane;
    const int o = static_cast<int>(i % out_plane);
    const int oh = o / w_out, ow = o % w_out;
    const T* xp = x + p * in_plane;
    // Same scan as the CPU reference: first maximum in row-major window order; a NaN wins and
    // then stays (PyTorch propagates NaN).
    int best = (oh * stride) * w_in + ow * stride;
    T bv = xp[best];
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b) {
        const int idx = (oh * stride + a) * w_in + ow * stride + b;
        const T v = xp[idx];
        if ((v > bv || isnan(v)) && !isnan(bv)) {
          bv = v;
          best = idx;
        }
      }
    y[i] = bv;
    argmax[i] = best;
  }
}

template <class T>
__global__ void maxpool_backward_kernel(std::size_t total, int h_in, int w_in, int h_out, int w_out, int k, int stride,
                                        const T* dy, const int* argmax, T* dx) {
  const std::size_t out_plane = static_cast<std::size_t>(h_out) * w_out;
  const std::size_t in_plane = static_cast<std::size_t>(h_in) * w_in;
  for (std::size_t i = global_index(); i < total; i += grid_stride()) {
    const std::size_t p = i / in_plane;
    const int idx = static_cast<int>(i % in_plane);
    const int ih = idx / w_in, iw = idx % w_in;
    // Outputs whose window [o*stride, o*stride + k) contains ih (resp. iw).
    const int oh_lo = ih - k + 1 <= 0 ? 0 : (ih - k + 1 + stride - 1) / stride;
    const int ow_lo = iw - k + 1 <= 0 ? 0 : (iw - k + 1 + stride - 1) / stride;
    const int oh_hi = min(ih / stride, h_out - 1), ow_hi = min(iw / stride, w_out - 1);
    const T* dyp = dy + p * out_plane;
    const int* ap = argmax + p * out_plane;
    T acc = T(0);
    for (int oh = oh_lo; oh <= oh_hi; ++oh)
      for (int ow = ow_lo; ow <= ow_hi; ++ow) {
        const int o = oh * w_out + ow;
        if (ap[o] == idx) acc += dyp[o];
      }
    dx[i] = acc;
  }
}

}  // namespace detail

template <class T>
void maxpool_forward(int n, int c, int h_in, int w_in, int h_out, int w_out, int k, int stride, const T* x, T* y,
                     int* argmax) {
  const std::size_t total = static_cast<std::size_t>(n) * c * static_cast<std::size_t>(h_out) * w_out;
  if (total == 0) return;
  detail::maxpool_forward_kernel<<<detail::grid_for(total), detail::kThreads, 0, stream()>>>(
      total, h_in, w_in, h_out, w_out, k, stride, x, y, argmax);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void maxpool_backward(int n, int c, int h_in, int w_in, int h_out, int w_out, int k, int stride, const T* dy,
                      const int* argmax, T* dx) {
  const std::size_t total = static_cast<std::size_t>(n) * c * static_cast<std::size_t>(h_in) * w_in;
  if (total == 0) return;
  detail::maxpool_backward_kernel<<<detail::grid_for(total), detail::kThreads, 0, stream()>>>(
      total, h_in, w_in, h_out, w_out, k, stride, dy, argmax, dx);
  DTN_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace dtn
