#pragma once
// Winograd F(2x2, 2x2) for the CPU's 4x4 stride-2 convolutions with padding 1 that halve the
// plane (g's transposed convolutions g.3 and g.6 run their forward as this convolution's data
// pass, their input gradient as its forward and their weight gradient as its filter pass):
// forward, backward-data and backward-filter (the last at the end of this file).
//
// A stride-2 convolution with a 4x4 kernel is four stride-1 convolutions with 2x2 kernels, one
// per parity (a, b) of the large plane's rows and columns (the polyphase decomposition):
//   forward   y[k][i][j] = sum over a, b, c, r, s of P_ab[c][i - a + r][j - b + s] w[k][c][2r+1-a][2s+1-b]
//             with P_ab[c][u][v] = x[c][2u + a][2v + b] (zero outside the plane);
//   data      dx[c][2u + a][2v + b] = sum over k, r, s of dy[k][u + a - 1 + r][v + b - 1 + s]
//             w[k][c][3 - 2r - a][3 - 2s - b].
// Each of those 2x2 correlations runs as F(2x2, 2x2) on 2x2 output tiles of the small plane,
// with transforms whose coefficients are all 0 and +-1 (exact, no halvings):
//   V = B^T d B (3x3 input window d),  U = G g G^T (2x2 filter g -> 3x3),  Y = A^T M A (2x2),
//   B^T d = (d0 - d1, d1, d2 - d1),  G g = (g0, g0 + g1, g1),  A^T m = (m0 + m1, m1 + m2),
// that is 9 multiply-adds per 4 outputs, channel and parity where the direct sum (im2col + GEMM)
// does 16: 1.78x fewer. The products over the channels are GEMMs, one per position xi of the 3x3
// transformed tile:
//   forward: the four parities' sums go to the same outputs, so they are one GEMM per position
//            with the parities stacked along the depth: M_xi [c_out, T] = U_xi [c_out, 4 c_in]
//            V_xi [4 c_in, T] (9 GEMMs);
//   data:    each parity writes its own outputs: M_ab,xi [c_in, T] = U_ab,xi [c_in, c_out]
//            V_ab,xi [c_out, T] (36 GEMMs, a parity at a time);
//   filter:  dy's 2x2 tiles are the filters and the forward's windows the inputs; the products
//            are summed over the tiles: M_xi [c_out, 4 c_in] += U_xi [c_out, T] V_xi^T (9 GEMMs
//            per chunk of images), and the output transform gives each filter's 4 x 4 taps.
// The transforms are O(1) per value against the GEMMs' O(channels), as in winograd.hpp (whose
// layout, chunking and scratch this follows: columns t = image * tiles + ty * tw + tx).
//
// Rounding: the same sums of products in another order and grouping; each transformed input is a
// sum of at most 4 inputs with coefficients +-1, each transformed filter value a sum of at most 4
// taps, each output a sum of 4 of the products' sums. Deterministic, and with dtn's GEMM
// independent of the thread count like the im2col path's forward and data passes: each chunk of
// images is computed by one thread in a fixed order (the filter pass: chunks in order, their
// products split by columns); see winograd.hpp for Eigen's GEMM.
//
// An earlier attempt at the data pass alone (2026-12-03, Intel Xeon host) transformed per tile
// with the parities' filters and sums in another arrangement and measured 1.00-1.14x there; this
// one is measured in benchmarks/RESULTS.md (2026-12-06, AMD EPYC Zen 4). D's 3x3 stride-2
// convolutions have their own version with the parities stacked (winograd_s2k3.hpp).
#include "parallel.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstddef>
#include <vector>

#include "../../core/memory.hpp"
#include "../backend.hpp"
#include "gemm.hpp"
#include "winograd.hpp"

namespace dtn {
namespace cpu {
namespace winograd_s2 {

// The geometry both stride-2 paths take (this one's 4x4 kernels, winograd_s2k3's 3x3): stride 2,
// padding 1, the input plane exactly twice the output plane, even output sides (2x2 tiles) and
// at least 4 channels each way.
inline bool halving_tiles(const ConvGeom& g) {
  return g.stride == 2 && g.pad == 1 && g.h_in == 2 * g.h_out && g.w_in == 2 * g.w_out && g.h_out % 2 == 0 &&
         g.w_out % 2 == 0 && g.h_out >= 2 && g.w_out >= 2 && g.c_in >= 4 && g.c_out >= 4;
}

// The convolutions this path computes: 4x4 kernel and halving_tiles (g.9's single output channel
// stays on im2col + GEMM). Switched with the 3x3 path (winograd::set_enabled).
inline bool fits(const ConvGeom& g) { return g.kh == 4 && g.kw == 4 && halving_tiles(g); }

// The 9 positions' matrices of U, V and M sit position_stride(floats) apart (winograd.hpp).
using winograd::position_stride;

// The 3x3 transformed filter of the 2x2 filter g[r][s] = w[k][c][ky(r)][kx(s)] into
// u[xi * us] (xi = 3 * row + column).
template <class T>
inline void transform_filter_2x2(const T g[2][2], T* u, long us) {
  const T t[3][2] = {{g[0][0], g[0][1]}, {g[0][0] + g[1][0], g[0][1] + g[1][1]}, {g[1][0], g[1][1]}};  // G g
  for (int i = 0; i < 3; ++i) {  // (G g) G^T
    u[(i * 3 + 0) * us] = t[i][0];
    u[(i * 3 + 1) * us] = t[i][0] + t[i][1];
    u[(i * 3 + 2) * us] = t[i][1];
  }
}

// The forward's U_xi [c_out, 4 c_in] (column ab * c_in + c), from w [c_out][c_in][4][4].
template <class T>
void transform_filter_forward(const T* w, int c_out, int c_in, T* u) {
  const long cols = 4L * c_in, us = position_stride(static_cast<long>(c_out) * cols);
  DTN_OMP(parallel for if (!omp_in_parallel() && static_cast<long>(c_out) * c_in > 4096))
  for (int k = 0; k < c_out; ++k)
    for (int ab = 0; ab < 4; ++ab) {
      const int a = ab / 2, b = ab % 2;
      for (int c = 0; c < c_in; ++c) {
        const T* f = w + (static_cast<long>(k) * c_in + c) * 16;
        T g[2][2];
        for (int r = 0; r < 2; ++r)
          for (int s = 0; s < 2; ++s) g[r][s] = f[(2 * r + 1 - a) * 4 + (2 * s + 1 - b)];
        transform_filter_2x2(g, u + k * cols + ab * c_in + c, us);
      }
    }
}

// The data pass's U_ab,xi for parity ab, stored [c_out, c_in] (the filter's own order; the GEMM
// reads it transposed).
template <class T>
void transform_filter_data(const T* w, int c_out, int c_in, int ab, T* u) {
  const long plane = static_cast<long>(c_out) * c_in, us = position_stride(plane);
  const int a = ab / 2, b = ab % 2;
  DTN_OMP(parallel for if (!omp_in_parallel() && plane > 4096))
  for (long kc = 0; kc < plane; ++kc) {
    const T* f = w + kc * 16;
    T g[2][2];
    for (int r = 0; r < 2; ++r)
      for (int s = 0; s < 2; ++s) g[r][s] = f[(3 - 2 * r - a) * 4 + (3 - 2 * s - b)];
    transform_filter_2x2(g, u + kc, us);
  }
}

// The input transform of one h x w plane, held with a zero border of one value in pad
// ((h + 2) x (w + 2)), for windows that start oy, ox in {-1, 0} off each tile's first output:
// position xi's values of the plane's th x tw tiles go to v + xi * vstride + t.
template <class T>
void transform_input(const T* pad, int h, int w, int oy, int ox, T* v, long vstride) {
  const int pw = w + 2, th = h / 2, tw = w / 2;
  for (int ty = 0; ty < th; ++ty) {
    const T* r0 = pad + (2 * ty + oy + 1) * pw + ox + 1;
    const T* r1 = r0 + pw;
    const T* r2 = r1 + pw;
    T* vt = v + static_cast<long>(ty) * tw;
    for (int tx = 0; tx < tw; ++tx) {
      const int c = 2 * tx;
      T s[3][3];  // B^T d: rows
      for (int j = 0; j < 3; ++j) {
        s[0][j] = r0[c + j] - r1[c + j];
        s[1][j] = r1[c + j];
        s[2][j] = r2[c + j] - r1[c + j];
      }
      for (int i = 0; i < 3; ++i) {  // (B^T d) B: columns
        T* vi = vt + (i * 3) * vstride + tx;
        vi[0] = s[i][0] - s[i][1];
        vi[vstride] = s[i][1];
        vi[2 * vstride] = s[i][2] - s[i][1];
      }
    }
  }
}

// The parity plane P_ab[u][v] = xp[2u + a][2v + b] of xp [2h, 2w] into the interior of the
// (h + 2) x (w + 2) plane pad (its border left as it is: zero).
template <class T>
void copy_parity_plane(const T* xp, int h, int w, int a, int b, T* pad) {
  const int pw = w + 2;
  for (int u = 0; u < h; ++u) {
    const T* src = xp + static_cast<long>(2 * u + a) * (2 * w) + b;
    T* dst = pad + (u + 1) * pw + 1;
    for (int q = 0; q < w; ++q) dst[q] = src[2 * q];
  }
}

// The input transforms of the four parity planes P_ab of one input plane xp [2h, 2w] (2h x 2w,
// halved to h x w per parity), windows starting -a, -b off each tile, as the forward and the
// filter gradient read them: parity ab's position xi values at v + ab * ab_stride + xi * vs + t.
// pad is a zeroed (h + 2) x (w + 2) plane (only its interior is written).
template <class T>
void transform_parities(const T* xp, int h, int w, T* pad, T* v, long ab_stride, long vs) {
  for (int ab = 0; ab < 4; ++ab) {
    const int a = ab / 2, b = ab % 2;
    copy_parity_plane(xp, h, w, a, b, pad);
    transform_input(pad, h, w, -a, -b, v + ab * ab_stride, vs);
  }
}

// The chunk-level input transforms: the forward's (and filter pass's) V of channels [c0, c1) of a
// chunk of cnt images x [cnt, c_in, 2h, 2w], parity ab of channel c in row ab * c_in + c of each
// position's matrix (columns t = image * tiles + tile, tcols of them), as transform_parities
// writes each plane's; and the data pass's V of a chunk of cnt images dy [cnt, c, h, w], windows
// starting oy, ox in {-1, 0} off each tile's first output, channel k in row k. pad is a zeroed
// (h + 2) x (w + 2) plane of the caller's. These loops over the planes are what every build runs
// but float with AVX-512 (below); both give the same bits. `parities` transforms one plane as
// transform_parities does (winograd_s2k3 passes its own, which writes its stacked layout).
template <class T>
using ParityTransform = void (*)(const T* xp, int h, int w, T* pad, T* v, long stride, long vs);
template <class T>
void transform_chunk_planes(const T* x, int cnt, int c_in, int h, int w, long in_plane, T* pad, T* v, long tcols,
                            long vs, int c0, int c1, ParityTransform<T> parities = &transform_parities<T>) {
  const int tiles = (h / 2) * (w / 2);
  for (int img = 0; img < cnt; ++img)
    for (int c = c0; c < c1; ++c)
      parities(x + (static_cast<long>(img) * c_in + c) * in_plane, h, w, pad,
               v + c * tcols + static_cast<long>(img) * tiles, c_in * tcols, vs);
}
template <class T>
void transform_chunk_dy_planes(const T* dy, int cnt, int c, int h, int w, int oy, int ox, T* pad, T* v, long tcols,
                               long vs) {
  const int tiles = (h / 2) * (w / 2), pw = w + 2;
  const long plane = static_cast<long>(h) * w;
  for (int img = 0; img < cnt; ++img)
    for (int k = 0; k < c; ++k) {
      const T* src = dy + (static_cast<long>(img) * c + k) * plane;
      for (int u = 0; u < h; ++u)
        std::copy(src + static_cast<long>(u) * w, src + static_cast<long>(u + 1) * w, pad + (u + 1) * pw + 1);
      transform_input(pad, h, w, oy, ox, v + k * tcols + static_cast<long>(img) * tiles, vs);
    }
}
template <class T>
void transform_chunk(const T* x, int cnt, int c_in, int h, int w, long in_plane, T* pad, T* v, long tcols, long vs,
                     int c0, int c1) {
  transform_chunk_planes(x, cnt, c_in, h, w, in_plane, pad, v, tcols, vs, c0, c1);
}
template <class T>
void transform_chunk_dy(const T* dy, int cnt, int c, int h, int w, int oy, int ox, T* pad, T* v, long tcols, long vs) {
  transform_chunk_dy_planes(dy, cnt, c, h, w, oy, ox, pad, v, tcols, vs);
}

// Whether 16 lanes' 32-bit gather indices reach every value of 16 images of `channels` planes of
// `plane` floats (not at any shape of the example; where not, the loops over the planes run).
inline bool gather_indices_fit(long channels, long plane) { return 16L * channels * plane <= 0x7fffffffL; }

// Whether the chunk transforms take the AVX-512 versions below: on planes of fewer than 16 tiles
// (g.3's and D.6's 2x2), where the loops over a plane's tiles are mostly their per-plane overhead.
// On 4x4 tiles (g.6's, D.3's) the loops were as fast or faster: with the gathers of dy and the
// scatters into dx, g.6's data pass took 12% longer (the scatters alone 9%) and D.3's 4% (the
// scatters); with the gathers of x's parity planes g.6's forward and filter passes took 1-2%
// longer (the filter pass 5% less in a run where the host was slow on the filter passes), and
// gathering dy's tiles for the filter passes (transform_tiles) was no faster at any size. With
// this rule, best of 5 alternated runs at batch 128, two runs (AMD EPYC Zen 4, 2026-12-07): g.3's
// forward, data and filter passes (as the convolution) 1.06-1.07x, 1.08-1.09x and 1.03-1.08x as
// fast as with the loops over the planes, D.6's data pass 1.07-1.09x (winograd_s2k3.hpp), the
// others within 2.5% but g.6's filter pass, 1.06x in the one run with its x transforms in blocks
// of 8 channels (kTransformBlock). (winograd_s2k3's transforms of x gather at every size: 1.7x the
// loop's speed on D.3's forward.)
inline bool few_tiles(int tiles) { return tiles < 16; }

#if defined(__AVX512F__)
// With AVX-512 the input transforms take 16 tile columns at a time (which may belong to several
// images): each window value of the 16 tiles is one masked gather straight from the planes, each
// position's 16 values one store (winograd_s2k3.hpp measured the gathers 1.7x as fast as the loop
// over tiles on D.3's forward). Lanes16 holds, for columns t0 .. t0 + 15 of a chunk, each lane's
// offset of its tile's origin from the plane of the first lane's image, img0 ((img - img0) *
// img_stride + ty * row_step + tx * col_step), the lanes inside the chunk (valid), and those whose
// tile lies in the plane's first or last row or column of tiles.
struct Lanes16 {
  __m512i idx;
  __mmask16 valid, first_row, last_row, first_col, last_col;
  int img0;
};
inline Lanes16 lanes16(long t0, long tcols, int tiles, int tw, long img_stride, long row_step, long col_step) {
  Lanes16 lanes{};
  alignas(64) int idx[16];
  const int th = tiles / tw;
  lanes.img0 = static_cast<int>(t0 / tiles);
  for (int l = 0; l < 16; ++l) {
    const long t = t0 + l;
    idx[l] = 0;
    if (t >= tcols) continue;
    const int img = static_cast<int>(t / tiles), tile = static_cast<int>(t % tiles), ty = tile / tw, tx = tile % tw;
    idx[l] = static_cast<int>((img - lanes.img0) * img_stride + ty * row_step + tx * col_step);
    const auto bit = static_cast<__mmask16>(1u << l);
    lanes.valid |= bit;
    if (ty == 0) lanes.first_row |= bit;
    if (ty == th - 1) lanes.last_row |= bit;
    if (tx == 0) lanes.first_col |= bit;
    if (tx == tw - 1) lanes.last_col |= bit;
  }
  lanes.idx = _mm512_load_si512(idx);
  return lanes;
}

// V = B^T d B of 16 tiles' 3x3 windows d (transform_input's arithmetic), rows p < NP and columns
// q < NQ of V only (2 where the filter is zero at p or q = 2: winograd_s2k3's even parities, which
// need no window row or column 2 then). Window row i is row oy + i of the tile's rows in its
// plane, column j column ox + j (oy, ox in {-1, 0}): lane l's value at base[idx[l] + (oy + i) * ru
// + (ox + j) * cu], zero where that lies above or below the plane (row -1 of the first row of
// tiles, row 2 of the last) or left or right of it. Position (p, q)'s 16 values go to out[3p + q]
// (the valid lanes).
template <int NP, int NQ>
inline void gather_transform(const float* base, const Lanes16& lanes, int oy, int ox, long ru, long cu,
                             float* const* out) {
  __m512 d[3][3];
  for (int i = 0; i < NP; ++i) {
    const int r = oy + i;
    const __mmask16 mr = static_cast<__mmask16>(
        r < 0 ? lanes.valid & ~lanes.first_row : r > 1 ? lanes.valid & ~lanes.last_row : lanes.valid);
    for (int j = 0; j < NQ; ++j) {
      const int c = ox + j;
      const __mmask16 m = static_cast<__mmask16>(c < 0 ? mr & ~lanes.first_col : c > 1 ? mr & ~lanes.last_col : mr);
      const __m512i at = _mm512_add_epi32(lanes.idx, _mm512_set1_epi32(static_cast<int>(r * ru + c * cu)));
      d[i][j] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, at, base, 4);
    }
  }
  __m512 s[3][3];  // B^T d: rows
  for (int j = 0; j < NQ; ++j) {
    s[0][j] = _mm512_sub_ps(d[0][j], d[1][j]);
    s[1][j] = d[1][j];
    if (NP == 3) s[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
  }
  for (int i = 0; i < NP; ++i) {  // (B^T d) B: columns
    _mm512_mask_storeu_ps(out[i * 3 + 0], lanes.valid, _mm512_sub_ps(s[i][0], s[i][1]));
    _mm512_mask_storeu_ps(out[i * 3 + 1], lanes.valid, s[i][1]);
    if (NQ == 3) _mm512_mask_storeu_ps(out[i * 3 + 2], lanes.valid, _mm512_sub_ps(s[i][2], s[i][1]));
  }
}

// The two chunk transforms above through gathers. Parity ab of x [2h, 2w]: P_ab's row u is x's
// row 2u + a, so from base x + a * 2w + b, tile origins 4 rows and 4 columns of x apart, window
// steps 2 rows (ru = 2 * 2w) and 2 columns; its windows start -a, -b off each tile.
template <>
inline void transform_chunk<float>(const float* x, int cnt, int c_in, int h, int w, long in_plane, float* pad,
                                   float* v, long tcols, long vs, int c0, int c1) {
  const int tw = w / 2, tiles = (h / 2) * tw, xw = 2 * w;
  if (!few_tiles(tiles) || !gather_indices_fit(c_in, in_plane))
    return transform_chunk_planes(x, cnt, c_in, h, w, in_plane, pad, v, tcols, vs, c0, c1);
  for (long t0 = 0; t0 < tcols; t0 += 16) {
    const Lanes16 lanes = lanes16(t0, tcols, tiles, tw, c_in * in_plane, 4L * xw, 4);
    for (int c = c0; c < c1; ++c) {
      const float* plane = x + (static_cast<long>(lanes.img0) * c_in + c) * in_plane;
      for (int ab = 0; ab < 4; ++ab) {
        const int a = ab / 2, b = ab % 2;
        float* out[9];
        for (int xi = 0; xi < 9; ++xi) out[xi] = v + xi * vs + (static_cast<long>(ab) * c_in + c) * tcols + t0;
        gather_transform<3, 3>(plane + a * xw + b, lanes, -a, -b, 2L * xw, 2, out);
      }
    }
  }
  (void)cnt;
}
template <>
inline void transform_chunk_dy<float>(const float* dy, int cnt, int c, int h, int w, int oy, int ox, float* pad,
                                      float* v, long tcols, long vs) {
  const int tw = w / 2, tiles = (h / 2) * tw;
  const long plane = static_cast<long>(h) * w;
  if (!few_tiles(tiles) || !gather_indices_fit(c, plane))
    return transform_chunk_dy_planes(dy, cnt, c, h, w, oy, ox, pad, v, tcols, vs);
  for (long t0 = 0; t0 < tcols; t0 += 16) {
    const Lanes16 lanes = lanes16(t0, tcols, tiles, tw, c * plane, 2L * w, 2);
    for (int k = 0; k < c; ++k) {
      float* out[9];
      for (int xi = 0; xi < 9; ++xi) out[xi] = v + xi * vs + static_cast<long>(k) * tcols + t0;
      gather_transform<3, 3>(dy + (static_cast<long>(lanes.img0) * c + k) * plane, lanes, oy, ox, w, 1, out);
    }
  }
}
#endif

// Y = A^T M A, the 2x2 result of the 3x3 transformed products M at m[xi * stride] (xi = 3 * row +
// column).
template <class T>
inline void inverse_2x2(const T* m, long stride, T y[2][2]) {
  T a[3][3];
  for (int xi = 0; xi < 9; ++xi) a[xi / 3][xi % 3] = m[xi * stride];
  T s[2][3];  // A^T M
  for (int j = 0; j < 3; ++j) {
    s[0][j] = a[0][j] + a[1][j];
    s[1][j] = a[1][j] + a[2][j];
  }
  y[0][0] = s[0][0] + s[0][1];  // (A^T M) A
  y[0][1] = s[0][1] + s[0][2];
  y[1][0] = s[1][0] + s[1][1];
  y[1][1] = s[1][1] + s[1][2];
}

// The output transform Y = A^T M A of the th x tw tiles of one channel (position xi's values at
// m + xi * mstride + t), plus bias: tile (ty, tx)'s output (p, q) goes to
// y[(2 ty + p) * rs + (2 tx + q) * cs].
template <class T>
void transform_output(const T* m, long mstride, int th, int tw, T bias, T* y, long rs, long cs) {
  for (int ty = 0; ty < th; ++ty) {
    const T* mt = m + static_cast<long>(ty) * tw;
    T* y0 = y + 2L * ty * rs;
    T* y1 = y0 + rs;
    for (int tx = 0; tx < tw; ++tx) {
      T r[2][2];
      inverse_2x2(mt + tx, mstride, r);
      const long o = 2L * tx * cs;
      y0[o] = bias + r[0][0];
      y0[o + cs] = bias + r[0][1];
      y1[o] = bias + r[1][0];
      y1[o + cs] = bias + r[1][1];
    }
  }
}

// The output transforms of a chunk: channel k's products in row k of each position's matrix
// (columns t = image * tiles + tile, tcols of them), plus bias[k] (or 0 without bias), image img's
// channel k to y + img * img_stride + k * ch_stride, laid out as transform_output writes. With
// AVX-512 (float) 16 tile columns at a time: each position's 16 values one load, each output
// position's 16 results one scatter (the same additions, in the same order, as the loop over the
// tiles).
template <class T>
void output_chunk_planes(const T* m, long ms, long tcols, int c, int th, int tw, const T* bias, T* y, long img_stride,
                         long ch_stride, long rs, long cs) {
  const int tiles = th * tw;
  for (long img = 0; img < tcols / tiles; ++img)
    for (int k = 0; k < c; ++k)
      transform_output(m + k * tcols + img * tiles, ms, th, tw, bias ? bias[k] : T(0), y + img * img_stride + k * ch_stride,
                       rs, cs);
}
template <class T>
void output_chunk(const T* m, long ms, long tcols, int c, int th, int tw, const T* bias, T* y, long img_stride,
                  long ch_stride, long rs, long cs) {
  output_chunk_planes(m, ms, tcols, c, th, tw, bias, y, img_stride, ch_stride, rs, cs);
}
#if defined(__AVX512F__)
// Y = A^T M A of 16 tiles (transform_output's and winograd_s2k3's output_parity's arithmetic): M's
// positions at mp[xi], 16 columns each, loaded in the valid lanes; for A = 0 (B = 0) M's row p = 2
// (column q = 2) is zero and not read (winograd_s2k3's even parities; transform_output's M is the
// A = B = 1 case). Lane l's four results go to base[idx[l] + {0, cs, rs, rs + cs}], with Bias as
// bias + result (transform_output's order), without as the results alone.
template <int A, int B, bool Bias>
inline void output_16(const float* const* mp, const Lanes16& lanes, long rs, long cs, float bias, float* base) {
  __m512 a[3][3];
  for (int p = 0; p < 3; ++p)
    for (int q = 0; q < 3; ++q)
      a[p][q] = (p == 2 && A == 0) || (q == 2 && B == 0) ? _mm512_setzero_ps()
                                                         : _mm512_maskz_loadu_ps(lanes.valid, mp[p * 3 + q]);
  __m512 s[2][3];  // A^T M
  for (int j = 0; j < 3; ++j) {
    s[0][j] = _mm512_add_ps(a[0][j], a[1][j]);
    s[1][j] = A == 0 ? a[1][j] : _mm512_add_ps(a[1][j], a[2][j]);
  }
  const __m512 y[4] = {_mm512_add_ps(s[0][0], s[0][1]), B == 0 ? s[0][1] : _mm512_add_ps(s[0][1], s[0][2]),
                       _mm512_add_ps(s[1][0], s[1][1]), B == 0 ? s[1][1] : _mm512_add_ps(s[1][1], s[1][2])};
  const long off[4] = {0, cs, rs, rs + cs};
  const __m512 b = _mm512_set1_ps(bias);
  for (int o = 0; o < 4; ++o)
    _mm512_mask_i32scatter_ps(base, lanes.valid, _mm512_add_epi32(lanes.idx, _mm512_set1_epi32(static_cast<int>(off[o]))),
                              Bias ? _mm512_add_ps(b, y[o]) : y[o], 4);
}
template <>
inline void output_chunk<float>(const float* m, long ms, long tcols, int c, int th, int tw, const float* bias, float* y,
                                long img_stride, long ch_stride, long rs, long cs) {
  const int tiles = th * tw;
  if (!few_tiles(tiles) || !gather_indices_fit(img_stride, 1))
    return output_chunk_planes(m, ms, tcols, c, th, tw, bias, y, img_stride, ch_stride, rs, cs);
  for (long t0 = 0; t0 < tcols; t0 += 16) {
    const Lanes16 lanes = lanes16(t0, tcols, tiles, tw, img_stride, 2 * rs, 2 * cs);
    for (int k = 0; k < c; ++k) {
      const float* mp[9];
      for (int xi = 0; xi < 9; ++xi) mp[xi] = m + static_cast<long>(k) * tcols + t0 + xi * ms;
      output_16<1, 1, true>(mp, lanes, rs, cs, bias ? bias[k] : 0.f, y + lanes.img0 * img_stride + k * ch_stride);
    }
  }
}
#endif

using winograd::Chunk;
using winograd::filter_scratch;
using winograd::for_each_chunk;
using winograd::PositionProducts;

// y [n, c_out, h, w] = conv(x [n, c_in, 2h, 2w]) + bias (or nothing), overwriting y.
template <class T>
void forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y) {
  const int h = g.h_out, wd = g.w_out, th = h / 2, tw = wd / 2, tiles = th * tw;
  const int c_in = g.c_in, c_out = g.c_out, depth = 4 * c_in;
  const long in_plane = static_cast<long>(g.h_in) * g.w_in, out_plane = static_cast<long>(h) * wd;
  auto& ustore = filter_scratch<T>();
  const long us = position_stride(static_cast<long>(c_out) * depth);
  ustore.resize(static_cast<std::size_t>(9 * us));
  transform_filter_forward(w, c_out, c_in, ustore.data());
  const PositionProducts<T> prod(ustore.data(), us, false, c_out, depth, 9);
  for_each_chunk<T>(g.n, tiles, 9, depth, c_out, h, wd, [&](const Chunk<T>& ch) {
    transform_chunk(x + static_cast<long>(ch.i0) * c_in * in_plane, ch.cnt, c_in, h, wd, in_plane, ch.pad, ch.v,
                    ch.tcols, ch.vs, 0, c_in);
    prod.run(ch.v, ch.vs, ch.m, ch.ms, ch.tcols);
    output_chunk(ch.m, ch.ms, ch.tcols, c_out, th, tw, bias, y + static_cast<long>(ch.i0) * c_out * out_plane,
                 c_out * out_plane, out_plane, wd, 1);
  });
}

// dx [n, c_in, 2h, 2w] from dy [n, c_out, h, w], overwriting dx. A parity at a time over all
// chunks, so that its 9 transformed filters stay in cache from one chunk to the next (g.3's 36
// are 19 MiB packed: read from memory once per chunk, they left the pass 1.08-1.10x faster than
// im2col + GEMM in the median, against 1.23-1.24x this way; AMD EPYC Zen 4, 2026-12-06).
template <class T>
void backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  const int h = g.h_out, wd = g.w_out, th = h / 2, tw = wd / 2, tiles = th * tw;
  const int c_in = g.c_in, c_out = g.c_out;
  const long in_plane = static_cast<long>(g.h_in) * g.w_in, out_plane = static_cast<long>(h) * wd;
  auto& ustore = filter_scratch<T>();
  const long us = position_stride(static_cast<long>(c_out) * c_in);
  ustore.resize(static_cast<std::size_t>(9 * us));
  for (int ab = 0; ab < 4; ++ab) {  // each parity writes its own quarter of dx
    const int a = ab / 2, b = ab % 2;
    transform_filter_data(w, c_out, c_in, ab, ustore.data());
    const PositionProducts<T> prod(ustore.data(), us, true, c_in, c_out, 9);
    for_each_chunk<T>(g.n, tiles, 9, c_out, c_in, h, wd, [&](const Chunk<T>& ch) {
      transform_chunk_dy(dy + static_cast<long>(ch.i0) * c_out * out_plane, ch.cnt, c_out, h, wd, a - 1, b - 1, ch.pad,
                         ch.v, ch.tcols, ch.vs);
      prod.run(ch.v, ch.vs, ch.m, ch.ms, ch.tcols);
      output_chunk<T>(ch.m, ch.ms, ch.tcols, c_in, th, tw, nullptr,
                      dx + static_cast<long>(ch.i0) * c_in * in_plane + a * g.w_in + b, c_in * in_plane, in_plane,
                      2L * g.w_in, 2);
    });
  }
}

// The 2x2 tiles of one plane p [h, w] transformed as F(2x2, 2x2)'s filters are, G g G^T: tile
// (ty, tx)'s position xi value at u + xi * us + ty * (w / 2) + tx.
template <class T>
void transform_tiles(const T* p, int h, int w, T* u, long us) {
  const int th = h / 2, tw = w / 2;
  for (int ty = 0; ty < th; ++ty) {
    const T* r0 = p + 2L * ty * w;
    const T* r1 = r0 + w;
    for (int tx = 0; tx < tw; ++tx) {
      const T g[2][2] = {{r0[2 * tx], r0[2 * tx + 1]}, {r1[2 * tx], r1[2 * tx + 1]}};
      transform_filter_2x2(g, u + static_cast<long>(ty) * tw + tx, us);
    }
  }
}

// Tile columns per chunk of the filter gradient (the depth of its GEMMs, which add into the
// accumulated M once per chunk). At g.3's and g.6's shapes, batch 128, 2 threads (AMD EPYC Zen 4,
// 2026-12-06), the pass took (best of 11, ms) 43 / 39 with 32 columns, 32 / 30 with 64, 29 / 29
// with 128, 31 / 30 with 192, 36 / 39 with 256, 37 / 40 with 384 and 40 / 40 with 768: the chunk's
// V and U (4.7 and 2.4 MiB at g.3's with 128) are read by the GEMMs from the caches near the cores.
constexpr int kFilterChunkColumns = 128;

// The filter passes' input transforms are split over the threads in blocks of this many channels
// of x (all the chunk's images each).
constexpr int kTransformBlock = 8;

// dw [c_out, c_in, 4, 4] += the filter gradient of x [n, c_in, 2h, 2w] and dy [n, c_out, h, w].
// Per parity ab, dw's taps (2r + 1 - a, 2s + 1 - b) are a 2x2 correlation summed over the images
// and the output plane,
//   G_ab[k][c][r][s] = sum over n, i, j of dy[k][i][j] P_ab[c][i - a + r][j - b + s],
// which per 2x2 tile of dy is F(2x2, 2x2) with dy's tile as the filter and the 3x3 window of
// P_ab the forward reads as the input (Y = A^T [(G dy G^T) (.) (B^T d B)] A). The output transform
// is linear, so the elementwise products are summed over all tiles first: per position xi one
// GEMM over the tiles, M_xi [c_out, 4 c_in] += U_xi [c_out, T] V_xi^T [T, 4 c_in] (U the
// transformed tiles of dy, V the forward's transformed inputs, the four parities side by side),
// and the output transform runs once per filter at the end: 9 multiply-adds per tile, filter tap
// quarter and channel pair where im2col + GEMM does 16. Chunks of images are taken in order, each
// transformed by all threads (a plane each) and then its 9 products split by the GEMM over the
// threads by columns of M: with dtn's GEMM the sums' order does not depend on the thread count
// (the im2col path's does).
//
// filter_sums is the part the 3x3 stride-2 path (winograd_s2k3.hpp) shares: the chunks of images
// in order, per chunk the transforms of x (x_block(i0, cnt, tcols, vs, pad, v, c0, c1) for the
// chunk's channels [c0, c1) of x, blocks of kTransformBlock split over the threads, pad a zeroed
// (h + 2) x (w + 2) plane of the thread's own) and of dy's tiles into V and U, then M_xi [c_out, depth[xi]] (+)= U_xi V_xi^T for the 9
// positions. Returns M (position xi's matrix at m + xi * ms; m nullptr where there are no
// images).
template <class T>
struct Sums {
  const T* m;
  long ms;
};
template <class T, class XBlock>
Sums<T> filter_sums(const ConvGeom& g, const T* dy, const int (&depth)[9], XBlock x_block) {
  const int h = g.h_out, wd = g.w_out, tiles = (h / 2) * (wd / 2), c_out = g.c_out;
  const long out_plane = static_cast<long>(h) * wd;
  if (g.n <= 0) return {nullptr, 0};  // nothing to add (M would stay unwritten)
  const long max_depth = *std::max_element(depth, depth + 9);
  const int chunk = std::max(1, std::min(g.n, kFilterChunkColumns / tiles));
  const long cols = static_cast<long>(chunk) * tiles;
  static thread_local std::vector<T, AlignedAllocator<T>> vstore, ustore, mstore;
  const long vs_full = position_stride(max_depth * cols), us_full = position_stride(c_out * cols);
  const long ms = position_stride(c_out * max_depth);
  vstore.resize(static_cast<std::size_t>(9 * vs_full));
  ustore.resize(static_cast<std::size_t>(9 * us_full));
  mstore.resize(static_cast<std::size_t>(9 * ms));
  T* v = vstore.data();
  T* u = ustore.data();
  T* m = mstore.data();
  const int threads = std::max(1, dtn::num_threads());
  const long pad_floats = static_cast<long>(h + 2) * (wd + 2);
  static thread_local std::vector<T> pad_store;  // a zero-bordered plane per thread, allocated out here
  pad_store.assign(static_cast<std::size_t>(threads * pad_floats), T(0));
  T* pads = pad_store.data();  // (inside the parallel region the thread_local would name each worker's own)
  for (int i0 = 0; i0 < g.n; i0 += chunk) {
    const int cnt = std::min(chunk, g.n - i0);
    const long tcols = static_cast<long>(cnt) * tiles;
    const long vs = position_stride(max_depth * tcols), us = position_stride(c_out * tcols);
    const int blocks = (g.c_in + kTransformBlock - 1) / kTransformBlock;
    DTN_OMP(parallel num_threads(threads))
    {
      T* pad = pads + dtn::cpu::thread_num() * pad_floats;
      DTN_OMP(for schedule(static) nowait)
      for (int b = 0; b < blocks; ++b)
        x_block(i0, cnt, tcols, vs, pad, v, b * kTransformBlock, std::min(g.c_in, (b + 1) * kTransformBlock));
      DTN_OMP(for schedule(static))
      for (long ik = 0; ik < static_cast<long>(cnt) * c_out; ++ik) {
        const long img = ik / c_out, k = ik % c_out;
        transform_tiles(dy + ((i0 + img) * c_out + k) * out_plane, h, wd, u + k * tcols + img * tiles, us);
      }
    }
    const T beta = i0 == 0 ? T(0) : T(1);
    for (int xi = 0; xi < 9; ++xi)
      gemm<T>(false, true, c_out, depth[xi], static_cast<int>(tcols), T(1), u + xi * us, static_cast<int>(tcols),
              v + xi * vs, static_cast<int>(tcols), beta, m + xi * ms, depth[xi]);
  }
  return {m, ms};
}

template <class T>
void backward_filter(const ConvGeom& g, const T* x, const T* dy, T* dw) {
  const int c_in = g.c_in, c_out = g.c_out, depth = 4 * c_in;
  const long in_plane = static_cast<long>(g.h_in) * g.w_in;
  const int depths[9] = {depth, depth, depth, depth, depth, depth, depth, depth, depth};
  const Sums<T> sums =
      filter_sums<T>(g, dy, depths, [&](int i0, int cnt, long tcols, long vs, T* pad, T* v, int c0, int c1) {
        transform_chunk(x + static_cast<long>(i0) * c_in * in_plane, cnt, c_in, g.h_out, g.w_out, in_plane, pad, v,
                        tcols, vs, c0, c1);
      });
  const T* m = sums.m;
  const long ms = sums.ms;
  if (!m) return;
  // dw's taps from M: per filter (k, c) and parity ab, Y = A^T M A, tap (r, s) to (2r + 1 - a, 2s + 1 - b)
  DTN_OMP(parallel for if (static_cast<long>(c_out) * c_in > 4096))  // no num_threads beside if (parallel.hpp)
  for (int k = 0; k < c_out; ++k)
    for (int ab = 0; ab < 4; ++ab) {
      const int a = ab / 2, b = ab % 2;
      const T* mk = m + static_cast<long>(k) * depth + static_cast<long>(ab) * c_in;
      for (int c = 0; c < c_in; ++c) {
        T taps[2][2];  // [r][s]
        inverse_2x2(mk + c, ms, taps);
        T* f = dw + (static_cast<long>(k) * c_in + c) * 16;
        f[(1 - a) * 4 + (1 - b)] += taps[0][0];
        f[(1 - a) * 4 + (3 - b)] += taps[0][1];
        f[(3 - a) * 4 + (1 - b)] += taps[1][0];
        f[(3 - a) * 4 + (3 - b)] += taps[1][1];
      }
    }
}

}  // namespace winograd_s2
}  // namespace cpu
}  // namespace dtn
