#pragma once
// Element-wise kernels: the ops/functors.hpp maps, bias add, channel repeat, fill/axpy/scale and
// the uint8 -> [-1, 1] conversion. The maps, fill/axpy/scale and the conversion are element ops
// of reduce.cuh's flat map (a grid-stride loop over size_t indices, no division in them); bias
// add runs on the channel grid of channel.cuh, channel repeat on the 32-bit index kernels of
// index_map.cuh (an image's channel found by FastDivmod).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../../core/fastdiv.hpp"
#include "../../core/macros.hpp"
#include "../../ops/functors.hpp"
#include "channel.cuh"
#include "check.cuh"
#include "context.cuh"
#include "index_map.cuh"
#include "launch.cuh"
#include "reduce.cuh"

namespace dtn {
namespace cuda {
namespace detail {

// The element ops of the flat maps (reduce.cuh's flat_map_kernel, DeviceFlatExec::map): one
// index each, DTN_HD so that tests/cuda_host runs them too.
template <class Op, class T>
struct MapForwardOp {
  Op op;
  const T* x;
  T* y;
  DTN_HD void operator()(std::size_t i) const { y[i] = op.forward(x[i]); }
};

template <class Op, class T>
struct MapBackwardOp {
  Op op;
  const T* x;
  const T* y;
  const T* dy;
  T* dx;
  DTN_HD void operator()(std::size_t i) const { dx[i] = op.backward(x[i], y[i], dy[i]); }
};

template <class T>
struct FillOp {
  T* p;
  T value;
  DTN_HD void operator()(std::size_t i) const { p[i] = value; }
};

template <class T>
struct AxpyOp {
  T a;
  const T* x;
  T* y;
  DTN_HD void operator()(std::size_t i) const { y[i] += a * x[i]; }
};

template <class T>
struct ScaleOp {
  T a;
  T* x;
  DTN_HD void operator()(std::size_t i) const { x[i] *= a; }
};

template <class T>
struct U8ToSignedOp {
  const unsigned char* src;
  T* dst;
  DTN_HD void operator()(std::size_t i) const { dst[i] = ops::U8ToSigned{}.template operator()<T>(src[i]); }
};

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

// y [n, c*reps, hw], y[:, j] = x[:, j % c]: y[i] for element i of a run of images.
template <class T>
struct RepeatChannelsForwardOp {
  const T* x;
  T* y;
  std::uint32_t chw;                // c * hw: one image of x
  FastDivmod by_plane, by_chw;      // c * reps * hw: one image of y; c * hw
  DTN_HD void operator()(std::uint32_t i) const {
    std::uint32_t img = 0, within = 0, r = 0, j = 0;
    by_plane.divmod(i, img, within);
    by_chw.divmod(within, r, j);
    y[i] = x[static_cast<std::size_t>(img) * chw + j];
  }
};

// dx [n, c, hw] = sum over r (in order) of dy[:, r*c + ch]: dx[i] for element i of a run of images.
template <class T>
struct RepeatChannelsBackwardOp {
  const T* dy;
  T* dx;
  int reps;
  std::uint32_t chw;
  FastDivmod by_chw;
  DTN_HD void operator()(std::uint32_t i) const {
    std::uint32_t img = 0, within = 0;
    by_chw.divmod(i, img, within);
    const T* src = dy + static_cast<std::size_t>(img) * chw * static_cast<unsigned>(reps) + within;
    T acc = T(0);
    for (int r = 0; r < reps; ++r) acc += src[static_cast<std::size_t>(r) * chw];
    dx[i] = acc;
  }
};

template <class Exec, class T>
void repeat_channels_forward_on(const Exec& ex, int n, int c, int reps, long hw, const T* x, T* y,
                                std::uint32_t max_elems = kIndexLimit) {
  const std::size_t chw = static_cast<std::size_t>(c) * static_cast<std::size_t>(hw), plane = chw * static_cast<std::size_t>(reps);
  run_plane_chunks(ex, static_cast<std::size_t>(n), plane, "repeat_channels_forward", [&](std::size_t i0) {
    return RepeatChannelsForwardOp<T>{x + i0 * chw, y + i0 * plane, static_cast<std::uint32_t>(chw), divisor(plane),
                                      divisor(chw)};
  }, max_elems);
}

template <class Exec, class T>
void repeat_channels_backward_on(const Exec& ex, int n, int c, int reps, long hw, const T* dy, T* dx,
                                 std::uint32_t max_elems = kIndexLimit) {
  const std::size_t chw = static_cast<std::size_t>(c) * static_cast<std::size_t>(hw), plane = chw * static_cast<std::size_t>(reps);
  run_plane_chunks(ex, static_cast<std::size_t>(n), chw, "repeat_channels_backward", [&](std::size_t i0) {
    return RepeatChannelsBackwardOp<T>{dy + i0 * plane, dx + i0 * chw, reps, static_cast<std::uint32_t>(chw),
                                       divisor(chw)};
  }, max_elems);
}

}  // namespace detail

template <class Op, class T>
void map_forward(Op op, std::size_t n, const T* x, T* y) {
  detail::DeviceFlatExec{}.map(n, detail::MapForwardOp<Op, T>{op, x, y});
}

template <class Op, class T>
void map_backward(Op op, std::size_t n, const T* x, const T* y, const T* dy, T* dx) {
  detail::DeviceFlatExec{}.map(n, detail::MapBackwardOp<Op, T>{op, x, y, dy, dx});
}

template <class T>
void bias_add(int n, int c, long hw, const T* bias, T* y) {
  if (n == 0 || c == 0 || hw == 0) return;
  detail::DeviceExec{stream()}.map(detail::channel_grid(n, c, hw, "bias_add"), detail::BiasAddOp<T>{bias, y});
}

template <class T>
void repeat_channels_forward(int n, int c, int reps, long hw, const T* x, T* y) {
  detail::repeat_channels_forward_on(detail::DeviceIndexExec{stream()}, n, c, reps, hw, x, y);
}

template <class T>
void repeat_channels_backward(int n, int c, int reps, long hw, const T* dy, T* dx) {
  detail::repeat_channels_backward_on(detail::DeviceIndexExec{stream()}, n, c, reps, hw, dy, dx);
}

template <class T>
void fill(std::size_t n, T* p, T value) {
  detail::DeviceFlatExec{}.map(n, detail::FillOp<T>{p, value});
}

template <class T>
void axpy(std::size_t n, T a, const T* x, T* y) {
  detail::DeviceFlatExec{}.map(n, detail::AxpyOp<T>{a, x, y});
}

template <class T>
void scale(std::size_t n, T a, T* x) {
  detail::DeviceFlatExec{}.map(n, detail::ScaleOp<T>{a, x});
}

template <class T>
void u8_to_signed(std::size_t n, const unsigned char* src, T* dst) {
  detail::DeviceFlatExec{}.map(n, detail::U8ToSignedOp<T>{src, dst});
}

}  // namespace cuda
}  // namespace dtn
