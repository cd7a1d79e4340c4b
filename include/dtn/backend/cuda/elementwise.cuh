#pragma once
// Element-wise kernels: the ops/functors.hpp maps, bias add, channel repeat, fill/axpy/scale and
// the uint8 -> [-1, 1] conversion. Every kernel is a grid-stride loop over size_t indices, except
// bias add, which runs on the channel grid of channel.cuh.
#include <cuda_runtime.h>

#include <cstddef>

#include "../../ops/functors.hpp"
#include "channel.cuh"
#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

template <class Op, class T>
__global__ void map_forward_kernel(Op op, std::size_t n, const T* x, T* y) {
  for (std::size_t i = global_index(); i < n; i += grid_stride()) y[i] = op.forward(x[i]);
}

template <class Op, class T>
__global__ void map_backward_kernel(Op op, std::size_t n, const T* x, const T* y, const T* dy, T* dx) {
  for (std::size_t i = global_index(); i < n; i += grid_stride()) dx[i] = op.backward(x[i], y[i], dy[i]);
}

// y += bias[ch], on the channel grid (channel.cuh): the bias is read once per block, and no
// element pays for a 64-bit division to find its channel.
template <class T>
struct BiasAddOp {
  const T* bias;
  T* y;
  struct At {
    T* y;
    T b;
    DTN_HD void operator()(std::size_t o) const { y[o] += b; }
  };
  DTN_HD At at(unsigned ch) const { return At{y, bias[ch]}; }
};

// y [n, c*reps, hw], y[:, j] = x[:, j % c]
template <class T>
__global__ void repeat_channels_forward_kernel(std::size_t total, int c, int reps, long hw, const T* x, T* y) {
  const std::size_t chw = static_cast<std::size_t>(c) * hw, plane = chw * reps;
  for (std::size_t i = global_index(); i < total; i += grid_stride()) {
    const std::size_t img = i / plane, within = i % plane;
    y[i] = x[img * chw + within % chw];
  }
}

// dx [n, c, hw] = sum over r (in order) of dy[:, r*c + ch]
template <class T>
__global__ void repeat_channels_backward_kernel(std::size_t total, int c, int reps, long hw, const T* dy, T* dx) {
  const std::size_t chw = static_cast<std::size_t>(c) * hw, plane = chw * reps;
  for (std::size_t i = global_index(); i < total; i += grid_stride()) {
    const std::size_t img = i / chw, within = i % chw;
    const T* src = dy + img * plane + within;
    T acc = T(0);
    for (int r = 0; r < reps; ++r) acc += src[static_cast<std::size_t>(r) * chw];
    dx[i] = acc;
  }
}

template <class T>
__global__ void fill_kernel(std::size_t n, T* p, T value) {
  for (std::size_t i = global_index(); i < n; i += grid_stride()) p[i] = value;
}

template <class T>
__global__ void axpy_kernel(std::size_t n, T a, const T* x, T* y) {
  for (std::size_t i = global_index(); i < n; i += grid_stride()) y[i] += a * x[i];
}

template <class T>
__global__ void scale_kernel(std::size_t n, T a, T* x) {
  for (std::size_t i = global_index(); i < n; i += grid_stride()) x[i] *= a;
}

template <class T>
__global__ void u8_to_signed_kernel(std::size_t n, const unsigned char* src, T* dst) {
  const ops::U8ToSigned f;
  for (std::size_t i = global_index(); i < n; i += grid_stride()) dst[i] = f.template operator()<T>(src[i]);
}

}  // namespace detail

template <class Op, class T>
void map_forward(Op op, std::size_t n, const T* x, T* y) {
  if (n == 0) return;
  detail::map_forward_kernel<<<detail::grid_for(n), detail::kThreads, 0, stream()>>>(op, n, x, y);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class Op, class T>
void map_backward(Op op, std::size_t n, const T* x, const T* y, const T* dy, T* dx) {
  if (n == 0) return;
  detail::map_backward_kernel<<<detail::grid_for(n), detail::kThreads, 0, stream()>>>(op, n, x, y, dy, dx);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void bias_add(int n, int c, long hw, const T* bias, T* y) {
  if (n == 0 || c == 0 || hw == 0) return;
  detail::DeviceExec{stream()}.map(detail::channel_grid(n, c, hw, "bias_add"), detail::BiasAddOp<T>{bias, y});
}

template <class T>
void repeat_channels_forward(int n, int c, int reps, long hw, const T* x, T* y) {
  const std::size_t total = static_cast<std::size_t>(n) * c * static_cast<std::size_t>(reps) * hw;
  if (total == 0) return;
  detail::repeat_channels_forward_kernel<<<detail::grid_for(total), detail::kThreads, 0, stream()>>>(total, c, reps,
                                                                                                    hw, x, y);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void repeat_channels_backward(int n, int c, int reps, long hw, const T* dy, T* dx) {
  const std::size_t total = static_cast<std::size_t>(n) * c * static_cast<std::size_t>(hw);
  if (total == 0) return;
  detail::repeat_channels_backward_kernel<<<detail::grid_for(total), detail::kThreads, 0, stream()>>>(
      total, c, reps, hw, dy, dx);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void fill(std::size_t n, T* p, T value) {
  if (n == 0) return;
  detail::fill_kernel<<<detail::grid_for(n), detail::kThreads, 0, stream()>>>(n, p, value);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void axpy(std::size_t n, T a, const T* x, T* y) {
  if (n == 0) return;
  detail::axpy_kernel<<<detail::grid_for(n), detail::kThreads, 0, stream()>>>(n, a, x, y);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void scale(std::size_t n, T a, T* x) {
  if (n == 0) return;
  detail::scale_kernel<<<detail::grid_for(n), detail::kThreads, 0, stream()>>>(n, a, x);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void u8_to_signed(std::size_t n, const unsigned char* src, T* dst) {
  if (n == 0) return;
  detail::u8_to_signed_kernel<<<detail::grid_for(n), detail::kThreads, 0, stream()>>>(n, src, dst);
  DTN_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace dtn
