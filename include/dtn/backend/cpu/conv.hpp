#pragma once
// Convolution on the CPU: im2col + Eigen GEMM over chunks of images.
//
// A chunk of images is unfolded into one column matrix cols [c_in*kh*kw, chunk*h_out*w_out], so
// that layers with tiny outputs (4x4, 1x1) still make GEMMs wide enough to run near Eigen's peak.
// Chunks are processed in parallel, one per OpenMP thread, each with its own scratch buffer;
// inside a parallel region Eigen's GEMM runs single-threaded, so there is no oversubscription.
// Filter gradients accumulate per thread over a static range of chunks and are then added in
// thread order: deterministic for a given thread count.
// In float, where the translation unit targets AVX-512F, the unfold (im2col), the fold back
// (col2im) and the forward product of layers with at most 32 unfolded rows (f.0, D.0) have
// vectorised versions; the unfold and fold give the generic loops' bits (tested).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

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

// Calls fn(xc, r, shift, ki, row) for every row (c, ki, kj) of the unfolded matrix: xc is input
// channel c of x, r the output columns whose input column lies inside the image for kernel
// column kj, shift = kj - pad, and row the row's first element in cols (column col0).
template <class T, class Fn>
inline void for_each_unfold_row(const ConvGeom& g, const T* x, T* cols, long ld, long col0, Fn&& fn) {
  for (int c = 0; c < g.c_in; ++c) {
    const T* xc = x + static_cast<long>(c) * g.h_in * g.w_in;
    for (int ki = 0; ki < g.kh; ++ki)
      for (int kj = 0; kj < g.kw; ++kj)
        fn(xc, ColRange(g, kj), kj - g.pad, ki, cols + ((static_cast<long>(c) * g.kh + ki) * g.kw + kj) * ld + col0);
  }
}

// Unfolds image x [c_in, h_in, w_in] into columns [col0, col0 + h_out*w_out) of cols (row stride ld).
// The in-image span of each output row is computed once per kernel column, so the inner loop is
// a branch-free copy (contiguous for stride 1).
template <class T>
void im2col_generic(const ConvGeom& g, const T* x, T* cols, long ld, long col0) {
  for_each_unfold_row(g, x, cols, ld, col0, [&](const T* xc, const ColRange& r, int shift, int ki, T* row) {
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
  });
}

// Adds columns [col0, col0 + h_out*w_out) of cols back into image dx [c_in, h_in, w_in].
template <class T>
void col2im_add_generic(const ConvGeom& g, const T* cols, long ld, long col0, T* dx) {
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

#if defined(__AVX512F__)
// AVX-512 versions for float and strides 1 and 2: each output row is cut into blocks of 16
// columns, and a block is one masked load (two for stride 2, whose even lanes are then gathered
// by one permute) and one masked store, with the zero padding coming from the load mask.
// std::copy/fill on rows of 4-16 floats spent most of its time in call overhead (im2col and
// col2im were ~16% of a DTN step). Both produce the same bits as the generic loops: im2col is
// a copy, and col2im adds the same terms in the same order. Lanes outside a load mask are never
// read, so the row pointers may point before or after the image (only masked lanes get there).
// Full unrolling of the 8-row register blocks below (so the accumulators stay in registers).
// Only for GCC and Clang compiling host code: nvcc's front end, which also reads this header in
// .cu files, rejects the pragma (an error under DTN_WERROR).
#if defined(__GNUC__) && !defined(__CUDACC__)
#define DTN_UNROLL_8 _Pragma("GCC unroll 8")
#else
#define DTN_UNROLL_8
#endif
namespace simd {
// Bits [lo, hi) of a 16-lane mask (0 <= lo, hi <= 16).
inline __mmask16 lanes(int lo, int hi) {
  if (hi <= lo) return 0;
  return static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}
// Even lanes 2k for k in [lo, hi) of a 32-lane span, split into its two 16-lane halves.
inline void even_lanes(int lo, int hi, __mmask16& m0, __mmask16& m1) {
  std::uint32_t m = 0;
  if (hi > lo) m = static_cast<std::uint32_t>((((std::uint64_t(1) << (2 * hi)) - 1) & ~((std::uint64_t(1) << (2 * lo)) - 1)) & 0x55555555u);
  m0 = static_cast<__mmask16>(m & 0xffffu);
  m1 = static_cast<__mmask16>(m >> 16);
}
}  // namespace simd

// Output rows of w_out = 1, 2, 4 or 8 columns (the 8x8 and 4x4 layers: D.3, D.6, f.9, and g's
// transposed convolutions run backwards) would leave most of each 16-lane store empty and pay
// the row loop's overhead per 4-8 floats, so R = 16 / w_out output rows share one vector: row rr
// of a group is merged into lanes [rr * w_out, (rr + 1) * w_out) by a masked load from an address
// shifted by rr * w_out (stride 2: two vectors of 2 * w_out input columns per row, whose even
// lanes one permute gathers), and the group is one store of R contiguous output rows.
inline bool im2col_rows_fit(const ConvGeom& g) {
  return (g.w_out == 1 || g.w_out == 2 || g.w_out == 4 || g.w_out == 8) && (g.stride == 1 || g.stride == 2);
}
inline void im2col_simd_rows(const ConvGeom& g, const float* x, float* cols, long ld, long col0) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const int w = g.w_out, rows = 16 / w;
  for_each_unfold_row(g, x, cols, ld, col0, [&](const float* xc, const ColRange& r, int shift, int ki, float* row) {
    for (int oh0 = 0; oh0 < g.h_out; oh0 += rows) {
      const int n = std::min(rows, g.h_out - oh0);
      __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
      for (int rr = 0; rr < n; ++rr) {
        const int ih = (oh0 + rr) * g.stride - g.pad + ki;
        if (ih < 0 || ih >= g.h_in || r.hi <= r.lo) continue;
        const float* xr = xc + static_cast<long>(ih) * g.w_in + shift;  // input under ow = 0
        if (g.stride == 1) {
          lo = _mm512_mask_loadu_ps(lo, simd::lanes(rr * w + r.lo, rr * w + r.hi), xr - rr * w);
        } else {
          // row rr's input columns sit at lanes 2 * (rr * w + ow) of the 32-lane pair (lo, hi)
          const int base = 2 * rr * w;
          __mmask16 m0, m1;
          simd::even_lanes(rr * w + r.lo, rr * w + r.hi, m0, m1);
          if (base < 16)
            lo = _mm512_mask_loadu_ps(lo, m0, xr - base);
          else
            hi = _mm512_mask_loadu_ps(hi, m1, xr - (base - 16));
        }
      }
      const __m512 v = g.stride == 1 ? lo : _mm512_permutex2var_ps(lo, even, hi);
      _mm512_mask_storeu_ps(row + static_cast<long>(oh0) * w, simd::lanes(0, n * w), v);
    }
  });
}

inline void im2col_simd(const ConvGeom& g, const float* x, float* cols, long ld, long col0) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for_each_unfold_row(g, x, cols, ld, col0, [&](const float* xc, const ColRange& r, int shift, int ki, float* row) {
    for (int oh = 0; oh < g.h_out; ++oh) {
      const int ih = oh * g.stride - g.pad + ki;
      float* out = row + static_cast<long>(oh) * g.w_out;
      const bool inside = ih >= 0 && ih < g.h_in;
      const float* xr = xc + static_cast<long>(inside ? ih : 0) * g.w_in + shift;  // input under ow = 0
      for (int ow0 = 0; ow0 < g.w_out; ow0 += 16) {
        const int n = std::min(16, g.w_out - ow0);
        const __mmask16 store = simd::lanes(0, n);
        if (!inside) {
          _mm512_mask_storeu_ps(out + ow0, store, _mm512_setzero_ps());
          continue;
        }
        const int lo = std::max(r.lo - ow0, 0), hi = std::min(r.hi - ow0, n);
        __m512 v;
        if (g.stride == 1) {
          v = _mm512_maskz_loadu_ps(simd::lanes(lo, hi), xr + ow0);
        } else {
          __mmask16 m0, m1;
          simd::even_lanes(lo, hi, m0, m1);
          const float* p = xr + 2 * ow0;
          v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m0, p), even, _mm512_maskz_loadu_ps(m1, p + 16));
        }
        _mm512_mask_storeu_ps(out + ow0, store, v);
      }
    }
  });
}

// col2im for rows of at most 16 output and 32 input columns (every layer of the digits networks
// but f.0). A masked add straight into dx per kernel column would store and then reload
// overlapping lanes of the same dx row (kj and kj + 1 hit neighbouring columns), which stalls on
// store forwarding and measured slower than the scalar loop. Instead, each dx row (ih) is loaded
// once into two registers, the kw source rows that land on it are added in registers (lane iw
// takes source column (iw - kj + pad) / stride through one masked permute, precomputed per kj),
// and the row is stored once. For a fixed (c, ki) each ih comes from exactly one oh, so every dx
// element still receives its terms in the generic order (c, ki, kj): the same bits.
inline bool col2im_simd_fits(const ConvGeom& g) { return g.w_out <= 16 && g.w_in <= 32 && g.kw <= 8; }

inline void col2im_add_simd(const ConvGeom& g, const float* cols, long ld, long col0, float* dx) {
  __m512i idx[8][2];
  __mmask16 take[8][2];
  for (int kj = 0; kj < g.kw; ++kj)
    for (int h = 0; h < 2; ++h) {
      alignas(64) int ix[16];
      unsigned m = 0;
      for (int p = 0; p < 16; ++p) {
        const int iw = 16 * h + p, t = iw - (kj - g.pad);
        const bool ok = iw < g.w_in && t >= 0 && t % g.stride == 0 && t / g.stride < g.w_out;
        ix[p] = ok ? t / g.stride : 0;
        if (ok) m |= 1u << p;
      }
      idx[kj][h] = _mm512_load_si512(ix);
      take[kj][h] = static_cast<__mmask16>(m);
    }
  const __mmask16 row0 = simd::lanes(0, std::min(g.w_in, 16)), row1 = simd::lanes(0, std::max(g.w_in - 16, 0));
  const __mmask16 src = simd::lanes(0, g.w_out);
  for (int c = 0; c < g.c_in; ++c) {
    float* dxc = dx + static_cast<long>(c) * g.h_in * g.w_in;
    for (int ki = 0; ki < g.kh; ++ki) {
      const float* rows = cols + (static_cast<long>(c) * g.kh + ki) * g.kw * ld + col0;
      for (int oh = 0; oh < g.h_out; ++oh) {
        const int ih = oh * g.stride - g.pad + ki;
        if (ih < 0 || ih >= g.h_in) continue;
        float* dr = dxc + static_cast<long>(ih) * g.w_in;
        __m512 d0 = _mm512_maskz_loadu_ps(row0, dr), d1 = _mm512_maskz_loadu_ps(row1, dr + 16);
        for (int kj = 0; kj < g.kw; ++kj) {
          const __m512 v = _mm512_maskz_loadu_ps(src, rows + kj * ld + static_cast<long>(oh) * g.w_out);
          d0 = _mm512_add_ps(d0, _mm512_maskz_permutexvar_ps(take[kj][0], idx[kj][0], v));
          d1 = _mm512_add_ps(d1, _mm512_maskz_permutexvar_ps(take[kj][1], idx[kj][1], v));
        }
        _mm512_mask_storeu_ps(dr, row0, d0);
        if (row1) _mm512_mask_storeu_ps(dr + 16, row1, d1);
      }
    }
  }
}

// The forward GEMM of convolutions with few input channels (f.0: k = c_in*kh*kw = 27; D.0: 9),
// k <= 32, written straight into y: for each of the cnt images of a chunk,
//   y_i [m, hw] = bias (or 0) + A [m, k] * B [k, i*hw .. (i+1)*hw)   (B's rows have stride ldb).
// Eigen packs both operands for a product this shallow and reached 25-40% of its 1024^3 rate on
// these layers, and the result then took one more pass to reach y. Here 8 rows x 32 columns of
// y stay in 16 registers (started at the bias) while k broadcast-FMA steps read A and B in place
// (both stay in L1: A is m x k <= m x 32 floats, a block of B k x 32); the sum over t runs in
// order 0..k-1 after the bias.
inline bool small_k_fits(long k) { return k <= 32; }
// R rows of y from row i: y[i + r, j0 .. j0 + 32) = bias (or 0) + sum over t of A[i + r, t] B[t, ..]
// (the columns beyond the masks m0, m1 neither read nor written).
template <int R>
inline void small_k_rows(int i, int k, const float* A, const float* bj, long ldb, const float* bias, __mmask16 m0,
                         __mmask16 m1, float* yj, long hw) {
  __m512 a0[R], a1[R];
  DTN_UNROLL_8
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_set1_ps(bias ? bias[i + r] : 0.f);
  for (int t = 0; t < k; ++t) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, bj + t * ldb), b1 = _mm512_maskz_loadu_ps(m1, bj + t * ldb + 16);
    const float* at = A + static_cast<long>(i) * k + t;
    DTN_UNROLL_8
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(at[r * k]);
      a0[r] = _mm512_fmadd_ps(a, b0, a0[r]);
      a1[r] = _mm512_fmadd_ps(a, b1, a1[r]);
    }
  }
  DTN_UNROLL_8
  for (int r = 0; r < R; ++r) {
    float* c = yj + (i + r) * hw;
    _mm512_mask_storeu_ps(c, m0, a0[r]);
    _mm512_mask_storeu_ps(c + 16, m1, a1[r]);
  }
}
inline void conv_small_k(int m, int cnt, long hw, int k, const float* A, const float* B, long ldb, const float* bias,
                         float* y) {
  for (int img = 0; img < cnt; ++img)
    for (long j0 = 0; j0 < hw; j0 += 32) {
      const int left = static_cast<int>(std::min<long>(32, hw - j0));
      const __mmask16 m0 = simd::lanes(0, std::min(16, left)), m1 = simd::lanes(0, std::max(0, left - 16));
      const float* bj = B + img * hw + j0;
      float* yj = y + static_cast<long>(img) * m * hw + j0;
      int i = 0;
      for (; i + 8 <= m; i += 8) small_k_rows<8>(i, k, A, bj, ldb, bias, m0, m1, yj, hw);
      for (; i < m; ++i) small_k_rows<1>(i, k, A, bj, ldb, bias, m0, m1, yj, hw);
    }
}
#endif

// Unfolds image x into columns (see im2col_generic); float with stride 1 or 2 and rows of at most
// 16 columns takes an AVX-512 path where the translation unit targets AVX-512F.
template <class T>
void im2col(const ConvGeom& g, const T* x, T* cols, long ld, long col0) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    if (im2col_rows_fit(g)) return im2col_simd_rows(g, x, cols, ld, col0);
    // (rows of 32: f.0 measured no faster than the generic loop's memmove)
    if ((g.stride == 1 || g.stride == 2) && g.w_out <= 16) return im2col_simd(g, x, cols, ld, col0);
  }
#endif
  im2col_generic(g, x, cols, ld, col0);
}
// Adds columns back into image dx (see col2im_add_generic); float rows that fit take the AVX-512
// path.
template <class T>
void col2im_add(const ConvGeom& g, const T* cols, long ld, long col0, T* dx) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value)
    if (col2im_simd_fits(g)) return col2im_add_simd(g, cols, ld, col0, dx);
#endif
  col2im_add_generic(g, cols, ld, col0, dx);
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
#if defined(__AVX512F__)
    if constexpr (std::is_same<T, float>::value)
      if (small_k_fits(ckk)) {
        conv_small_k(g.c_out, cnt, hw, static_cast<int>(ckk), w, cols, ld, bias, y + static_cast<long>(i0) * g.c_out * hw);
        continue;
      }
#endif
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
  // Thread t takes the contiguous chunk range [nchunks*t/T, nchunks*(t+1)/T) and accumulates
  // its filter gradient over it inside the GEMM (beta = 1): thread 0 straight into dw, the others
  // into one partial each, which are then added to dw in thread order. The split is static, so
  // the summation order, and the result, depend only on the thread count. (One partial per
  // chunk, as before, cost a zeroing, a GEMM store and a reduction pass over c_out*ckk floats
  // for every chunk: 32 per call for f.3 at batch 64.)
  static thread_local std::vector<T> partial;
  partial.resize(static_cast<std::size_t>(std::max(0, p.threads - 1) * wsize));
  T* part = partial.data();
  int used = 1;
#pragma omp parallel num_threads(p.threads)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
    used = nt;
    const int lo = static_cast<int>(static_cast<long>(nchunks) * tid / nt);
    const int hi = static_cast<int>(static_cast<long>(nchunks) * (tid + 1) / nt);
    T* acc = tid == 0 ? dw : part + (tid - 1) * wsize;
    T* cols = s.cols[static_cast<std::size_t>(tid)].data();
    T* dyc = s.out[static_cast<std::size_t>(tid)].data();
    for (int ci = lo; ci < hi; ++ci) {
      const int i0 = ci * chunk, cnt = std::min(chunk, g.n - i0);
      const long ld = cnt * hw;
      for (int i = 0; i < cnt; ++i) {
        im2col(g, x + (i0 + i) * in_img, cols, ld, i * hw);
        gather_output(g, dy, i0 + i, hw, ld, i * hw, dyc);
      }
      // acc [c_out, ckk] (+)= dy [c_out, cnt*hw] * cols^T [cnt*hw, ckk]; a partial starts at 0
      const T beta = (tid == 0 || ci > lo) ? T(1) : T(0);
      gemm<T>(false, true, g.c_out, static_cast<int>(ckk), static_cast<int>(ld), T(1), dyc, static_cast<int>(ld), cols,
              static_cast<int>(ld), beta, acc, static_cast<int>(ckk));
    }
    if (tid > 0 && lo == hi) std::fill(acc, acc + wsize, T(0));  // more threads than chunks
  }
  for (int t = 1; t < used; ++t) {
    const T* pc = part + (t - 1) * wsize;
    for (long j = 0; j < wsize; ++j) dw[j] += pc[j];
  }
  if (db) bias_grad(g, dy, db);
}

}  // namespace cpu
}  // namespace dtn
