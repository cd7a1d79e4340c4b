#pragma once
// Winograd F(2x2, 2x2) for the CPU's 3x3 stride-2 convolutions with padding 1 that halve the
// plane (D's layers after its first, D.3 and D.6): forward, backward-data and backward-filter.
//
// Per dimension, a 3x3 stride-2 kernel splits by the parity of the large plane's index (the
// polyphase decomposition, as in winograd_s2.hpp for g's 4x4 kernels): with P_a[u] = x[2u + a],
//   y[i] = x[2i - 1] w[0] + x[2i] w[1] + x[2i + 1] w[2] = (P_1[i - 1] w[0] + P_1[i] w[2]) + P_0[i] w[1],
// a 2-tap correlation of the odd parity (window from i - 1) and a 1-tap one of the even parity
// (window from i). Both run as F(2, 2) on pairs of outputs, the 1-tap one with the filter (w[1], 0)
// (transformed (w[1], w[1], 0): its position 2 is zero, so it needs no input there):
//   V = B^T d B (3 inputs),  U = G g G^T (2 taps -> 3),  Y = A^T M A,
//   B^T d = (d0 - d1, d1, d2 - d1),  G g = (g0, g0 + g1, g1),  A^T m = (m0 + m1, m1 + m2).
// In 2D the four parities ab of rows and columns share the output tiles, so as in winograd_s2's
// forward their products are one GEMM per position xi = 3p + q of the 3x3 transformed tile with
// the parities stacked along the depth; only the parities whose filter is nonzero at xi take part
// (p = 2 only the odd rows' a = 1, q = 2 only the odd columns' b = 1):
//   M_xi [c_out, T] = U_xi [c_out, n_xi c_in] V_xi [n_xi c_in, T],  n_xi = 4, 2 or 1,
// 4 * 4 + 4 * 2 + 1 = 25 multiply-adds per 4 outputs and input channel where im2col + GEMM does
// 36: 1.44x fewer, with one output transform per output tile. (An earlier attempt, 2026-12-06,
// ran each parity's products and output transform apart, with four times the transformed outputs
// to write and read, and measured 0.95-1.05x on D.3's and D.6's passes.)
//   data:   dx[2u + a] = sum over i of dy[i] w[2u + a - 2i + 1]: the odd parity a = 1 is dy's
//           2-tap correlation with (w[2], w[0]), the even one its 1-tap one with (w[1], 0), both
//           from window start u: one transform of dy serves all four parities, and the products
//           stack along M's rows, M_xi [n_xi c_in, T] = U_xi^T [n_xi c_in, c_out] V_xi [c_out, T]
//           (U_xi the data filters, stored like the forward's); each parity's output transform
//           writes its own quarter of dx.
//   filter: dw[r] = sum over i of dy[i] x[2i + r - 1]: per parity the correlation of dy with P_a,
//           F(2, 2) with dy's pairs as the filters and the forward's windows as the inputs; summed
//           over the tiles first, M_xi [c_out, n_xi c_in] += U_xi [c_out, T] V_xi^T (the forward's
//           V), and the output transform gives taps r = 0, 2 (odd) or 1 (even, the first of its
//           pair; the second would be the tap a 4x4 kernel has and this one has not).
// Layout, chunking, scratch and the GEMMs as winograd_s2.hpp (columns t = image * tiles + ty * tw
// + tx); V_xi's rows are slot * c_in + c, slot the parity's place among those at xi (slots()).
//
// Rounding: the same sums of products in another order and grouping: each transformed input is a
// sum of at most 4 inputs with coefficients +-1 (the even parity's at most 2), each transformed
// filter value a sum of at most 4 taps, each output a sum of at most 4 of the products' sums.
// Deterministic; with dtn's GEMM independent of the thread count (winograd_s2.hpp).
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
#include "winograd_s2.hpp"

namespace dtn {
namespace cpu {
namespace winograd_s2k3 {

// The convolutions this path computes: 3x3 kernel and winograd_s2::halving_tiles (stride 2,
// padding 1, planes halved into 2x2 tiles, >= 4 channels each way; D.0's single input channel
// stays on its small-depth kernel and im2col). Switched with the other Winograd paths
// (winograd::set_enabled).
inline bool fits(const ConvGeom& g) { return g.kh == 3 && g.kw == 3 && winograd_s2::halving_tiles(g); }

using winograd::position_stride;

// Which parities ab = 2a + b take part at position xi = 3p + q, and where: slot[ab][xi] is the
// parity's place among them (its rows of V_xi start at slot * c_in), -1 where its transformed
// filter is zero; count[xi] of them (4, 2 or 1).
struct Slots {
  int slot[4][9];
  int count[9];
};
inline const Slots& slots() {
  static const Slots s = [] {
    Slots t{};
    for (int xi = 0; xi < 9; ++xi) {
      const int p = xi / 3, q = xi % 3;
      t.count[xi] = 0;
      for (int ab = 0; ab < 4; ++ab) {
        const bool used = (p < 2 || ab / 2 == 1) && (q < 2 || ab % 2 == 1);
        t.slot[ab][xi] = used ? t.count[xi]++ : -1;
      }
    }
    return t;
  }();
  return s;
}

// The kernel row (or column) of tap rho in {0, 1} of parity a's 2-tap filter, -1 for none: the
// forward's (and filter pass's) odd parity (w[0], w[2]), even (w[1], 0); the data pass's odd
// (w[2], w[0]), even (w[1], 0).
inline int tap(int a, int rho, bool data) {
  if (a == 0) return rho == 0 ? 1 : -1;
  return (rho == 0) != data ? 0 : 2;
}

// Per parity ab, the 3x3 kernel's tap (row * 3 + column) of sub-filter tap (r, s), -1 for none.
struct SubTaps {
  int at[4][2][2];
};
inline SubTaps sub_taps(bool data) {
  SubTaps t{};
  for (int ab = 0; ab < 4; ++ab)
    for (int r = 0; r < 2; ++r)
      for (int s = 0; s < 2; ++s) {
        const int ky = tap(ab / 2, r, data), kx = tap(ab % 2, s, data);
        t.at[ab][r][s] = ky < 0 || kx < 0 ? -1 : ky * 3 + kx;
      }
  return t;
}

// U_xi [c_out, n_xi c_in] (column slot * c_in + c) from w [c_out][c_in][3][3]: the forward's
// filters, or with data the data pass's (which its GEMMs read transposed).
template <class T>
void transform_filter(const T* w, int c_out, int c_in, bool data, T* u) {
  const Slots& sl = slots();
  const long us = position_stride(4L * c_out * c_in);
  const SubTaps st = sub_taps(data);
  DTN_OMP(parallel for if (!omp_in_parallel() && static_cast<long>(c_out) * c_in > 4096))
  for (int k = 0; k < c_out; ++k)
    for (int ab = 0; ab < 4; ++ab) {
      T* dst[9];
      for (int xi = 0; xi < 9; ++xi) {
        const int slot = sl.slot[ab][xi];
        dst[xi] = slot < 0 ? nullptr : u + xi * us + (static_cast<long>(k) * sl.count[xi] + slot) * c_in;
      }
      const T* f = w + static_cast<long>(k) * c_in * 9;
      for (int c = 0; c < c_in; ++c, f += 9) {
        T g[2][2];
        for (int r = 0; r < 2; ++r)
          for (int s = 0; s < 2; ++s) g[r][s] = st.at[ab][r][s] < 0 ? T(0) : f[st.at[ab][r][s]];
        T full[9];
        winograd_s2::transform_filter_2x2(g, full, 1);
        for (int xi = 0; xi < 9; ++xi)
          if (dst[xi]) dst[xi][c] = full[xi];
      }
    }
}

// Parity (A, B)'s V from its zero-bordered plane pad (row stride pw): the window of tile (ty, tx)
// starts at padded row 2 ty + 1 - A and column 2 tx + 1 - B; rows p = 2 and columns q = 2 only
// for the odd parities (the even ones' filters are zero there). Position (p, q) goes to
// out[3p + q][t].
template <int A, int B, class T>
void transform_parity(const T* pad, int pw, int th, int tw, T* const* out) {
  constexpr int np = A == 1 ? 3 : 2, nq = B == 1 ? 3 : 2;
  for (int ty = 0; ty < th; ++ty) {
    const T* r0 = pad + (2 * ty + 1 - A) * pw + 1 - B;
    const T* r1 = r0 + pw;
    const T* r2 = r1 + pw;
    for (int tx = 0; tx < tw; ++tx) {
      const int c = 2 * tx, t = ty * tw + tx;
      T s[3][3];  // B^T d: rows
      for (int j = 0; j < 3; ++j) {
        s[0][j] = r0[c + j] - r1[c + j];
        s[1][j] = r1[c + j];
        if (np == 3) s[2][j] = r2[c + j] - r1[c + j];
      }
      for (int i = 0; i < np; ++i) {  // (B^T d) B: columns
        out[i * 3 + 0][t] = s[i][0] - s[i][1];
        out[i * 3 + 1][t] = s[i][1];
        if (nq == 3) out[i * 3 + 2][t] = s[i][2] - s[i][1];
      }
    }
  }
}

// The forward's (and filter pass's) V of one input plane xp [2h, 2w]: its four parity planes,
// each through a zero-bordered copy in pad ((h + 2) x (w + 2), border zero), position xi of
// parity ab to v + xi * vs + slot[ab][xi] * slot_stride + t where it takes part.
template <class T>
void transform_parities(const T* xp, int h, int w, T* pad, T* v, long slot_stride, long vs) {
  const Slots& sl = slots();
  const int pw = w + 2, th = h / 2, tw = w / 2;
  for (int ab = 0; ab < 4; ++ab) {
    winograd_s2::copy_parity_plane(xp, h, w, ab / 2, ab % 2, pad);
    T* out[9];
    for (int xi = 0; xi < 9; ++xi) {
      const int slot = sl.slot[ab][xi];
      out[xi] = slot >= 0 ? v + xi * vs + slot * slot_stride : nullptr;
    }
    switch (ab) {
      case 0: transform_parity<0, 0>(pad, pw, th, tw, out); break;
      case 1: transform_parity<0, 1>(pad, pw, th, tw, out); break;
      case 2: transform_parity<1, 0>(pad, pw, th, tw, out); break;
      default: transform_parity<1, 1>(pad, pw, th, tw, out); break;
    }
  }
}

// The forward's (and filter pass's) V of channels [c0, c1) of a chunk of cnt images x [cnt, c_in,
// 2h, 2w] (columns t = image * tiles + tile, tcols of them), as transform_parities writes it.
// With AVX-512 (float) 16 columns at a time: each window value of 16 tiles, which may belong to
// several images, is one masked gather straight from x (x[4 ty + 2i - a][4 tx + 2j - b] for
// window row i and column j of parity ab; masked off only where that is row or column -1 of the
// plane, and past the chunk's last column), and each position's 16 values one store. The scalar
// loop over the tiles took about 1.7x as long (perf, D.3's forward at batch 128 on the Zen 4 host:
// 21% of the pass against 13%; the gathers are the cost there).
template <class T>
void transform_chunk_planes(const T* x, int cnt, int c_in, int h, int w, long in_plane, T* pad, T* v, long tcols,
                            long vs, int c0, int c1) {  // the loop over the planes, scalar
  winograd_s2::transform_chunk_planes(x, cnt, c_in, h, w, in_plane, pad, v, tcols, vs, c0, c1, &transform_parities<T>);
}
template <class T>
void transform_chunk(const T* x, int cnt, int c_in, int h, int w, long in_plane, T* pad, T* v, long tcols, long vs,
                     int c0, int c1) {
  transform_chunk_planes(x, cnt, c_in, h, w, in_plane, pad, v, tcols, vs, c0, c1);
}

#if defined(__AVX512F__)
template <>
inline void transform_chunk<float>(const float* x, int cnt, int c_in, int h, int w, long in_plane, float* pad, float* v,
                                   long tcols, long vs, int c0, int c1) {
  const Slots& sl = slots();
  const int tw = w / 2, tiles = (h / 2) * tw, xw = 2 * w;
  if (!winograd_s2::gather_indices_fit(c_in, in_plane))
    return transform_chunk_planes(x, cnt, c_in, h, w, in_plane, pad, v, tcols, vs, c0, c1);
  for (long t0 = 0; t0 < tcols; t0 += 16) {
    const winograd_s2::Lanes16 lanes = winograd_s2::lanes16(t0, tcols, tiles, tw, c_in * in_plane, 4L * xw, 4);
    for (int c = c0; c < c1; ++c) {
      const float* plane = x + (static_cast<long>(lanes.img0) * c_in + c) * in_plane;
      float* out[4][9];
      for (int ab = 0; ab < 4; ++ab)
        for (int xi = 0; xi < 9; ++xi) {
          const int slot = sl.slot[ab][xi];
          out[ab][xi] = slot < 0 ? nullptr : v + xi * vs + (static_cast<long>(slot) * c_in + c) * tcols + t0;
        }
      // Parity ab's window from base x + a * 2w + b, starting -a, -b (winograd_s2's transform_chunk)
      using winograd_s2::gather_transform;
      gather_transform<2, 2>(plane, lanes, 0, 0, 2L * xw, 2, out[0]);
      gather_transform<2, 3>(plane + 1, lanes, 0, -1, 2L * xw, 2, out[1]);
      gather_transform<3, 2>(plane + xw, lanes, -1, 0, 2L * xw, 2, out[2]);
      gather_transform<3, 3>(plane + xw + 1, lanes, -1, -1, 2L * xw, 2, out[3]);
    }
  }
}
#endif

using winograd::Chunk;
using winograd::filter_scratch;
using winograd::for_each_chunk;
using winograd::PositionProducts;

// Per position, the rows and depths of the forward's GEMMs (rows c_out, depth n_xi c_in) or of
// the data pass's (rows n_xi c_in, depth c_out).
inline std::vector<int> stacked(int c) {
  std::vector<int> r(9);
  for (int xi = 0; xi < 9; ++xi) r[static_cast<std::size_t>(xi)] = slots().count[xi] * c;
  return r;
}

// y [n, c_out, h, w] = conv(x [n, c_in, 2h, 2w]) + bias (or nothing), overwriting y.
template <class T>
void forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y) {
  const int h = g.h_out, wd = g.w_out, th = h / 2, tw = wd / 2, tiles = th * tw;
  const int c_in = g.c_in, c_out = g.c_out, depth = 4 * c_in;
  const long in_plane = static_cast<long>(g.h_in) * g.w_in, out_plane = static_cast<long>(h) * wd;
  auto& ustore = filter_scratch<T>();
  const long us = position_stride(static_cast<long>(c_out) * depth);
  ustore.resize(static_cast<std::size_t>(9 * us));
  transform_filter(w, c_out, c_in, false, ustore.data());
  const PositionProducts<T> prod(ustore.data(), us, false, std::vector<int>(9, c_out), stacked(c_in));
  for_each_chunk<T>(g.n, tiles, 9, depth, c_out, h, wd, [&](const Chunk<T>& ch) {
    transform_chunk(x + static_cast<long>(ch.i0) * c_in * in_plane, ch.cnt, c_in, h, wd, in_plane, ch.pad, ch.v,
                    ch.tcols, ch.vs, 0, c_in);
    prod.run(ch.v, ch.vs, ch.m, ch.ms, ch.tcols);
    winograd_s2::output_chunk(ch.m, ch.ms, ch.tcols, c_out, th, tw, bias,
                              y + static_cast<long>(ch.i0) * c_out * out_plane, c_out * out_plane, out_plane, wd, 1);
  });
}

// The data pass's output transform of parity (A, B) for one channel of one image: M's positions
// at mp[xi][t] (rows p = 2 and columns q = 2 only for the odd parities, zero for the others), tile
// t's 2x2 outputs to out[2 (t / tw) rs + 4 (t % tw)] and its neighbours 2 apart (the parity's
// places in dx; rs the stride of two rows of dx).
template <int A, int B, class T>
void output_parity(const T* const* mp, int tiles, int tw, long rs, T* out) {
  for (int t = 0; t < tiles; ++t) {
    T a[3][3];
    for (int p = 0; p < 3; ++p)
      for (int q = 0; q < 3; ++q) a[p][q] = (p == 2 && A == 0) || (q == 2 && B == 0) ? T(0) : mp[p * 3 + q][t];
    T s[2][3];  // A^T M
    for (int j = 0; j < 3; ++j) {
      s[0][j] = a[0][j] + a[1][j];
      s[1][j] = A == 0 ? a[1][j] : a[1][j] + a[2][j];
    }
    T* o = out + 2L * (t / tw) * rs + 4L * (t % tw);
    o[0] = s[0][0] + s[0][1];  // (A^T M) A
    o[2] = B == 0 ? s[0][1] : s[0][1] + s[0][2];
    o[rs] = s[1][0] + s[1][1];
    o[rs + 2] = B == 0 ? s[1][1] : s[1][1] + s[1][2];
  }
}

// The data pass's output transforms of a chunk: channel c's parity ab from M's rows slot * c_in + c
// (slot its place at each position) into dx + img * img_stride + c * in_plane, its parity's places
// (output_parity). With AVX-512 (float) 16 tile columns at a time, as winograd_s2::output_chunk.
template <class T>
void output_parities_chunk_planes(const T* m, long ms, long tcols, int c_in, int th, int tw, T* dx, long img_stride,
                                  long in_plane, int w_in) {
  const Slots& sl = slots();
  const int tiles = th * tw;
  for (long img = 0; img < tcols / tiles; ++img)
    for (int c = 0; c < c_in; ++c)
      for (int ab = 0; ab < 4; ++ab) {
        const T* mp[9];
        for (int xi = 0; xi < 9; ++xi) {
          const int slot = sl.slot[ab][xi];
          mp[xi] = slot < 0 ? nullptr : m + xi * ms + (static_cast<long>(slot) * c_in + c) * tcols + img * tiles;
        }
        T* out = dx + img * img_stride + c * in_plane + (ab / 2) * w_in + ab % 2;
        switch (ab) {
          case 0: output_parity<0, 0>(mp, tiles, tw, 2L * w_in, out); break;
          case 1: output_parity<0, 1>(mp, tiles, tw, 2L * w_in, out); break;
          case 2: output_parity<1, 0>(mp, tiles, tw, 2L * w_in, out); break;
          default: output_parity<1, 1>(mp, tiles, tw, 2L * w_in, out); break;
        }
      }
}
template <class T>
void output_parities_chunk(const T* m, long ms, long tcols, int c_in, int th, int tw, T* dx, long img_stride,
                           long in_plane, int w_in) {
  output_parities_chunk_planes(m, ms, tcols, c_in, th, tw, dx, img_stride, in_plane, w_in);
}
#if defined(__AVX512F__)
template <>
inline void output_parities_chunk<float>(const float* m, long ms, long tcols, int c_in, int th, int tw, float* dx,
                                         long img_stride, long in_plane, int w_in) {
  const Slots& sl = slots();
  const int tiles = th * tw;
  const long rs = 2L * w_in;
  if (!winograd_s2::few_tiles(tiles) || !winograd_s2::gather_indices_fit(img_stride, 1))
    return output_parities_chunk_planes(m, ms, tcols, c_in, th, tw, dx, img_stride, in_plane, w_in);
  for (long t0 = 0; t0 < tcols; t0 += 16) {
    const winograd_s2::Lanes16 lanes = winograd_s2::lanes16(t0, tcols, tiles, tw, img_stride, 2 * rs, 4);
    for (int c = 0; c < c_in; ++c) {
      float* base = dx + lanes.img0 * img_stride + c * in_plane;
      const float* mp[4][9];
      for (int ab = 0; ab < 4; ++ab)
        for (int xi = 0; xi < 9; ++xi) {
          const int slot = sl.slot[ab][xi];
          mp[ab][xi] = slot < 0 ? nullptr : m + xi * ms + (static_cast<long>(slot) * c_in + c) * tcols + t0;
        }
      winograd_s2::output_16<0, 0, false>(mp[0], lanes, rs, 2, 0.f, base);
      winograd_s2::output_16<0, 1, false>(mp[1], lanes, rs, 2, 0.f, base + 1);
      winograd_s2::output_16<1, 0, false>(mp[2], lanes, rs, 2, 0.f, base + w_in);
      winograd_s2::output_16<1, 1, false>(mp[3], lanes, rs, 2, 0.f, base + w_in + 1);
    }
  }
}
#endif

// dx [n, c_in, 2h, 2w] from dy [n, c_out, h, w], overwriting dx.
template <class T>
void backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  const int h = g.h_out, wd = g.w_out, tw = wd / 2, tiles = (h / 2) * tw;
  const int c_in = g.c_in, c_out = g.c_out, rows = 4 * c_in;
  const long in_plane = static_cast<long>(g.h_in) * g.w_in, out_plane = static_cast<long>(h) * wd;
  auto& ustore = filter_scratch<T>();
  const long us = position_stride(static_cast<long>(c_out) * rows);
  ustore.resize(static_cast<std::size_t>(9 * us));
  transform_filter(w, c_out, c_in, true, ustore.data());
  const PositionProducts<T> prod(ustore.data(), us, true, stacked(c_in), std::vector<int>(9, c_out));
  for_each_chunk<T>(g.n, tiles, 9, c_out, rows, h, wd, [&](const Chunk<T>& ch) {
    winograd_s2::transform_chunk_dy(dy + static_cast<long>(ch.i0) * c_out * out_plane, ch.cnt, c_out, h, wd, 0, 0,
                                    ch.pad, ch.v, ch.tcols, ch.vs);
    prod.run(ch.v, ch.vs, ch.m, ch.ms, ch.tcols);
    output_parities_chunk(ch.m, ch.ms, ch.tcols, c_in, h / 2, tw, dx + static_cast<long>(ch.i0) * c_in * in_plane,
                          c_in * in_plane, in_plane, g.w_in);
  });
}

// dw [c_out, c_in, 3, 3] += the filter gradient of x [n, c_in, 2h, 2w] and dy [n, c_out, h, w]:
// chunks of images in order, each chunk's transforms split over the threads (blocks of 8
// channels of x, dy's planes), its 9 products by the GEMM over the threads by columns of M
// (winograd_s2::filter_sums, which g's 4x4 filter pass runs too).
template <class T>
void backward_filter(const ConvGeom& g, const T* x, const T* dy, T* dw) {
  const Slots& sl = slots();
  const int c_in = g.c_in, c_out = g.c_out;
  const long in_plane = static_cast<long>(g.h_in) * g.w_in;
  int depths[9];
  for (int xi = 0; xi < 9; ++xi) depths[xi] = sl.count[xi] * c_in;
  const winograd_s2::Sums<T> sums =
      winograd_s2::filter_sums<T>(g, dy, depths, [&](int i0, int cnt, long tcols, long vs, T* pad, T* v, int c0, int c1) {
        transform_chunk(x + static_cast<long>(i0) * c_in * in_plane, cnt, c_in, g.h_out, g.w_out, in_plane, pad, v,
                        tcols, vs, c0, c1);
      });
  const T* m = sums.m;
  const long ms = sums.ms;
  if (!m) return;
  const SubTaps st = sub_taps(false);
  // dw's taps from M: per filter (k, c) and parity ab, Y = A^T M A (zero where the parity has no
  // product); tap (rho, sigma) to the kernel's tap sub_taps gives, where there is one
  DTN_OMP(parallel for if (static_cast<long>(c_out) * c_in > 4096))  // no num_threads beside if (parallel.hpp)
  for (int k = 0; k < c_out; ++k)
    for (int ab = 0; ab < 4; ++ab) {
      for (int c = 0; c < c_in; ++c) {
        T mt[9];
        for (int xi = 0; xi < 9; ++xi) {
          const int slot = sl.slot[ab][xi], d = sl.count[xi] * c_in;
          mt[xi] = slot < 0 ? T(0) : m[xi * ms + static_cast<long>(k) * d + slot * c_in + c];
        }
        T y[2][2];
        winograd_s2::inverse_2x2(mt, 1, y);
        T* f = dw + (static_cast<long>(k) * c_in + c) * 9;
        for (int r = 0; r < 2; ++r)
          for (int s = 0; s < 2; ++s)
            if (st.at[ab][r][s] >= 0) f[st.at[ab][r][s]] += y[r][s];
      }
    }
}

}  // namespace winograd_s2k3
}  // namespace cpu
}  // namespace dtn
