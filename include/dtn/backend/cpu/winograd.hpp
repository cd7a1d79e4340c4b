#pragma once
// Winograd F(2x2, 3x3) for the CPU's 3x3 stride-1 "same" convolutions (f's layers after the
// first, and the second of the example's MNIST classifier): forward, and backward-data, which is
// the same convolution of dy with the filter flipped and its channels swapped.
//
// Each 2x2 block of outputs is computed from the 4x4 block of input around it (Lavin & Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016): with the transforms
//   V = B^T d B (input tile d, 4x4),  U = G g G^T (filter g, 3x3 -> 4x4),  Y = A^T M A (2x2),
// the products over the channels become 16 independent GEMMs, one per position xi of the 4x4
// transformed tile: M_xi [c_out, tiles] = U_xi [c_out, c_in] V_xi [c_in, tiles]. That is 16
// multiply-adds per 4 outputs and input channel, where im2col + GEMM does 36: 2.25x fewer. The
// transforms are additions (and halvings of the filter, exact in binary), O(1) per element
// against the GEMM's O(c_in) or O(c_out), so they pay from a handful of channels on.
//
// Rounding: the result is the same sum of products in another order and grouping, with each
// input value added into a tile with coefficients +-1 and each filter value with 1 or 1/2. Its
// error bound is a small multiple of im2col's (the tests compare the two paths within a bound
// of that form). Like the im2col path it is deterministic, and with dtn's GEMM (sgemm.hpp) it
// does not depend on the thread count: each image's tiles are computed by one thread, in a fixed
// order, and that GEMM's sums do not depend on how many columns a chunk has. (Eigen's GEMM, of
// builds without AVX2 and FMA and of double, blocks by the shape: there the chunks, which follow
// the thread count, can change the last bits.)
//
// Layout of a chunk of cnt images (columns t = image * tiles + ty * tw + tx, tiles = th * tw,
// th = h/2, tw = w/2): V [16][c_in][T] and M [16][c_out][T], T = cnt * tiles, each position's
// matrix contiguous for its GEMM. Images are handed to the threads chunk by chunk, each thread
// with its own scratch.
//
// Tried and left out (Intel Xeon host, 2026-12-03, batch 128, 2 threads): the same scheme for the
// data pass of 4x4 stride-2 convolutions (g's transposed convolutions' forward), one F(2x2, 2x2)
// per output parity, 9 multiply-adds per 4 outputs instead of 16: 1.00-1.05x on g.3 and
// 1.09-1.14x on g.6, since each parity transforms the whole input again (9 values per input value,
// against im2col's fold of 16 per output) and those transforms, with 2-4 tiles across, do not
// vectorise.
#include "parallel.hpp"

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../core/memory.hpp"
#include "../backend.hpp"
#include "gemm.hpp"

namespace dtn {
namespace cpu {
namespace winograd {

// The convolutions this path computes: 3x3 kernel, stride 1, padding 1 (output size = input
// size), even height and width, and enough input channels that the GEMMs are worth it. (With
// c_in * 9 <= 32 the CPU forward has its own small-depth kernel: f.0's 3 channels.)
inline bool fits(const ConvGeom& g) {
  return g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == 1 && g.h_in == g.h_out && g.w_in == g.w_out &&
         g.h_in % 2 == 0 && g.w_in % 2 == 0 && g.h_in >= 2 && g.w_in >= 2 && g.c_in >= 4 && g.c_out >= 4;
}

// Whether the CPU convolutions use this path where it fits (default on). Per thread, like the
// CUDA backend's conv modes; the tests turn it off to compare with im2col + GEMM.
inline bool& enabled_flag() {
  static thread_local bool on = true;
  return on;
}
inline bool enabled() { return enabled_flag(); }
inline void set_enabled(bool on) { enabled_flag() = on; }

// The 16 positions' matrices of a transformed filter (U), input (V) or output (M) are stored
// position_stride(floats) apart: 16 floats, a cache line, more than the matrix. The matrices'
// sizes are powers of two for most layers, and the transforms write or read all 16 positions of
// a tile or filter at once: a power-of-two apart those accesses fell into the same cache sets
// (the input transform of f.3 took 3 ns per value on the Intel Xeon host, 9x what it takes now).
inline long position_stride(long floats) { return floats + 16; }

// The transformed filters are stored in the filter's own order, U_xi [c_out, c_in], so that the
// transforms read w and write u front to back (read in the other order, one filter per 4 KiB
// page, the filter transform of the 4x4 stride-2 attempt above took 10-14% of g.3's pass on one
// thread); the data pass, whose products need U^T, has the GEMM read it transposed.
// U_xi for xi = 0..15 from the 3x3 filters w [c_out][c_in][3][3], or, with flip, from the same
// filters rotated by 180 degrees (the data pass convolves dy with them, channels swapped).
template <class T>
void transform_filter(const T* w, int c_out, int c_in, bool flip, T* u) {
  const long plane = static_cast<long>(c_out) * c_in, us = position_stride(plane);
  const T h = T(0.5);
  DTN_OMP(parallel for if (!omp_in_parallel() && plane > 4096))
  for (long rc = 0; rc < plane; ++rc) {
    T g[3][3];
    for (int ky = 0; ky < 3; ++ky)
      for (int kx = 0; kx < 3; ++kx) g[ky][kx] = flip ? w[rc * 9 + (2 - ky) * 3 + (2 - kx)] : w[rc * 9 + ky * 3 + kx];
    T t[4][3];  // G g
    for (int j = 0; j < 3; ++j) {
      t[0][j] = g[0][j];
      t[1][j] = h * (g[0][j] + g[1][j] + g[2][j]);
      t[2][j] = h * (g[0][j] - g[1][j] + g[2][j]);
      t[3][j] = g[2][j];
    }
    for (int i = 0; i < 4; ++i) {  // (G g) G^T
      T* ui = u + (i * 4) * us + rc;
      ui[0 * us] = t[i][0];
      ui[1 * us] = h * (t[i][0] + t[i][1] + t[i][2]);
      ui[2 * us] = h * (t[i][0] - t[i][1] + t[i][2]);
      ui[3 * us] = t[i][2];
    }
  }
}

// The input transform of one image plane x [h, w] into v (position xi's values of this plane's
// tiles at v + xi * vstride + t, t = ty * tw + tx). pad is a scratch plane of (h + 2) x (w + 2)
// values whose border is zero (the caller zeroes it once per chunk; only the interior is
// written here).
// (Two passes with inner loops along the tiles, the row transforms first, took 1.6-1.8x as long
// as this on f's planes of 4-8 tiles across: Intel Xeon host, 2026-12-03.)
template <class T>
void transform_input(const T* x, int h, int w, T* pad, T* v, long vstride) {
  const int pw = w + 2, th = h / 2, tw = w / 2;
  for (int y = 0; y < h; ++y)
    std::copy(x + static_cast<long>(y) * w, x + static_cast<long>(y + 1) * w, pad + (y + 1) * pw + 1);
  for (int ty = 0; ty < th; ++ty) {
    const T* r0 = pad + (2 * ty) * pw;
    const T* r1 = r0 + pw;
    const T* r2 = r1 + pw;
    const T* r3 = r2 + pw;
    T* vt = v + static_cast<long>(ty) * tw;
    for (int tx = 0; tx < tw; ++tx) {
      const int c = 2 * tx;
      const T d[4][4] = {{r0[c], r0[c + 1], r0[c + 2], r0[c + 3]},
                         {r1[c], r1[c + 1], r1[c + 2], r1[c + 3]},
                         {r2[c], r2[c + 1], r2[c + 2], r2[c + 3]},
                         {r3[c], r3[c + 1], r3[c + 2], r3[c + 3]}};
      T s[4][4];  // B^T d: rows
      for (int j = 0; j < 4; ++j) {
        s[0][j] = d[0][j] - d[2][j];
        s[1][j] = d[1][j] + d[2][j];
        s[2][j] = d[2][j] - d[1][j];
        s[3][j] = d[1][j] - d[3][j];
      }
      for (int i = 0; i < 4; ++i) {  // (B^T d) B: columns
        T* vi = vt + (i * 4) * vstride + tx;
        vi[0 * vstride] = s[i][0] - s[i][2];
        vi[1 * vstride] = s[i][1] + s[i][2];
        vi[2 * vstride] = s[i][2] - s[i][1];
        vi[3 * vstride] = s[i][1] - s[i][3];
      }
    }
  }
}

// The output transform of one output plane y [h, w] from m (position xi's values of this plane's
// tiles at m + xi * mstride + t), plus bias: Y = A^T M A per tile.
template <class T>
void transform_output(const T* m, long mstride, int h, int w, T bias, T* y) {
  const int th = h / 2, tw = w / 2;
  for (int ty = 0; ty < th; ++ty) {
    const T* mt = m + static_cast<long>(ty) * tw;
    T* y0 = y + static_cast<long>(2 * ty) * w;
    T* y1 = y0 + w;
    for (int tx = 0; tx < tw; ++tx) {
      T a[4][4];
      for (int xi = 0; xi < 16; ++xi) a[xi / 4][xi % 4] = mt[xi * mstride + tx];
      T s[2][4];  // A^T M
      for (int j = 0; j < 4; ++j) {
        s[0][j] = a[0][j] + a[1][j] + a[2][j];
        s[1][j] = a[1][j] - a[2][j] - a[3][j];
      }
      y0[2 * tx] = bias + (s[0][0] + s[0][1] + s[0][2]);  // (A^T M) A
      y0[2 * tx + 1] = bias + (s[0][1] - s[0][2] - s[0][3]);
      y1[2 * tx] = bias + (s[1][0] + s[1][1] + s[1][2]);
      y1[2 * tx + 1] = bias + (s[1][1] - s[1][2] - s[1][3]);
    }
  }
}

template <class T>
struct Scratch {
  std::vector<T, AlignedAllocator<T>> v, m, pad;
};

// Images per chunk: GEMMs ~128 columns wide, but no fewer chunks than threads. Narrow enough
// that a chunk's V and M (16 * (c_in + c_out) * 4 bytes a column: 1.5 MiB for f.6 at 128)
// stay near the core's L2: at batch 128 on 2 threads (Intel Xeon host, 2026-12-03), chunks of
// 256 and 512 columns made f.3-f.9 8-20% slower than 128; 64 and 96 were within the noise of it.
inline int chunk_images(int n, int tiles) {
  const int threads = std::max(1, dtn::num_threads());
  const int by_width = std::max(1, (128 + tiles - 1) / tiles);
  const int by_threads = std::max(1, (n + threads - 1) / threads);
  return std::max(1, std::min(by_width, by_threads));
}

// The calling thread's scratch, one per worker (used of them), each with room for v_floats of V
// and m_floats of M. Taken before the parallel region, since inside it a thread_local would name
// each worker's own.
template <class T>
std::vector<Scratch<T>>& worker_scratch(int used, long v_floats, long m_floats) {
  static thread_local std::vector<Scratch<T>> store;
  if (static_cast<int>(store.size()) < used) store.resize(static_cast<std::size_t>(used));
  for (int t = 0; t < used; ++t) {
    Scratch<T>& s = store[static_cast<std::size_t>(t)];
    s.v.resize(static_cast<std::size_t>(v_floats));
    s.m.resize(static_cast<std::size_t>(m_floats));
  }
  return store;
}

// One chunk of images as for_each_chunk hands it to its body: images [i0, i0 + cnt), tcols =
// cnt * tiles columns (the last chunk may be short), and the calling worker's scratch: V's
// positions vs apart, M's ms apart, a zeroed plane for padded inputs.
template <class T>
struct Chunk {
  int i0, cnt;
  long tcols, vs, ms;
  T *v, *m, *pad;
};

// Runs body(const Chunk<T>&) for each chunk of n images (chunk_images of them, tiles columns an
// image) over the threads, a chunk at a time per worker: V with positions matrices of v_rows rows,
// M with positions of m_rows rows, and a zeroed (h + 2) x (w + 2) plane. The one chunk plan of
// the Winograd paths (F(2x2, 3x3) here, the per-parity ones of winograd_s2.hpp and
// winograd_s2k3.hpp).
template <class T, class Body>
void for_each_chunk(int n, int tiles, int positions, long v_rows, long m_rows, int h, int w, Body&& body) {
  const int chunk = chunk_images(n, tiles), nchunks = (n + chunk - 1) / chunk;
  const long cols = static_cast<long>(chunk) * tiles;
  const int used = std::min(std::max(1, dtn::num_threads()), nchunks);
  std::vector<Scratch<T>>& scratch =
      worker_scratch<T>(used, positions * position_stride(v_rows * cols), positions * position_stride(m_rows * cols));
  DTN_OMP(parallel for schedule(dynamic, 1) num_threads(used))
  for (int ci = 0; ci < nchunks; ++ci) {
    Scratch<T>& s = scratch[static_cast<std::size_t>(dtn::cpu::thread_num())];
    const int i0 = ci * chunk, cnt = std::min(chunk, n - i0);
    const long tcols = static_cast<long>(cnt) * tiles;
    s.pad.assign(static_cast<std::size_t>(h + 2) * static_cast<std::size_t>(w + 2), T(0));
    const Chunk<T> ch{i0, cnt, tcols, position_stride(v_rows * tcols), position_stride(m_rows * tcols),
                      s.v.data(), s.m.data(), s.pad.data()};
    body(ch);
  }
}

// The products M_xi = op(U_xi) V_xi of a chunk for count positions: U_xi [rows, depth] at
// u + xi * us (or stored [depth, rows], trans), V_xi [depth, cols] at v + xi * vs, M_xi
// [rows, cols] at m + xi * ms. dtn's GEMM takes each U_xi packed once, here, for all chunks.
// The second constructor gives each position its own rows and depth (D's 3x3 stride-2 path,
// winograd_s2k3.hpp, whose positions sum over 1, 2 or 4 parities).
template <class T>
class PositionProducts {
 public:
  PositionProducts(const T* u, long us, bool trans, int rows, int depth, int count)
      : PositionProducts(u, us, trans, std::vector<int>(static_cast<std::size_t>(count), rows),
                         std::vector<int>(static_cast<std::size_t>(count), depth)) {}
  PositionProducts(const T* u, long us, bool trans, std::vector<int> rows, std::vector<int> depths)
      : u_(u), us_(us), trans_(trans), rows_(std::move(rows)), depths_(std::move(depths)) {
#if defined(DTN_OWN_SGEMM)
    if constexpr (std::is_same<T, float>::value) {
      static thread_local std::vector<float, AlignedAllocator<float>> pstore;
      std::vector<long> at(rows_.size() + 1, 0);
      for (std::size_t xi = 0; xi < rows_.size(); ++xi) at[xi + 1] = at[xi] + sgemm::packed_a_size(rows_[xi], depths_[xi]);
      pstore.resize(static_cast<std::size_t>(at.back()));
      packed_.resize(rows_.size());
      for (std::size_t xi = 0; xi < rows_.size(); ++xi)
        packed_[xi] = sgemm::pack_a_whole(plain_view<const float>(u + static_cast<long>(xi) * us, ld(xi)), trans,
                                          rows_[xi], depths_[xi], pstore.data() + at[xi]);
    }
#endif
  }
  // M_xi's rows are ms floats apart from one position to the next, V_xi's vs.
  void run(const T* v, long vs, T* m, long ms, long cols) const {
    for (std::size_t xi = 0; xi < rows_.size(); ++xi) {
      const long o = static_cast<long>(xi);
#if defined(DTN_OWN_SGEMM)
      if constexpr (std::is_same<T, float>::value) {
        sgemm::gemm_packed(rows_[xi], static_cast<int>(cols), depths_[xi], 1.f, packed_[xi],
                           sgemm::ViewB{plain_view<const float>(v + o * vs, cols), false}, 0.f,
                           plain_view(m + o * ms, cols));
        continue;
      }
#endif
      gemm<T>(trans_, false, rows_[xi], static_cast<int>(cols), depths_[xi], T(1), u_ + o * us_, ld(xi), v + o * vs,
              static_cast<int>(cols), T(0), m + o * ms, static_cast<int>(cols));
    }
  }

 private:
  int ld(std::size_t xi) const { return trans_ ? rows_[xi] : depths_[xi]; }
  const T* u_;
  long us_;
  bool trans_;
  std::vector<int> rows_, depths_;
#if defined(DTN_OWN_SGEMM)
  std::vector<sgemm::PackedA> packed_;
#endif
};

// y [n, c_out, h, w] = conv(x [n, c_in, h, w]) + bias (or nothing), overwriting y, with the
// transformed filters U_xi [c_out, c_in] at u + xi * position_stride(c_out * c_in), or stored
// [c_in, c_out] with u_trans. For each chunk of images: the input transform into V, the 16
// products M_xi = U_xi V_xi, the output transform from M.
template <class T>
void convolve(int n, int c_in, int c_out, int h, int w, const T* x, const T* u, bool u_trans, const T* bias, T* y) {
  const int tiles = (h / 2) * (w / 2);
  const long plane = static_cast<long>(h) * w;
  const PositionProducts<T> products(u, position_stride(static_cast<long>(c_out) * c_in), u_trans, c_out, c_in, 16);
  for_each_chunk<T>(n, tiles, 16, c_in, c_out, h, w, [&](const Chunk<T>& ch) {
    for (int img = 0; img < ch.cnt; ++img)
      for (int c = 0; c < c_in; ++c)
        transform_input(x + (static_cast<long>(ch.i0 + img) * c_in + c) * plane, h, w, ch.pad,
                        ch.v + c * ch.tcols + static_cast<long>(img) * tiles, ch.vs);
    products.run(ch.v, ch.vs, ch.m, ch.ms, ch.tcols);
    for (int img = 0; img < ch.cnt; ++img)
      for (int co = 0; co < c_out; ++co)
        transform_output(ch.m + co * ch.tcols + static_cast<long>(img) * tiles, ch.ms, h, w, bias ? bias[co] : T(0),
                         y + (static_cast<long>(ch.i0 + img) * c_out + co) * plane);
  });
}

template <class T>
std::vector<T, AlignedAllocator<T>>& filter_scratch() {
  static thread_local std::vector<T, AlignedAllocator<T>> u;
  return u;
}

// The convolution's forward pass through this path (fits(g) holds).
template <class T>
void forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y) {
  auto& u = filter_scratch<T>();
  u.resize(static_cast<std::size_t>(16 * position_stride(static_cast<long>(g.c_out) * g.c_in)));
  transform_filter(w, g.c_out, g.c_in, false, u.data());
  convolve(g.n, g.c_in, g.c_out, g.h_in, g.w_in, x, u.data(), false, bias, y);
}

// Its backward-data pass: dx = the convolution of dy with the flipped, channel-swapped filter.
template <class T>
void backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  auto& u = filter_scratch<T>();
  u.resize(static_cast<std::size_t>(16 * position_stride(static_cast<long>(g.c_out) * g.c_in)));
  transform_filter(w, g.c_out, g.c_in, true, u.data());
  convolve<T>(g.n, g.c_out, g.c_in, g.h_out, g.w_out, dy, u.data(), true, nullptr, dx);
}

}  // namespace winograd
}  // namespace cpu
}  // namespace dtn
