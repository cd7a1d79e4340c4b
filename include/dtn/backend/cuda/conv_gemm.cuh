#pragma once
// Convolution as cuBLAS GEMMs plus index kernels, the GPU counterpart of the CPU backend's
// im2col + GEMM: an alternative engine to cuDNN for each of the three passes. With P = h_out*w_out,
// K = c_in*kh*kw and a chunk of nb images:
//
//   cols [K, nb*P]   = im2col(x): cols[(c*kh + a)*kw + b, i*P + oh*w_out + ow]
//                      = x[i, c, oh*stride - pad + a, ow*stride - pad + b] (0 outside x);
//   zT   [c_out, nb*P] is z [nb, c_out, P] (y or dy) with its first two axes swapped, so that the
//                      GEMMs see every image of the chunk as more columns;
//   forward:         yT = w [c_out, K] cols,            then y = yT with the axes swapped back;
//   backward-data:   cols = w^T dyT,                     then dx = gather(cols): each dx element
//                    sums the taps (a, b) in row-major order whose output pixel exists, a fixed
//                    order and no atomics (deterministic, overlapping windows included);
//   backward-filter: dw += dyT cols^T (accumulates, as the contract says; chunk after chunk).
//
// Why: the 2026-11-26 H100 run measured cuDNN's deterministic choices for stride-2 backward-data
// at 8-15% of the GEMM rate (D.6 backward-data 1.21 ms, g.3 forward 1.09 ms at batch 128): for
// strided dgrad the legacy API's only deterministic algorithm is ALGO_1, where the same work here
// is one 2304 x 2048 x 512 SGEMM (D.6) and two passes over a few MiB. Images go in chunks that
// keep the workspace under kConvGemmWorkspace (or a lower set_conv_workspace_limit). All indices
// are 32-bit (FastDivmod): shapes whose chunk does not fit, or one image of which needs more
// workspace, are left to cuDNN (conv_gemm_supported).
//
// Chosen per shape and direction in conv.cuh: for every pass it takes with
// dtn::cuda::set_conv_gemm(true), the default, or timed against cuDNN's best when autotuning.
// Its index code and pass sequences also run on the host (tests/cuda_host) in every test run.
#include <cuda_runtime.h>

#include <algorithm>
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

// Bytes for zT + cols per chunk: the default cap, lowered by set_conv_workspace_limit
// (conv_gemm_workspace_cap).
constexpr std::size_t kConvGemmWorkspace = std::size_t(128) << 20;

// The geometry of one chunk as the kernels need it, with the divisors of the index decompositions.
struct ConvGemmGeom {
  int c_in = 0, h_in = 0, w_in = 0, c_out = 0, kh = 0, kw = 0, stride = 1, pad = 0, h_out = 0, w_out = 0;
  unsigned P = 0;   // h_out * w_out
  unsigned nP = 0;  // images in the chunk * P: the row length of zT and cols
  FastDivmod by_P, by_cout_P, by_hw_in, by_c_in, by_w_in, by_nP, by_kk, by_kw, by_w_out, by_stride;

  // zT[co, i * P + p] = z[(i * c_out + co) * P + p]: the zT index of element e of z (< nb*c_out*P).
  DTN_HD std::size_t transposed_index(std::uint32_t e) const {
    std::uint32_t i = 0, rest = 0, co = 0, p = 0;
    by_cout_P.divmod(e, i, rest);
    by_P.divmod(rest, co, p);
    return static_cast<std::size_t>(co) * nP + static_cast<std::size_t>(i) * P + p;
  }

  // cols element e (< K * nP) of im2col(x).
  template <class T>
  DTN_HD T im2col(const T* x, std::uint32_t e) const {
    std::uint32_t row = 0, col = 0, c = 0, tap = 0, a = 0, b = 0, i = 0, p = 0, oh = 0, ow = 0;
    by_nP.divmod(e, row, col);
    by_kk.divmod(row, c, tap);
    by_kw.divmod(tap, a, b);
    by_P.divmod(col, i, p);
    by_w_out.divmod(p, oh, ow);
    const int ih = static_cast<int>(oh) * stride - pad + static_cast<int>(a);
    const int iw = static_cast<int>(ow) * stride - pad + static_cast<int>(b);
    if (ih < 0 || ih >= h_in || iw < 0 || iw >= w_in) return T(0);
    return x[((static_cast<std::size_t>(i) * c_in + c) * h_in + ih) * w_in + iw];
  }

  // dx element e of the chunk (e < nb * c_in * h_in * w_in), gathered from cols [K, nP]. Only the
  // taps that hit an output pixel are visited: with t = ih + pad, a tap row a contributes when
  // (t - a) is a multiple of stride, i.e. a = t mod stride, + stride, ..., at output row
  // oh = (t - a) / stride, which falls by one per step (likewise for columns). The order is that
  // of a full row-major sweep of the taps that skips the others.
  template <class T>
  DTN_HD T gather(const T* cols, std::uint32_t e) const {
    std::uint32_t plane = 0, pix = 0, i = 0, c = 0, ih = 0, iw = 0;
    by_hw_in.divmod(e, plane, pix);
    by_c_in.divmod(plane, i, c);
    by_w_in.divmod(pix, ih, iw);
    std::uint32_t oh0 = 0, a0 = 0, ow0 = 0, b0 = 0;
    by_stride.divmod(ih + static_cast<std::uint32_t>(pad), oh0, a0);
    by_stride.divmod(iw + static_cast<std::uint32_t>(pad), ow0, b0);
    const T* base = cols + static_cast<std::size_t>(c) * kh * kw * nP + static_cast<std::size_t>(i) * P;
    T acc = T(0);
    int oh = static_cast<int>(oh0);
    for (int a = static_cast<int>(a0); a < kh && oh >= 0; a += stride, --oh) {
      if (oh >= h_out) continue;
      int ow = static_cast<int>(ow0);
      for (int b = static_cast<int>(b0); b < kw && ow >= 0; b += stride, --ow) {
        if (ow >= w_out) continue;
        acc += base[static_cast<std::size_t>(a * kw + b) * nP + static_cast<std::size_t>(oh) * w_out + ow];
      }
    }
    return acc;
  }
};

inline std::size_t conv_gemm_k(const ConvGeom& g) { return static_cast<std::size_t>(g.c_in) * g.kh * g.kw; }
inline std::size_t conv_gemm_p(const ConvGeom& g) { return static_cast<std::size_t>(g.h_out) * g.w_out; }

// cols starts at zT's size rounded up to this many floats (256 bytes), so that cuBLAS gets
// aligned operands (at zT's size itself, cols could start only 4-byte aligned, and cuBLAS fall
// back to slower unvectorised kernels).
constexpr std::size_t kConvGemmAlign = 64;

// Floats of zT for a chunk of nb images, rounded up to kConvGemmAlign: cols follows it.
inline std::size_t conv_gemm_zt_floats(const ConvGeom& g, std::size_t nb) {
  const std::size_t n = static_cast<std::size_t>(g.c_out) * conv_gemm_p(g) * nb;
  return (n + kConvGemmAlign - 1) / kConvGemmAlign * kConvGemmAlign;
}
// Floats of workspace for a chunk of nb images: zT, then cols.
inline std::size_t conv_gemm_ws_floats(const ConvGeom& g, std::size_t nb) {
  return conv_gemm_zt_floats(g, nb) + conv_gemm_k(g) * conv_gemm_p(g) * nb;
}

// The workspace cap (bytes) under a limit (set_conv_workspace_limit): the smaller of the two.
inline std::size_t conv_gemm_workspace_cap(std::size_t limit) { return std::min(kConvGemmWorkspace, limit); }

// Images per chunk: as many as fit `cap` bytes of workspace (at least one, at most n). Each
// image takes (K + c_out) * P floats, and zT's rounding at most kConvGemmAlign - 1 more per chunk.
inline int conv_gemm_chunk_images(const ConvGeom& g, std::size_t cap) {
  const std::size_t per_image = (conv_gemm_k(g) + static_cast<std::size_t>(g.c_out)) * conv_gemm_p(g);
  const std::size_t cap_floats = cap / sizeof(float);
  const std::size_t room = cap_floats > kConvGemmAlign - 1 ? cap_floats - (kConvGemmAlign - 1) : 0;
  const std::size_t fit = per_image == 0 ? 1 : room / per_image;
  return static_cast<int>(fit < 1 ? 1 : (fit > static_cast<std::size_t>(g.n) ? g.n : fit));
}

// Whether the GEMM engine can take g with `cap` bytes of workspace: one image's zT and cols
// within the cap (so the engine never asks for more, even for one image), and every index of a
// chunk within 32 bits (FastDivmod's domain) and every GEMM dimension within int.
inline bool conv_gemm_supported(const ConvGeom& g, std::size_t cap) {
  if (g.n <= 0 || g.stride <= 0 || g.c_in <= 0 || g.c_out <= 0 || g.kh <= 0 || g.kw <= 0 || g.h_out <= 0 ||
      g.w_out <= 0 || g.h_in <= 0 || g.w_in <= 0 || g.pad < 0)
    return false;
  if (conv_gemm_ws_floats(g, 1) * sizeof(float) > cap) return false;
  const std::size_t nb = static_cast<std::size_t>(conv_gemm_chunk_images(g, cap));
  const std::size_t P = conv_gemm_p(g), K = conv_gemm_k(g);
  const std::size_t lim = FastDivmod::limit;
  return nb * P < lim && nb * g.c_out * P < lim && K * nb * P < lim &&
         nb * g.c_in * static_cast<std::size_t>(g.h_in) * g.w_in < lim &&
         static_cast<std::size_t>(g.h_in) + g.pad < lim && static_cast<std::size_t>(g.w_in) + g.pad < lim &&
         static_cast<std::size_t>(g.stride) < lim;
}

inline ConvGemmGeom conv_gemm_geom(const ConvGeom& g, int nb) {
  ConvGemmGeom d;
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
  d.P = static_cast<unsigned>(conv_gemm_p(g));
  d.nP = static_cast<unsigned>(nb) * d.P;
  d.by_P = FastDivmod(d.P);
  d.by_cout_P = FastDivmod(static_cast<std::uint32_t>(g.c_out) * d.P);
  d.by_hw_in = FastDivmod(static_cast<std::uint32_t>(g.h_in) * static_cast<std::uint32_t>(g.w_in));
  d.by_c_in = FastDivmod(static_cast<std::uint32_t>(g.c_in));
  d.by_w_in = FastDivmod(static_cast<std::uint32_t>(g.w_in));
  d.by_nP = FastDivmod(d.nP);
  d.by_kk = FastDivmod(static_cast<std::uint32_t>(g.kh) * static_cast<std::uint32_t>(g.kw));
  d.by_kw = FastDivmod(static_cast<std::uint32_t>(g.kw));
  d.by_w_out = FastDivmod(static_cast<std::uint32_t>(g.w_out));
  d.by_stride = FastDivmod(static_cast<std::uint32_t>(g.stride));
  return d;
}

template <class T>
__global__ void conv_gemm_transpose_kernel(ConvGemmGeom d, std::uint32_t total, const T* z, T* zT) {
  for (std::size_t e = global_index(); e < total; e += grid_stride())
    zT[d.transposed_index(static_cast<std::uint32_t>(e))] = z[e];
}
template <class T>
__global__ void conv_gemm_untranspose_kernel(ConvGemmGeom d, std::uint32_t total, const T* zT, T* z) {
  for (std::size_t e = global_index(); e < total; e += grid_stride())
    z[e] = zT[d.transposed_index(static_cast<std::uint32_t>(e))];
}
template <class T>
__global__ void conv_gemm_im2col_kernel(ConvGemmGeom d, std::uint32_t total, const T* x, T* cols) {
  for (std::size_t e = global_index(); e < total; e += grid_stride())
    cols[e] = d.im2col(x, static_cast<std::uint32_t>(e));
}
template <class T>
__global__ void conv_gemm_gather_kernel(ConvGemmGeom d, std::uint32_t total, const T* cols, T* dx) {
  for (std::size_t e = global_index(); e < total; e += grid_stride())
    dx[e] = d.gather(cols, static_cast<std::uint32_t>(e));
}

// The passes over images [0, g.n) in chunks of `chunk`, written once for any executor with
// transpose / untranspose / im2col / gather (d, total, src, dst) and gemm (the backend's row-major
// signature): DeviceConvGemm below, or the host emulation of tests/cuda_host. ws holds
// conv_gemm_ws_floats(g, chunk) floats: zT first, then cols (kConvGemmAlign-aligned within ws).
struct ConvGemmChunk {
  ConvGemmGeom d;
  std::size_t x_off, y_off;      // the chunk's first image in x (or dx) and in y (or dy)
  std::uint32_t x_n, y_n, cols_n;  // elements of the chunk's x, y and cols
  int K, nP;                     // GEMM sizes: c_in*kh*kw, images * h_out*w_out
  float* zT;
  float* cols;
};
template <class F>
void for_conv_gemm_chunks(const ConvGeom& g, float* ws, int chunk, F&& f) {
  const std::size_t x_image = static_cast<std::size_t>(g.c_in) * g.h_in * g.w_in;
  const std::size_t y_image = static_cast<std::size_t>(g.c_out) * conv_gemm_p(g);
  const std::size_t K = conv_gemm_k(g);
  for (int i0 = 0; i0 < g.n; i0 += chunk) {
    const std::size_t nb = static_cast<std::size_t>(g.n - i0 < chunk ? g.n - i0 : chunk);
    const ConvGemmGeom d = conv_gemm_geom(g, static_cast<int>(nb));
    f(ConvGemmChunk{d, x_image * static_cast<std::size_t>(i0), y_image * static_cast<std::size_t>(i0),
                    static_cast<std::uint32_t>(x_image * nb), static_cast<std::uint32_t>(y_image * nb),
                    static_cast<std::uint32_t>(K * d.nP), static_cast<int>(K), static_cast<int>(d.nP), ws,
                    ws + conv_gemm_zt_floats(g, nb)});
  }
}

// y = conv(x, w) (no bias).
template <class Exec>
void conv_gemm_forward(const Exec& ex, const ConvGeom& g, const float* x, const float* w, float* y, float* ws,
                       int chunk) {
  for_conv_gemm_chunks(g, ws, chunk, [&](const ConvGemmChunk& c) {
    ex.im2col(c.d, c.cols_n, x + c.x_off, c.cols);
    // yT [c_out, nP] = w [c_out, K] cols [K, nP]
    ex.gemm(false, false, g.c_out, c.nP, c.K, 1.0f, w, c.K, c.cols, c.nP, 0.0f, c.zT, c.nP);
    ex.untranspose(c.d, c.y_n, c.zT, y + c.y_off);
  });
}

// dx = conv2d_backward_data(dy, w).
template <class Exec>
void conv_gemm_backward_data(const Exec& ex, const ConvGeom& g, const float* dy, const float* w, float* dx, float* ws,
                             int chunk) {
  for_conv_gemm_chunks(g, ws, chunk, [&](const ConvGemmChunk& c) {
    ex.transpose(c.d, c.y_n, dy + c.y_off, c.zT);
    // cols [K, nP] = w^T [K, c_out] dyT [c_out, nP]; w is [c_out, K] row-major.
    ex.gemm(true, false, c.K, c.nP, g.c_out, 1.0f, w, c.K, c.zT, c.nP, 0.0f, c.cols, c.nP);
    ex.gather(c.d, c.x_n, c.cols, dx + c.x_off);
  });
}

// dw += dL/dw (no bias gradient).
template <class Exec>
void conv_gemm_backward_filter(const Exec& ex, const ConvGeom& g, const float* x, const float* dy, float* dw,
                               float* ws, int chunk) {
  for_conv_gemm_chunks(g, ws, chunk, [&](const ConvGemmChunk& c) {
    ex.im2col(c.d, c.cols_n, x + c.x_off, c.cols);
    ex.transpose(c.d, c.y_n, dy + c.y_off, c.zT);
    // dw [c_out, K] += dyT [c_out, nP] cols^T [nP, K]
    ex.gemm(false, true, g.c_out, c.K, c.nP, 1.0f, c.zT, c.nP, c.cols, c.nP, 1.0f, dw, c.K);
  });
}

struct DeviceConvGemm {
  cudaStream_t stream;
  void transpose(const ConvGemmGeom& d, std::uint32_t total, const float* z, float* zT) const {
    conv_gemm_transpose_kernel<float><<<grid_for(total), kThreads, 0, stream>>>(d, total, z, zT);
    DTN_CUDA_CHECK_LAUNCH();
  }
  void untranspose(const ConvGemmGeom& d, std::uint32_t total, const float* zT, float* z) const {
    conv_gemm_untranspose_kernel<float><<<grid_for(total), kThreads, 0, stream>>>(d, total, zT, z);
    DTN_CUDA_CHECK_LAUNCH();
  }
  void im2col(const ConvGemmGeom& d, std::uint32_t total, const float* x, float* cols) const {
    conv_gemm_im2col_kernel<float><<<grid_for(total), kThreads, 0, stream>>>(d, total, x, cols);
    DTN_CUDA_CHECK_LAUNCH();
  }
  void gather(const ConvGemmGeom& d, std::uint32_t total, const float* cols, float* dx) const {
    conv_gemm_gather_kernel<float><<<grid_for(total), kThreads, 0, stream>>>(d, total, cols, dx);
    DTN_CUDA_CHECK_LAUNCH();
  }
  template <class... A>
  void gemm(A... a) const {
    cuda::gemm(a...);
  }
};

// The calling thread's cap, from its context's limit.
inline std::size_t conv_gemm_workspace_cap() { return conv_gemm_workspace_cap(context().conv_workspace_limit()); }

// The workspace and chunk for g on the calling thread's context.
inline float* conv_gemm_workspace(const ConvGeom& g, int chunk) {
  return static_cast<float*>(
      context().workspace(conv_gemm_ws_floats(g, static_cast<std::size_t>(chunk)) * sizeof(float)));
}

}  // namespace detail

// The three passes through the GEMM engine on the context stream. Each requires
// detail::conv_gemm_supported(g, detail::conv_gemm_workspace_cap()); bias and bias gradient are
// the caller's.
inline void conv2d_forward_gemm(const ConvGeom& g, const float* x, const float* w, float* y) {
  const int chunk = detail::conv_gemm_chunk_images(g, detail::conv_gemm_workspace_cap());
  detail::conv_gemm_forward(detail::DeviceConvGemm{stream()}, g, x, w, y, detail::conv_gemm_workspace(g, chunk), chunk);
}
inline void conv2d_backward_data_gemm(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  const int chunk = detail::conv_gemm_chunk_images(g, detail::conv_gemm_workspace_cap());
  detail::conv_gemm_backward_data(detail::DeviceConvGemm{stream()}, g, dy, w, dx, detail::conv_gemm_workspace(g, chunk),
                                  chunk);
}
inline void conv2d_backward_filter_gemm(const ConvGeom& g, const float* x, const float* dy, float* dw) {
  const int chunk = detail::conv_gemm_chunk_images(g, detail::conv_gemm_workspace_cap());
  detail::conv_gemm_backward_filter(detail::DeviceConvGemm{stream()}, g, x, dy, dw,
                                    detail::conv_gemm_workspace(g, chunk), chunk);
}

}  // namespace cuda
}  // namespace dtn
