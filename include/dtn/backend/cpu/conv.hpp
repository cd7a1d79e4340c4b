#pragma once
// Convolution on the CPU: im2col + Eigen GEMM over chunks of images.
//
// A chunk of images is unfolded into one column matrix cols [c_in*kh*kw, chunk*h_out*w_out], so
// that layers with tiny outputs (4x4, 1x1) still make GEMMs wide enough to run near Eigen's peak.
// Chunks are processed in parallel, one per OpenMP thread, each with its own scratch buffer;
// inside a parallel region Eigen's GEMM runs single-threaded, so there is no oversubscription.
// Filter gradients are summed per chunk and then reduced in chunk order: deterministic.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "../backend.hpp"
#include "gemm.hpp"
#include "reduce.hpp"

namespace dtn {
namespace cpu {

// Images per chunk: enough columns for an efficient GEMM, but no fewer chunks than threads.
inline int conv_chunk(const ConvGeom& g) {
  const long hw = static_cast<long>(g.h_out) * g.w_out;
  const int threads = std::max(1, omp_get_max_threads());
  int by_width = static_cast<int>(std::max<long>(1, (512 + hw - 1) / hw));
  int by_threads = std::max(1, (g.n + threads - 1) / threads);
  return std::max(1, std::min(by_width, by_threads));
}

// The output columns ow whose input column iw = ow * stride - pad + kj lies inside the image:
// [lo, hi). Outside that range the unfolded value is the zero padding.
struct ColRange {
  int lo, hi;
  ColRange(const ConvGeom& g, int kj) {
    const int first = g.pad - kj;                 // smallest ow * stride that is inside
    const int last = g.w_in - 1 + g.pad - kj;     // largest ow * stride that is inside
    lo = first <= 0 ? 0 : std::min(g.w_out, (first + g.stride - 1) / g.stride);
    hi = last < 0 ? 0 : std::min(g.w_out, last / g.stride + 1);
    if (hi < lo) hi = lo;
  }
};

// Unfolds image x [c_in, h_in, w_in] into columns [col0, col0 + h_out*w_out) of cols (row stride ld).
// The in-image span of each output row is computed once per kernel column, so the inner loop is
// a branch-free copy (contiguous for stride 1).
template <class T>
void im2col(const ConvGeom& g, const T* x, T* cols, long ld, long col0) {
  for (int c = 0; c < g.c_in; ++c) {
    const T* xc = x + static_cast<long>(c) * g.h_in * g.w_in;
    for (int ki = 0; ki < g.kh; ++ki) {
      for (int kj = 0; kj < g.kw; ++kj) {
        const ColRange r(g, kj);
        const int shift = kj - g.pad;
        T* row = cols + ((static_cast<long>(c) * g.kh + ki) * g.kw + kj) * ld + col0;
        for (int oh = 0; oh < g.h_out; ++oh) {
          const int ih = oh * g.stride - g.pad + ki;
          T* out = row + static_cast<long>(oh) * g.w_out;
          if (ih < 0 || ih >= g.h_in) {
            std::fill(out, out + g.w_out, T(0));
            continue;
          }
          // xr[k] is the input under output column r.lo + k (in bounds by construction of r).
          const int span = r.hi - r.lo;
          std::fill(out, out + r.lo, T(0));
          if (span > 0) {
            const T* xr = xc + static_cast<long>(ih) * g.w_in + (r.lo * g.stride + shift);
            if (g.stride == 1)
              std::copy(xr, xr + span, out + r.lo);
            else
              for (int k = 0; k < span; ++k) out[r.lo + k] = xr[k * g.stride];
          }
          std::fill(out + r.hi, out + g.w_out, T(0));
        }
      }
    }
  }
}

// Adds columns [col0, col0 + h_out*w_out) of cols back into image dx [c_in, h_in, w_in].
template <class T>
void col2im_add(const ConvGeom& g, const T* cols, long ld, long col0, T* dx) {
  for (int c = 0; c < g.c_in; ++c) {
    T* dxc = dx + static_cast<long>(c) * g.h_in * g.w_in;
    for (int ki = 0; ki < g.kh; ++ki) {
      for (int kj = 0; kj < g.kw; ++kj) {
        const ColRange r(g, kj);
        const int shift = kj - g.pad;
        const T* row = cols + ((static_cast<long>(c) * g.kh + ki) * g.kw + kj) * ld + col0;
        for (int oh = 0; oh < g.h_out; ++oh) {
          const int ih = oh * g.stride - g.pad + ki;
          if (ih < 0 || ih >= g.h_in) continue;
          const T* in = row + static_cast<long>(oh) * g.w_out;
          if (r.hi <= r.lo) continue;
          T* dr = dxc + static_cast<long>(ih) * g.w_in + (r.lo * g.stride + shift);
          const T* src = in + r.lo;
          const int span = r.hi - r.lo;
          if (g.stride == 1)
            for (int k = 0; k < span; ++k) dr[k] += src[k];
          else
            for (int k = 0; k < span; ++k) dr[k * g.stride] += src[k];
        }
      }
    }
  }
}

// The sizes of one im2col pass: columns per image, rows of the unfolded matrix, input image size,
// images per chunk, chunks, and the threads that work on them.
struct ConvPlan {
  long hw, ckk, in_img;
  int chunk, nchunks, threads;
  explicit ConvPlan(const ConvGeom& g)
      : hw(static_cast<long>(g.h_out) * g.w_out),
        ckk(static_cast<long>(g.c_in) * g.kh * g.kw),
        in_img(static_cast<long>(g.c_in) * g.h_in * g.w_in),
        chunk(conv_chunk(g)),
        nchunks((g.n + chunk - 1) / chunk),
        threads(std::max(1, std::min(omp_get_max_threads(), nchunks))) {}
};

template <class T>
struct ConvScratch {
  std::vector<std::vector<T>> cols, out;
  void ensure(int threads, std::size_t ncols, std::size_t nout) {
    if (static_cast<int>(cols.size()) < threads) {
      cols.resize(static_cast<std::size_t>(threads));
      out.resize(static_cast<std::size_t>(threads));
    }
    for (int t = 0; t < threads; ++t) {
      if (cols[static_cast<std::size_t>(t)].size() < ncols) cols[static_cast<std::size_t>(t)].resize(ncols);
      if (out[static_cast<std::size_t>(t)].size() < nout) out[static_cast<std::size_t>(t)].resize(nout);
    }
  }
};
// Per-thread scratch, reused across calls (no allocation in the steady state), sized for a plan.
template <class T>
ConvScratch<T>& conv_scratch(const ConvPlan& p, const ConvGeom& g) {
  static thread_local ConvScratch<T> s;
  s.ensure(p.threads, static_cast<std::size_t>(p.ckk * p.chunk * p.hw), static_cast<std::size_t>(g.c_out * p.chunk * p.hw));
  return s;
}

// Copies image i0 + i of dy [n, c_out, hw] into columns [i*hw, (i+1)*hw) of dyc [c_out, ld].
template <class T>
void gather_output(const ConvGeom& g, const T* dy, int image, long hw, long ld, long col0, T* dyc) {
  for (int co = 0; co < g.c_out; ++co) {
    const T* src = dy + (static_cast<long>(image) * g.c_out + co) * hw;
    std::copy(src, src + hw, dyc + co * ld + col0);
  }
}

// db[c] += sum of dy over the batch and the output pixels (accumulated in double).
template <class T>
void bias_grad(const ConvGeom& g, const T* dy, T* db) {
  const long hw = static_cast<long>(g.h_out) * g.w_out;
  for (int co = 0; co < g.c_out; ++co) {
    double acc = 0;
    for (int i = 0; i < g.n; ++i) acc += sum_d(dy + (static_cast<long>(i) * g.c_out + co) * hw, hw);
    db[co] += static_cast<T>(acc);
  }
}

// A convolution whose kernel covers the whole unpadded input (one output pixel: D's last layer,
// and g's first as a transposed convolution) is a matrix product over the flattened images.
// Unfolding it image by image would write each column with a stride of the batch size, which
// thrashes the cache (measured 0.6 GFLOP/s on D's last layer), so it takes this path instead.
inline bool conv_is_dense(const ConvGeom& g) {
  return g.pad == 0 && g.kh == g.h_in && g.kw == g.w_in && g.h_out == 1 && g.w_out == 1;
}

template <class T>
void conv2d_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y) {
  if (conv_is_dense(g)) {
    const int ckk = g.c_in * g.kh * g.kw;
    // y [n, c_out] = x [n, ckk] w^T [ckk, c_out]
    gemm<T>(false, true, g.n, g.c_out, ckk, T(1), x, ckk, w, ckk, T(0), y, g.c_out);
    if (bias)
      for (int i = 0; i < g.n; ++i)
        for (int co = 0; co < g.c_out; ++co) y[static_cast<long>(i) * g.c_out + co] += bias[co];
    return;
  }
  const ConvPlan p(g);
  const long hw = p.hw, ckk = p.ckk, in_img = p.in_img;
  const int chunk = p.chunk, nchunks = p.nchunks;
  ConvScratch<T>& s = conv_scratch<T>(p, g);
#pragma omp parallel for schedule(dynamic, 1) num_threads(p.threads)
  for (int ci = 0; ci < nchunks; ++ci) {
    const int tid = omp_get_thread_num();
    const int i0 = ci * chunk, cnt = std::min(chunk, g.n - i0);
    const long ld = cnt * hw;
    T* cols = s.cols[static_cast<std::size_t>(tid)].data();
    T* out = s.out[static_cast<std::size_t>(tid)].data();
    for (int i = 0; i < cnt; ++i) im2col(g, x + (i0 + i) * in_img, cols, ld, i * hw);
    // out [c_out, cnt*hw] = w [c_out, ckk] * cols [ckk, cnt*hw]
    gemm<T>(false, false, g.c_out, static_cast<int>(ld), static_cast<int>(ckk), T(1), w, static_cast<int>(ckk), cols,
            static_cast<int>(ld), T(0), out, static_cast<int>(ld));
    for (int i = 0; i < cnt; ++i)
      for (int co = 0; co < g.c_out; ++co) {
        const T b = bias ? bias[co] : T(0);
        const T* src = out + co * ld + i * hw;
        T* dst = y + ((static_cast<long>(i0 + i) * g.c_out) + co) * hw;
        for (long p = 0; p < hw; ++p) dst[p] = src[p] + b;
      }
  }
}

template <class T>
void conv2d_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  if (conv_is_dense(g)) {
    const int ckk = g.c_in * g.kh * g.kw;
    // dx [n, ckk] = dy [n, c_out] w [c_out, ckk]
    gemm<T>(false, false, g.n, ckk, g.c_out, T(1), dy, g.c_out, w, ckk, T(0), dx, ckk);
    return;
  }
  const ConvPlan p(g);
  const long hw = p.hw, ckk = p.ckk, in_img = p.in_img;
  const int chunk = p.chunk, nchunks = p.nchunks;
  ConvScratch<T>& s = conv_scratch<T>(p, g);
#pragma omp parallel for schedule(dynamic, 1) num_threads(p.threads)
  for (int ci = 0; ci < nchunks; ++ci) {
    const int tid = omp_get_thread_num();
    const int i0 = ci * chunk, cnt = std::min(chunk, g.n - i0);
    const long ld = cnt * hw;
    T* cols = s.cols[static_cast<std::size_t>(tid)].data();
    T* dyc = s.out[static_cast<std::size_t>(tid)].data();
    for (int i = 0; i < cnt; ++i) gather_output(g, dy, i0 + i, hw, ld, i * hw, dyc);
    // cols [ckk, cnt*hw] = w^T [ckk, c_out] * dy [c_out, cnt*hw]
    gemm<T>(true, false, static_cast<int>(ckk), static_cast<int>(ld), g.c_out, T(1), w, static_cast<int>(ckk), dyc,
            static_cast<int>(ld), T(0), cols, static_cast<int>(ld));
    for (int i = 0; i < cnt; ++i) {
      T* dxi = dx + (i0 + i) * in_img;
      std::fill(dxi, dxi + in_img, T(0));
      col2im_add(g, cols, ld, i * hw, dxi);
    }
  }
}

template <class T>
void conv2d_backward_filter(const ConvGeom& g, const T* x, const T* dy, T* dw, T* db) {
  if (conv_is_dense(g)) {
    const int ckk = g.c_in * g.kh * g.kw;
    // dw [c_out, ckk] += dy^T [c_out, n] x [n, ckk]
    gemm<T>(true, false, g.c_out, ckk, g.n, T(1), dy, g.c_out, x, ckk, T(1), dw, ckk);
    if (db) bias_grad(g, dy, db);
    return;
  }
  const ConvPlan p(g);
  const long hw = p.hw, ckk = p.ckk, in_img = p.in_img;
  const long wsize = g.c_out * ckk;
  const int chunk = p.chunk, nchunks = p.nchunks;
  ConvScratch<T>& s = conv_scratch<T>(p, g);
  // One partial filter gradient per chunk, reduced in chunk order below (deterministic).
  static thread_local std::vector<T> partial;
  partial.assign(static_cast<std::size_t>(nchunks * wsize), T(0));
  T* part = partial.data();
#pragma omp parallel for schedule(dynamic, 1) num_threads(p.threads)
  for (int ci = 0; ci < nchunks; ++ci) {
    const int tid = omp_get_thread_num();
    const int i0 = ci * chunk, cnt = std::min(chunk, g.n - i0);
    const long ld = cnt * hw;
    T* cols = s.cols[static_cast<std::size_t>(tid)].data();
    T* dyc = s.out[static_cast<std::size_t>(tid)].data();
    for (int i = 0; i < cnt; ++i) {
      im2col(g, x + (i0 + i) * in_img, cols, ld, i * hw);
      gather_output(g, dy, i0 + i, hw, ld, i * hw, dyc);
    }
    // partial [c_out, ckk] = dy [c_out, cnt*hw] * cols^T [cnt*hw, ckk]
    gemm<T>(false, true, g.c_out, static_cast<int>(ckk), static_cast<int>(ld), T(1), dyc, static_cast<int>(ld), cols,
            static_cast<int>(ld), T(0), part + ci * wsize, static_cast<int>(ckk));
  }
  for (int ci = 0; ci < nchunks; ++ci) {
    const T* pc = part + ci * wsize;
    for (long j = 0; j < wsize; ++j) dw[j] += pc[j];
  }
  if (db) bias_grad(g, dy, db);
}

}  // namespace cpu
}  // namespace dtn
