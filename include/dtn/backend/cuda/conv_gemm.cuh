#pragma once
// Convolution backward-data (and so the forward pass of a transposed convolution) as one cuBLAS
// GEMM and a gather, the GPU counterpart of the CPU backend's GEMM + col2im:
//
//   1. dyT [c_out, nb * P] = dy [nb, c_out, P] with the first two axes swapped (P = h_out * w_out),
//      so that the GEMM sees every image of the chunk as more columns;
//   2. cols [K, nb * P] = w^T dyT, K = c_in * kh * kw (cuBLAS, FP32 unless TF32 is on);
//   3. dx[i, c, ih, iw] = sum over the kernel taps (a, b) in row-major order whose output pixel
//      oh = (ih + pad - a) / stride, ow = (iw + pad - b) / stride exists and divides evenly, of
//      cols[(c * kh + a) * kw + b, i * P + oh * w_out + ow]: a gather, one thread per dx element,
//      a fixed order and no atomics (deterministic, overlapping windows included).
//
// Why: the 2026-11-26 H100 run measured cuDNN's deterministic choices for stride-2 backward-data
// at 8-15% of the GEMM rate (D.6 backward-data 1.21 ms, g.3 forward 1.09 ms at batch 128): for
// strided dgrad the legacy API's only deterministic algorithm is ALGO_1. The same work here is a
// 2304 x 2048 x 512 GEMM (D.6) plus two passes over a few MiB. Images go in chunks so that the
// workspace (dyT and cols) stays under kGemmDgradWorkspace.
//
// Off by default (dtn::cuda::set_conv_dgrad_gemm(true) turns it on per thread): it has been
// compiled and its index arithmetic checked on the host (tests/cuda_host), but not yet run on a
// GPU. The default becomes whichever the next GPU measurement favours.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../../core/fastdiv.hpp"
#include "../../core/macros.hpp"
#include "../backend.hpp"
#include "check.cuh"
#include "context.cuh"
#include "gemm.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

constexpr std::size_t kGemmDgradWorkspace = std::size_t(128) << 20;  // bytes for dyT + cols per chunk

// The geometry as the kernels need it, with the divisors of the index decompositions.
struct DgradGeom {
  int c_in = 0, h_in = 0, w_in = 0, c_out = 0, kh = 0, kw = 0, stride = 1, pad = 0, h_out = 0, w_out = 0;
  unsigned P = 0;   // h_out * w_out
  unsigned nP = 0;  // images in the chunk * P: the row length of dyT and cols
  FastDivmod by_P, by_cout_P, by_hw_in, by_c_in, by_w_in;

  // dyT[co, i * P + p] = dy[(i * c_out + co) * P + p], for element e of dy (e < nb * c_out * P).
  DTN_HD std::size_t transposed_index(std::uint32_t e) const {
    std::uint32_t i = 0, rest = 0, co = 0, p = 0;
    by_cout_P.divmod(e, i, rest);
    by_P.divmod(rest, co, p);
    return static_cast<std::size_t>(co) * nP + static_cast<std::size_t>(i) * P + p;
  }

  // dx element e of the chunk (e < nb * c_in * h_in * w_in), gathered from cols [K, nP].
  template <class T>
  DTN_HD T gather(const T* cols, std::uint32_t e) const {
    std::uint32_t plane = 0, pix = 0, i = 0, c = 0, ih = 0, iw = 0;
    by_hw_in.divmod(e, plane, pix);
    by_c_in.divmod(plane, i, c);
    by_w_in.divmod(pix, ih, iw);
    T acc = T(0);
    for (int a = 0; a < kh; ++a) {
      const int th = static_cast<int>(ih) + pad - a;
      if (th < 0 || th % stride != 0) continue;
      const int oh = th / stride;
      if (oh >= h_out) continue;
      for (int b = 0; b < kw; ++b) {
        const int tw = static_cast<int>(iw) + pad - b;
        if (tw < 0 || tw % stride != 0) continue;
        const int ow = tw / stride;
        if (ow >= w_out) continue;
        const std::size_t row = (static_cast<std::size_t>(c) * kh + a) * kw + b;
        acc += cols[row * nP + static_cast<std::size_t>(i) * P + static_cast<std::size_t>(oh) * w_out + ow];
      }
    }
    return acc;
  }
};

// Images per chunk: as many as fit kGemmDgradWorkspace (at least one).
inline int dgrad_chunk_images(const ConvGeom& g) {
  const std::size_t K = static_cast<std::size_t>(g.c_in) * g.kh * g.kw;
  const std::size_t per_image = (K + static_cast<std::size_t>(g.c_out)) * g.h_out * g.w_out * sizeof(float);
  const std::size_t fit = per_image == 0 ? 1 : kGemmDgradWorkspace / per_image;
  return static_cast<int>(fit < 1 ? 1 : (fit > static_cast<std::size_t>(g.n) ? g.n : fit));
}

// Whether the GEMM path can take g: every index of a chunk within 32 bits (FastDivmod's domain).
inline bool gemm_dgrad_supported(const ConvGeom& g) {
  if (g.n <= 0 || g.stride <= 0) return false;
  const std::size_t nb = static_cast<std::size_t>(dgrad_chunk_images(g));
  const std::size_t P = static_cast<std::size_t>(g.h_out) * g.w_out;
  const std::size_t K = static_cast<std::size_t>(g.c_in) * g.kh * g.kw;
  const std::size_t lim = FastDivmod::limit;
  return nb * P < lim && nb * g.c_out * P < lim && K * nb * P < lim &&
         nb * g.c_in * static_cast<std::size_t>(g.h_in) * g.w_in < lim;
}

inline DgradGeom dgrad_geom(const ConvGeom& g, int nb) {
  DgradGeom d;
  d.c_in = g.c_in;
  d.h_in = g.h_in;
  d.w_in = g.w_in;
  d.c_out = g.c_out;
  d.kh = g.kh;
  d.kw = g.kw;
  d.stride = g.stride;
  d.pad = g.pad;
  d.h_out = g.h_out;
  d.w_out = g.w_out;
  d.P = static_cast<unsigned>(g.h_out) * static_cast<unsigned>(g.w_out);
  d.nP = static_cast<unsigned>(nb) * d.P;
  d.by_P = FastDivmod(d.P);
  d.by_cout_P = FastDivmod(static_cast<std::uint32_t>(g.c_out) * d.P);
  d.by_hw_in = FastDivmod(static_cast<std::uint32_t>(g.h_in) * static_cast<std::uint32_t>(g.w_in));
  d.by_c_in = FastDivmod(static_cast<std::uint32_t>(g.c_in));
  d.by_w_in = FastDivmod(static_cast<std::uint32_t>(g.w_in));
  return d;
}

template <class T>
__global__ void dgrad_transpose_kernel(DgradGeom d, std::uint32_t total, const T* dy, T* dyT) {
  for (std::size_t e = global_index(); e < total; e += grid_stride())
    dyT[d.transposed_index(static_cast<std::uint32_t>(e))] = dy[e];
}

template <class T>
__global__ void dgrad_gather_kernel(DgradGeom d, std::uint32_t total, const T* cols, T* dx) {
  for (std::size_t e = global_index(); e < total; e += grid_stride())
    dx[e] = d.gather(cols, static_cast<std::uint32_t>(e));
}

// The three stages for images [0, g.n) in chunks of `chunk`, written once for any executor with
// transpose(d, total, dy, dyT), gemm(...) (the backend's row-major signature) and
// gather(d, total, cols, dx): DeviceDgrad below, or the host emulation of tests/cuda_host.
// ws holds (c_out + K) * P * chunk floats.
template <class Exec>
void dgrad_gemm_run(const Exec& ex, const ConvGeom& g, const float* dy, const float* w, float* dx, float* ws,
                    int chunk) {
  const std::size_t P = static_cast<std::size_t>(g.h_out) * g.w_out;
  const std::size_t K = static_cast<std::size_t>(g.c_in) * g.kh * g.kw;
  const std::size_t dy_image = static_cast<std::size_t>(g.c_out) * P;
  const std::size_t dx_image = static_cast<std::size_t>(g.c_in) * g.h_in * g.w_in;
  for (int i0 = 0; i0 < g.n; i0 += chunk) {
    const int nb = g.n - i0 < chunk ? g.n - i0 : chunk;
    const DgradGeom d = dgrad_geom(g, nb);
    float* dyT = ws;
    float* cols = ws + dy_image * static_cast<std::size_t>(nb);
    ex.transpose(d, static_cast<std::uint32_t>(dy_image * static_cast<std::size_t>(nb)),
                 dy + dy_image * static_cast<std::size_t>(i0), dyT);
    // cols [K, nb*P] = w^T [K, c_out] * dyT [c_out, nb*P]; w is [c_out, K] row-major.
    ex.gemm(true, false, static_cast<int>(K), static_cast<int>(d.nP), g.c_out, 1.0f, w, static_cast<int>(K), dyT,
            static_cast<int>(d.nP), 0.0f, cols, static_cast<int>(d.nP));
    ex.gather(d, static_cast<std::uint32_t>(dx_image * static_cast<std::size_t>(nb)), cols,
              dx + dx_image * static_cast<std::size_t>(i0));
  }
}

struct DeviceDgrad {
  cudaStream_t stream;
  void transpose(const DgradGeom& d, std::uint32_t total, const float* dy, float* dyT) const {
    dgrad_transpose_kernel<float><<<grid_for(total), kThreads, 0, stream>>>(d, total, dy, dyT);
    DTN_CUDA_CHECK_LAUNCH();
  }
  template <class... A>
  void gemm(A... a) const {
    cuda::gemm(a...);
  }
  void gather(const DgradGeom& d, std::uint32_t total, const float* cols, float* dx) const {
    dgrad_gather_kernel<float><<<grid_for(total), kThreads, 0, stream>>>(d, total, cols, dx);
    DTN_CUDA_CHECK_LAUNCH();
  }
};

}  // namespace detail

// dx = conv2d_backward_data(dy, w) through the GEMM path. Requires gemm_dgrad_supported(g).
inline void conv2d_backward_data_gemm(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  Context& ctx = context();
  const int chunk = detail::dgrad_chunk_images(g);
  const std::size_t per_image =
      (static_cast<std::size_t>(g.c_out) + static_cast<std::size_t>(g.c_in) * g.kh * g.kw) * g.h_out * g.w_out;
  float* ws = static_cast<float*>(ctx.workspace(per_image * static_cast<std::size_t>(chunk) * sizeof(float)));
  detail::dgrad_gemm_run(detail::DeviceDgrad{ctx.stream()}, g, dy, w, dx, ws, chunk);
}

}  // namespace cuda
}  // namespace dtn
