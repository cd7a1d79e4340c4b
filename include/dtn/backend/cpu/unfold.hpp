#pragma once
// The unfold (im2col) and fold-back (col2im) of the CPU convolutions: the generic loops for any
// type and geometry, the polyphase unfold for strided kernels (any type: each input value copied
// once into phase planes from which every unfolded row is a contiguous run), and vectorised float
// versions for strides 1 and 2 (AVX-512 where the translation unit targets it, else AVX2). Every
// other version gives the generic loops' bits (tested): im2col is a copy, and col2im adds the
// same terms in the same order.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "../backend.hpp"
#include "sgemm.hpp"
#include "simd_avx2.hpp"

namespace dtn {
namespace cpu {

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

// The unfold and fold work on a chunk of cnt images x_i = x + i * in_img (each [c_in, h_in, w_in])
// whose columns sit side by side in cols (row stride ld): image i has columns
// [col0 + i * hw, col0 + (i + 1) * hw), hw = h_out * w_out. The loops run over the rows of cols
// outermost and the images innermost, so that cols is written (im2col) or read (col2im) row
// after row, sequentially: image by image, a chunk's cols (up to 8 MB for g.3) was touched in
// 16-64-byte pieces 2 KB apart, which measured at DRAM latency per cache line (f.9's unfold took
// longer than its GEMM).

// Calls fn(xc, r, shift, ki, row) for every row (c, ki, kj) of the unfolded matrix and every
// image i of the chunk: xc is input channel c of x_i, r the output columns whose input column
// lies inside the image for kernel column kj, shift = kj - pad, and row the first element of
// image i's columns in that row.
template <class T, class Fn>
inline void for_each_unfold_row(const ConvGeom& g, const T* x, int cnt, long in_img, T* cols, long ld, long col0,
                                Fn&& fn) {
  const long hw = static_cast<long>(g.h_out) * g.w_out;
  for (int c = 0; c < g.c_in; ++c) {
    const T* xc = x + static_cast<long>(c) * g.h_in * g.w_in;
    for (int ki = 0; ki < g.kh; ++ki)
      for (int kj = 0; kj < g.kw; ++kj) {
        const ColRange r(g, kj);
        T* row = cols + ((static_cast<long>(c) * g.kh + ki) * g.kw + kj) * ld + col0;
        for (int i = 0; i < cnt; ++i) fn(xc + i * in_img, r, kj - g.pad, ki, row + i * hw);
      }
  }
}

// Unfolds the chunk's images into cols. The in-image span of each output row is computed once per
// kernel column, so the inner loop is a branch-free copy (contiguous for stride 1).
template <class T>
void im2col_generic(const ConvGeom& g, const T* x, int cnt, long in_img, T* cols, long ld, long col0) {
  for_each_unfold_row(g, x, cnt, in_img, cols, ld, col0, [&](const T* xc, const ColRange& r, int shift, int ki, T* row) {
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

// Adds the chunk's columns of cols back into its images dx_i = dx + i * in_img. Every dx element
// receives its terms in the order (ki, kj), the order the vectorised versions keep.
template <class T>
void col2im_add_generic(const ConvGeom& g, const T* cols, long ld, long col0, int cnt, long in_img, T* dx) {
  const long hw = static_cast<long>(g.h_out) * g.w_out;
  for (int c = 0; c < g.c_in; ++c)
    for (int ki = 0; ki < g.kh; ++ki)
      for (int kj = 0; kj < g.kw; ++kj) {
        const ColRange r(g, kj);
        if (r.hi <= r.lo) continue;
        const int shift = kj - g.pad, span = r.hi - r.lo;
        const T* row = cols + ((static_cast<long>(c) * g.kh + ki) * g.kw + kj) * ld + col0;
        for (int i = 0; i < cnt; ++i) {
          T* dxc = dx + i * in_img + static_cast<long>(c) * g.h_in * g.w_in;
          for (int oh = 0; oh < g.h_out; ++oh) {
            const int ih = oh * g.stride - g.pad + ki;
            if (ih < 0 || ih >= g.h_in) continue;
            const T* src = row + i * hw + static_cast<long>(oh) * g.w_out + r.lo;
            T* dr = dxc + static_cast<long>(ih) * g.w_in + (r.lo * g.stride + shift);
            if (g.stride == 1)
              for (int k = 0; k < span; ++k) dr[k] += src[k];
            else
              for (int k = 0; k < span; ++k) dr[k * g.stride] += src[k];
          }
        }
      }
}

// For the vectorised col2im: calls fn(dr, srow) for every (c, ki), image i of the chunk and output
// row oh whose input row ih = oh * stride - pad + ki lies inside the image: dr is row ih of
// channel c of dx_i, srow the source row (c, ki, kj = 0) of cols at image i's output row oh (row
// (c, ki, kj) is srow + kj * ld). For a fixed (c, ki) each ih comes from one oh, so a dx element
// that fn updates with its kw terms in kj order gets all its terms in the generic order (ki, kj).
template <class Fn>
inline void for_each_fold_row(const ConvGeom& g, const float* cols, long ld, long col0, int cnt, long in_img, float* dx,
                              Fn&& fn) {
  const long hw = static_cast<long>(g.h_out) * g.w_out;
  for (int c = 0; c < g.c_in; ++c)
    for (int ki = 0; ki < g.kh; ++ki) {
      const float* rows = cols + (static_cast<long>(c) * g.kh + ki) * g.kw * ld + col0;
      for (int i = 0; i < cnt; ++i) {
        float* dxc = dx + i * in_img + static_cast<long>(c) * g.h_in * g.w_in;
        for (int oh = 0; oh < g.h_out; ++oh) {
          const int ih = oh * g.stride - g.pad + ki;
          if (ih < 0 || ih >= g.h_in) continue;
          fn(dxc + static_cast<long>(ih) * g.w_in, rows + i * hw + static_cast<long>(oh) * g.w_out);
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
// DTN_UNROLL_8: full unrolling of the 8-row register blocks of conv.hpp's small-k kernel (so the
// accumulators stay in registers). Only for GCC and Clang compiling host code: nvcc's front end,
// which also reads this header in .cu files, rejects the pragma (an error under DTN_WERROR).
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
inline void im2col_simd_rows(const ConvGeom& g, const float* x, int cnt, long in_img, float* cols, long ld, long col0) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const int w = g.w_out, rows = 16 / w;
  for_each_unfold_row(g, x, cnt, in_img, cols, ld, col0, [&](const float* xc, const ColRange& r, int shift, int ki, float* row) {
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

// Rows of at most 16 output columns (one vector each): the masks depend on the kernel column
// only, so they are computed once per unfolded row (recomputed per output row, they made D.0's
// unfold 12% of its forward pass).
inline void im2col_simd(const ConvGeom& g, const float* x, int cnt, long in_img, float* cols, long ld, long col0) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __mmask16 store = simd::lanes(0, g.w_out);
  for_each_unfold_row(g, x, cnt, in_img, cols, ld, col0, [&](const float* xc, const ColRange& r, int shift, int ki, float* row) {
    __mmask16 m0 = simd::lanes(r.lo, r.hi), m1 = 0;
    if (g.stride != 1) simd::even_lanes(r.lo, r.hi, m0, m1);
    for (int oh = 0; oh < g.h_out; ++oh) {
      const int ih = oh * g.stride - g.pad + ki;
      float* out = row + static_cast<long>(oh) * g.w_out;
      if (ih < 0 || ih >= g.h_in) {
        _mm512_mask_storeu_ps(out, store, _mm512_setzero_ps());
        continue;
      }
      const float* xr = xc + static_cast<long>(ih) * g.w_in + shift;  // input under ow = 0
      const __m512 v = g.stride == 1 ? _mm512_maskz_loadu_ps(m0, xr)
                                     : _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m0, xr), even,
                                                              _mm512_maskz_loadu_ps(m1, xr + 16));
      _mm512_mask_storeu_ps(out, store, v);
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

inline void col2im_add_simd(const ConvGeom& g, const float* cols, long ld, long col0, int cnt, long in_img, float* dx) {
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
  for_each_fold_row(g, cols, ld, col0, cnt, in_img, dx, [&](float* dr, const float* srow) {
    __m512 d0 = _mm512_maskz_loadu_ps(row0, dr), d1 = _mm512_maskz_loadu_ps(row1, dr + 16);
    for (int kj = 0; kj < g.kw; ++kj) {
      const __m512 v = _mm512_maskz_loadu_ps(src, srow + kj * ld);
      d0 = _mm512_add_ps(d0, _mm512_maskz_permutexvar_ps(take[kj][0], idx[kj][0], v));
      d1 = _mm512_add_ps(d1, _mm512_maskz_permutexvar_ps(take[kj][1], idx[kj][1], v));
    }
    _mm512_mask_storeu_ps(dr, row0, d0);
    if (row1) _mm512_mask_storeu_ps(dr + 16, row1, d1);
  });
}

#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
// AVX2 versions (targets without AVX-512: most laptops, AMD Zen 1-3) for float and stride 1, with
// 8-lane vectors and AVX2's masked loads (lanes outside the mask are neither read nor faulted).
// Same bits as the generic loops. (Helpers: simd_avx2.hpp.) Measured on an AMD EPYC (Zen 3)
// against the generic loops, per chunk of the digits layers: the unfold of 4- and 8-column rows
// 1.1-1.6x faster (f.6, f.9), the fold of 8- and 16-column rows 1.1-1.7x (f.3, f.6). Stride-2
// versions (two loads and a lane shuffle per vector) and the unfold of 16-column rows measured
// slower than the generic loops there, and 4-column dx rows (f.9's fold) too: those take the
// generic loops.

// The unfold of output rows of w_out = 1, 2, 4 or 8 columns: R = 8 / w_out rows share one vector
// (as in im2col_simd_rows: row rr is merged into lanes [rr * w_out, (rr + 1) * w_out) by a masked
// load from an address shifted by rr * w_out, whose other lanes load as 0), one store per group.
inline bool im2col_avx2_fits(const ConvGeom& g) {
  return g.stride == 1 && (g.w_out == 1 || g.w_out == 2 || g.w_out == 4 || g.w_out == 8);
}
inline void im2col_avx2(const ConvGeom& g, const float* x, int cnt, long in_img, float* cols, long ld, long col0) {
  const int w = g.w_out, rows = 8 / w;
  for_each_unfold_row(g, x, cnt, in_img, cols, ld, col0, [&](const float* xc, const ColRange& r, int shift, int ki, float* row) {
    for (int oh0 = 0; oh0 < g.h_out; oh0 += rows) {
      const int n = std::min(rows, g.h_out - oh0);
      __m256 v = _mm256_setzero_ps();
      for (int rr = 0; rr < n; ++rr) {
        const int ih = oh0 + rr - g.pad + ki;
        if (ih < 0 || ih >= g.h_in || r.hi <= r.lo) continue;
        const float* xr = xc + static_cast<long>(ih) * g.w_in + shift;  // input under ow = 0
        v = _mm256_or_ps(v, _mm256_maskload_ps(xr - rr * w, avx2::mask8(avx2::bits(rr * w + r.lo, rr * w + r.hi))));
      }
      avx2::store_first(row + static_cast<long>(oh0) * w, n * w, v);
    }
  });
}

// The fold of rows of 8 to 32 input columns, as col2im_add_simd does it: each dx row (up to 4
// vectors) is loaded once, the kw source rows that land on it are added in registers and the row
// is stored once. With stride 1, lane l of dx block b (column iw = 8b + l) takes source column
// iw - (kj - pad) when that lies inside the row: one masked load from the source row at offset
// 8b - (kj - pad) per kj and block, and a blend that puts -0 in the lanes that take nothing
// (x + -0 == x for every x, -0 included, so those lanes keep their bits).
inline bool col2im_avx2_fits(const ConvGeom& g) { return g.stride == 1 && g.w_in >= 8 && g.w_in <= 32 && g.kw <= 8; }

inline void col2im_add_avx2(const ConvGeom& g, const float* cols, long ld, long col0, int cnt, long in_img, float* dx) {
  struct Tap {
    __m256i take;
    int off;  // source column of lane 0
  };
  Tap tap[8][4];
  const int blocks = (g.w_in + 7) / 8;
  for (int kj = 0; kj < g.kw; ++kj)
    for (int b = 0; b < blocks; ++b) {
      const int off = 8 * b - (kj - g.pad);  // lane l reads source column off + l
      tap[kj][b].off = off;
      tap[kj][b].take = avx2::mask8(avx2::bits(-off, std::min(g.w_out - off, g.w_in - 8 * b)));
    }
  const __m256 neg_zero = _mm256_set1_ps(-0.f);
  for_each_fold_row(g, cols, ld, col0, cnt, in_img, dx, [&](float* dr, const float* srow) {
    for (int b = 0; b < blocks; ++b) {
      const int n = std::min(8, g.w_in - 8 * b);
      __m256 d = n == 8 ? _mm256_loadu_ps(dr + 8 * b) : _mm256_maskload_ps(dr + 8 * b, avx2::mask8(avx2::bits(0, n)));
      for (int kj = 0; kj < g.kw; ++kj) {
        const Tap& tp = tap[kj][b];
        const __m256 v = _mm256_maskload_ps(srow + kj * ld + tp.off, tp.take);
        d = _mm256_add_ps(d, _mm256_blendv_ps(neg_zero, v, _mm256_castsi256_ps(tp.take)));
      }
      avx2::store_first(dr + 8 * b, n, d);
    }
  });
}
#endif

#if defined(DTN_OWN_SGEMM)
// The unfolded chunk as the B operand of dtn's packed GEMM (sgemm.hpp), packed straight
// from the images: no column matrix in memory. trans = false: B is the column matrix itself
// [c_in*kh*kw, cnt*hw] (the forward product w * cols); trans = true: its transpose (the filter
// gradient's dy * cols^T). Each 8-lane block of a packed panel is one AVX2 gather whose lanes
// come from per-panel index tables (image, output pixel or kernel tap of each lane) plus the
// current row's offset, masked where the tap falls in the zero padding or past the matrix; the
// values are the unfold's, so the product is the one the explicit column matrix gives, and the
// column data only ever exists as KC x NC packed blocks.
// Where it is used (unfold_packable): on input planes of at most 64 pixels (8x8: f.6, f.9, D.6,
// and g.3 run backwards), where the explicit unfold writes 1-8 MB per chunk in rows of 4-8
// floats and the gathers stay in cache; there the conv forward and filter passes measured 5-30%
// faster than im2col + GEMM on the Zen 3 host (single thread, alternated, best of 9). On 16x16
// planes (f.3, D.3) the explicit unfold, whose rows are longer copies, measured 4-25% faster
// there, but on an Intel Xeon (AVX-512, 2026-12-02, DTN step at batch 64 on 2 threads,
// alternated, medians of 4 rounds) the gathers won: 537 against 558 ms, and again 536 against
// 556; 32x32 planes as well gave no further change (535 against 536). So the limit is 16x16 on
// Intel CPUs and 8x8 on others (packed_unfold_max_plane).
// Indices are 32-bit: a chunk must have fewer than 2^31 input elements.
inline bool cpu_is_intel() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  // cpuid leaf 0: the vendor string "GenuineIntel" in ebx, edx, ecx
  return __get_cpuid(0, &a, &b, &c, &d) && b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu;
}
inline long packed_unfold_max_plane() {
  static const long pixels = cpu_is_intel() ? 256 : 64;
  return pixels;
}
inline bool unfold_packable(const ConvGeom& g, int cnt, long in_img) {
  return static_cast<long>(g.h_in) * g.w_in <= packed_unfold_max_plane() &&
         static_cast<double>(cnt) * in_img < 2147483647.0;
}

struct UnfoldB {
  ConvGeom g;
  const float* x;  // the chunk's first image
  long in_img;
  bool trans;

  // 8 lanes of a packed row: the gather of x[base + off] where row + col offsets stay inside the
  // image (ih = ih0 + ki in [0, h_in), iw = iw0 + kj in [0, w_in)), else 0.
  __m256 lanes(__m256i base, __m256i ih, __m256i iw) const {
    const __m256i m1 = _mm256_set1_epi32(-1);
    const __m256i ok = _mm256_and_si256(
        _mm256_and_si256(_mm256_cmpgt_epi32(ih, m1), _mm256_cmpgt_epi32(_mm256_set1_epi32(g.h_in), ih)),
        _mm256_and_si256(_mm256_cmpgt_epi32(iw, m1), _mm256_cmpgt_epi32(_mm256_set1_epi32(g.w_in), iw)));
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, base, _mm256_castsi256_ps(ok), 4);
  }

  void pack(int p0, int j0, int kc, int nc, float* dst) const {
    constexpr int NR = sgemm::NR;
    static_assert(NR == 16, "two 8-lane gathers per packed row");
    const int taps = g.kh * g.kw, hw = g.h_out * g.w_out, plane = g.h_in * g.w_in;
    constexpr int kOut = -(1 << 29);  // a row offset that no in-image test passes
    for (int jr = 0; jr < nc; jr += NR) {
      alignas(32) int t_base[NR], t_ih[NR], t_iw[NR];  // per lane of the panel
      for (int l = 0; l < NR; ++l) {
        const int j = j0 + jr + l;
        if (jr + l >= nc) {
          t_base[l] = 0, t_ih[l] = kOut, t_iw[l] = 0;
        } else if (!trans) {  // lane = output column j: image, output pixel
          const int img = j / hw, pos = j % hw, oh = pos / g.w_out, ow = pos % g.w_out;
          t_ih[l] = oh * g.stride - g.pad;
          t_iw[l] = ow * g.stride - g.pad;
          t_base[l] = static_cast<int>(img * in_img) + t_ih[l] * g.w_in + t_iw[l];
        } else {  // lane = unfold row j: channel, kernel tap
          const int c = j / taps, ki = j % taps / g.kw, kj = j % g.kw;
          t_ih[l] = ki;
          t_iw[l] = kj;
          t_base[l] = c * plane + ki * g.w_in + kj;
        }
      }
      const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(t_base));
      const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(t_base + 8));
      const __m256i h0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(t_ih));
      const __m256i h1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(t_ih + 8));
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(t_iw));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(t_iw + 8));
      // Packed row q: the lanes' tables plus the row's own offset, row and column shift.
      const auto row = [&](int q, int off, int dh, int dw) {
        const __m256i o = _mm256_set1_epi32(off), h = _mm256_set1_epi32(dh), w = _mm256_set1_epi32(dw);
        _mm256_store_ps(dst + q * NR, lanes(_mm256_add_epi32(b0, o), _mm256_add_epi32(h0, h), _mm256_add_epi32(w0, w)));
        _mm256_store_ps(dst + q * NR + 8, lanes(_mm256_add_epi32(b1, o), _mm256_add_epi32(h1, h), _mm256_add_epi32(w1, w)));
      };
      if (!trans) {  // row p = (c, ki, kj): the same offset for every lane
        int c = p0 / taps, ki = p0 % taps / g.kw, kj = p0 % g.kw;
        for (int q = 0; q < kc; ++q) {
          row(q, c * plane + ki * g.w_in + kj, ki, kj);
          if (++kj == g.kw) {
            kj = 0;
            if (++ki == g.kh) ki = 0, ++c;
          }
        }
      } else {  // row p = output column (image, oh, ow): the same pixel for every lane
        int img = p0 / hw, oh = p0 % hw / g.w_out, ow = p0 % g.w_out;
        for (int q = 0; q < kc; ++q) {
          const int ih0 = oh * g.stride - g.pad, iw0 = ow * g.stride - g.pad;
          row(q, static_cast<int>(img * in_img) + ih0 * g.w_in + iw0, ih0, iw0);
          if (++ow == g.w_out) {
            ow = 0;
            if (++oh == g.h_out) oh = 0, ++img;
          }
        }
      }
      dst += static_cast<long>(NR) * kc;
    }
  }
};
#endif

// The polyphase unfold, for strides s >= 2 whose kernel reuses each input value (kh * kw at least
// twice the phases it uses). With xp the input plane padded by `pad` zeros, the unfolded value of
// tap (ki, kj) at output (oh, ow) is xp[oh * s + ki][ow * s + kj] = P_(ki%s, kj%s)[oh + ki/s][ow + kj/s],
// where the phase plane P_(a, b)[u][v] = xp[u * s + a][v * s + b] (u < U = h_out + (kh - 1) / s,
// v < V = w_out + (kw - 1) / s). Each input value is copied into its phase plane once per image and
// channel, and every unfolded output row is then a contiguous run of w_out values of a phase row: a
// plain copy, with no per-row bounds or masks. The stride-2 unfold gathered every value again for
// each of the kh * kw taps (masked loads and a lane permute per output vector): on the AMD Zen 5
// host (2026-12-06, one thread), g.6's backward unfold (4x4, 16x16 planes) took 0.49 ms per chunk
// of 8 images that way and 0.09 ms from the phase planes, D.3's (3x3) 0.28 and 0.07 ms.
// The phase planes of a group of images of one channel live in a buffer on the stack (no
// allocation inside the convolutions' parallel regions); an image's planes must fit it.
struct PhaseUnfold {
  static constexpr std::size_t buffer_bytes = 16384;
  int s, pa, pb, U, V;
  long pitch, plane, per_img;  // floats between phase rows, per phase plane, per image and channel
  PhaseUnfold(const ConvGeom& g, long row_pitch)
      : s(g.stride),
        pa(std::min(g.stride, g.kh)),
        pb(std::min(g.stride, g.kw)),
        U(g.h_out + (g.kh - 1) / g.stride),
        V(g.w_out + (g.kw - 1) / g.stride),
        pitch(row_pitch),
        plane(static_cast<long>(U) * row_pitch),
        per_img(static_cast<long>(pa) * pb * plane) {}
  // The first phase value of tap (ki, kj): its output row oh starts oh * pitch further on.
  long tap_offset(int ki, int kj) const {
    return ((ki % s) * pb + kj % s) * plane + static_cast<long>(ki / s) * pitch + kj / s;
  }
};
#if defined(__AVX512F__)
// Stride 2 on rows of at most 16 phase values (V <= 16) from input rows of at most 32 - pad
// columns: a padded input row is one pair of masked loads, and its two phases (even and odd lanes)
// are one permute and one 16-lane store each; phase rows are 16 floats apart (lanes past V hold
// values no tap reads).
inline bool phase_rows_simd_fit(const ConvGeom& g) {
  return g.stride == 2 && g.w_out + (g.kw - 1) / 2 <= 16 && g.pad + g.w_in <= 32;
}
inline void build_phases_simd(const ConvGeom& g, const PhaseUnfold& p, const float* xc, float* buf) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  // lane L of the padded row (L in [0, 32)) is input column L - pad
  const __mmask16 m0 = simd::lanes(g.pad, std::min(16, g.pad + g.w_in));
  const __mmask16 m1 = simd::lanes(std::max(0, g.pad - 16), g.pad + g.w_in - 16);
  for (int a = 0; a < p.pa; ++a)
    for (int u = 0; u < p.U; ++u) {
      const int ih = 2 * u + a - g.pad;
      float* o = buf + a * p.pb * p.plane + static_cast<long>(u) * p.pitch;
      __m512 e = _mm512_setzero_ps(), d = _mm512_setzero_ps();
      if (ih >= 0 && ih < g.h_in) {
        const float* xr = xc + static_cast<long>(ih) * g.w_in - g.pad;  // padded lane 0
        const __m512 lo = _mm512_maskz_loadu_ps(m0, xr), hi = _mm512_maskz_loadu_ps(m1, xr + 16);
        e = _mm512_permutex2var_ps(lo, even, hi);
        d = _mm512_permutex2var_ps(lo, odd, hi);
      }
      _mm512_storeu_ps(o, e);
      if (p.pb > 1) _mm512_storeu_ps(o + p.plane, d);
    }
}
#else
inline bool phase_rows_simd_fit(const ConvGeom&) { return false; }
#endif
template <class T>
void build_phases(const ConvGeom& g, const PhaseUnfold& p, const T* xc, T* buf) {
  for (int a = 0; a < p.pa; ++a)
    for (int b = 0; b < p.pb; ++b) {
      T* ph = buf + (a * p.pb + b) * p.plane;
      for (int u = 0; u < p.U; ++u) {
        const int ih = u * p.s + a - g.pad;
        T* o = ph + static_cast<long>(u) * p.pitch;
        if (ih < 0 || ih >= g.h_in) {
          std::fill(o, o + p.V, T(0));
          continue;
        }
        const T* xr = xc + static_cast<long>(ih) * g.w_in;
        for (int v = 0; v < p.V; ++v) {
          const int iw = v * p.s + b - g.pad;
          o[v] = iw >= 0 && iw < g.w_in ? xr[iw] : T(0);
        }
      }
    }
}
// rows x W values from src (rows `pitch` apart) to out (contiguous); W fixed for the usual widths.
template <int W, class T>
inline void copy_phase_rows(const T* src, long pitch, T* out, int rows) {
  for (int r = 0; r < rows; ++r) std::copy_n(src + r * pitch, W, out + static_cast<long>(r) * W);
}
template <class T>
inline void copy_phase_rows(const T* src, long pitch, T* out, int rows, int w) {
  switch (w) {
    case 4: return copy_phase_rows<4>(src, pitch, out, rows);
    case 8: return copy_phase_rows<8>(src, pitch, out, rows);
    case 16: return copy_phase_rows<16>(src, pitch, out, rows);
    default:
      for (int r = 0; r < rows; ++r) std::copy_n(src + r * pitch, w, out + static_cast<long>(r) * w);
  }
}
template <class T>
long phase_pitch(const ConvGeom& g) {
  if constexpr (std::is_same<T, float>::value)
    if (phase_rows_simd_fit(g)) return 16;
  return g.w_out + (g.kw - 1) / g.stride;
}
// Whether im2col_phases can unfold g: a stride of 2 or more, and an image's phase planes of one
// channel within the buffer.
template <class T>
bool im2col_phases_fit(const ConvGeom& g) {
  if (g.stride < 2) return false;
  const PhaseUnfold p(g, phase_pitch<T>(g));
  return p.per_img * static_cast<long>(sizeof(T)) <= static_cast<long>(PhaseUnfold::buffer_bytes);
}
// Whether im2col takes it: where it fits and the taps use each phase value at least twice on
// average (3x3 and 4x4 kernels at stride 2; a 1x1 or 2x2 kernel at stride 2 would copy every value
// once more than the direct unfold does).
template <class T>
bool im2col_phases_pays(const ConvGeom& g) {
  if (!im2col_phases_fit<T>(g)) return false;
#if defined(__AVX512F__)
  // rows of 9-16 output columns are one vector each in im2col_simd, as fast or faster (D.0's
  // unfold, 16 columns of one channel: 0.04 ms per chunk there, 0.07 ms from phase planes)
  if (std::is_same<T, float>::value && g.w_out > 8) return false;
#endif
  const PhaseUnfold p(g, phase_pitch<T>(g));
  return static_cast<long>(g.kh) * g.kw >= 2L * p.pa * p.pb;
}
// The chunk's unfold from phase planes (g must satisfy im2col_phases_fit): channel by channel, the
// planes of as many images as the buffer holds, then each unfolded row (c, ki, kj) written for
// those images in order, as the other unfolds write cols. The same values as im2col_generic.
template <class T>
void im2col_phases(const ConvGeom& g, const T* x, int cnt, long in_img, T* cols, long ld, long col0) {
  const PhaseUnfold p(g, phase_pitch<T>(g));
  alignas(64) T buf[PhaseUnfold::buffer_bytes / sizeof(T)];
  const int group = static_cast<int>(static_cast<long>(PhaseUnfold::buffer_bytes / sizeof(T)) / p.per_img);
  const long hw = static_cast<long>(g.h_out) * g.w_out, cplane = static_cast<long>(g.h_in) * g.w_in;
  [[maybe_unused]] const bool simd = std::is_same<T, float>::value && phase_rows_simd_fit(g);  // pitch 16 then
  for (int c = 0; c < g.c_in; ++c)
    for (int i0 = 0; i0 < cnt; i0 += group) {
      const int n = std::min(group, cnt - i0);
      for (int i = 0; i < n; ++i) {
        const T* xc = x + (i0 + i) * in_img + c * cplane;
#if defined(__AVX512F__)
        if constexpr (std::is_same<T, float>::value)
          if (simd) {
            build_phases_simd(g, p, xc, buf + i * p.per_img);
            continue;
          }
#endif
        build_phases(g, p, xc, buf + i * p.per_img);
      }
      for (int ki = 0; ki < g.kh; ++ki)
        for (int kj = 0; kj < g.kw; ++kj) {
          T* row = cols + ((static_cast<long>(c) * g.kh + ki) * g.kw + kj) * ld + col0 + i0 * hw;
          const T* src = buf + p.tap_offset(ki, kj);
          for (int i = 0; i < n; ++i) copy_phase_rows(src + i * p.per_img, p.pitch, row + i * hw, g.h_out, g.w_out);
        }
    }
}

// Unfolds the chunk's images into cols (see im2col_generic): strided kernels that reuse their input
// from phase planes (im2col_phases_pays), float rows that fit on the AVX-512 or AVX2 path where the
// translation unit targets one.
template <class T>
void im2col(const ConvGeom& g, const T* x, int cnt, long in_img, T* cols, long ld, long col0) {
  if (im2col_phases_pays<T>(g)) return im2col_phases(g, x, cnt, in_img, cols, ld, col0);
  if constexpr (std::is_same<T, float>::value) {
#if defined(__AVX512F__)
    if (im2col_rows_fit(g)) return im2col_simd_rows(g, x, cnt, in_img, cols, ld, col0);
    // (rows of 32: f.0 measured no faster than the generic loop's memmove)
    if ((g.stride == 1 || g.stride == 2) && g.w_out <= 16) return im2col_simd(g, x, cnt, in_img, cols, ld, col0);
#elif defined(__AVX2__)
    if (im2col_avx2_fits(g)) return im2col_avx2(g, x, cnt, in_img, cols, ld, col0);
#endif
  }
  im2col_generic(g, x, cnt, in_img, cols, ld, col0);
}
// Adds the chunk's columns back into its images (see col2im_add_generic); float rows that fit take
// the AVX-512 or AVX2 path.
template <class T>
void col2im_add(const ConvGeom& g, const T* cols, long ld, long col0, int cnt, long in_img, T* dx) {
  if constexpr (std::is_same<T, float>::value) {
#if defined(__AVX512F__)
    if (col2im_simd_fits(g)) return col2im_add_simd(g, cols, ld, col0, cnt, in_img, dx);
#elif defined(__AVX2__)
    if (col2im_avx2_fits(g)) return col2im_add_avx2(g, cols, ld, col0, cnt, in_img, dx);
#endif
  }
  col2im_add_generic(g, cols, ld, col0, cnt, in_img, dx);
}

}  // namespace cpu
}  // namespace dtn
