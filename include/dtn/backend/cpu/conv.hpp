#pragma once
// Convolution on the CPU: im2col + GEMM (gemm.hpp) over chunks of images.
//
// A chunk of images is unfolded into one column matrix cols [c_in*kh*kw, chunk*h_out*w_out], so
// that layers with tiny outputs (4x4, 1x1) still make GEMMs wide enough to run near the GEMM's
// peak. Chunks are processed in parallel, one per OpenMP thread, each with its own scratch
// buffer; inside a parallel region the GEMM runs single-threaded, so there is no
// oversubscription. Filter gradients accumulate per thread over a static range of chunks and are
// then added in thread order: deterministic for a given thread count.
// The unfold (im2col) and fold back (col2im) are in unfold.hpp, with vectorised float versions
// (AVX-512 or AVX2). Where the translation unit targets AVX-512F, or AVX2 and FMA, the forward
// product of layers with at most 32 unfolded rows (f.0, D.0) also has its own kernel
// (conv_small_k below). The forward and data passes of 3x3 stride-1 "same" convolutions (f.3-f.9)
// go through Winograd F(2x2, 3x3) instead (winograd.hpp): 2.25x fewer multiply-adds; those of
// 4x4 stride-2 convolutions that halve the plane (g's transposed convolutions) through F(2x2, 2x2)
// per parity (winograd_s2.hpp): 1.78x fewer; so does their filter pass. All three passes of 3x3
// stride-2 convolutions that halve the plane (D.3, D.6) run F(2x2, 2x2) per parity with the
// parities stacked in the GEMMs (winograd_s2k3.hpp): 1.44x fewer.
#include "parallel.hpp"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "../../core/memory.hpp"
#include "../backend.hpp"
#include "gemm.hpp"
#include "reduce.hpp"
#include "unfold.hpp"
#include "winograd.hpp"
#include "winograd_s2.hpp"
#include "winograd_s2k3.hpp"

namespace dtn {
namespace cpu {

// Images per chunk: enough columns for an efficient GEMM, but no fewer chunks than threads.
inline int conv_chunk(const ConvGeom& g) {
  const long hw = static_cast<long>(g.h_out) * g.w_out;
  const int threads = std::max(1, dtn::num_threads());
  int by_width = static_cast<int>(std::max<long>(1, (512 + hw - 1) / hw));
  int by_threads = std::max(1, (g.n + threads - 1) / threads);
  return std::max(1, std::min(by_width, by_threads));
}

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define DTN_SMALL_K 1
#endif
#if defined(DTN_SMALL_K)
// The forward GEMM of convolutions with few input channels (f.0: k = c_in*kh*kw = 27; D.0: 9),
// k <= 32, written straight into y: for each of the cnt images of a chunk,
//   y_i [m, hw] = bias (or 0) + A [m, k] * B [k, i*hw .. (i+1)*hw)   (B's rows have stride ldb).
// Eigen packs both operands for a product this shallow and reached 25-40% of its 1024^3 rate on
// these layers, and the result then took one more pass to reach y. Here 8 rows x 32 columns of
// y stay in 16 registers (started at the bias) while k broadcast-FMA steps read the packed filter
// and B in place; the sum over t runs in order 0..k-1 after the bias. dtn's packed GEMM
// (sgemm.hpp), which also writes y in place, packs both operands too: on the Zen 4 host
// (2026-12-02, batch 64, 2 threads, alternated) D.0's forward took 1.37-1.43 ms through it
// against 0.38-0.62 ms here.
//
// Loop order: a block of B's columns (k x jb, at most 16 KiB, so it stays in L1; D.0's whole
// image of 256 columns, f.0's 1024 in blocks of 128) is swept by one panel of 8 rows after the
// other, so that each row of y is written front to back. These products write far more than
// they read (D.0: 9 multiply-adds per float of y, 8 MiB of y at batch 64), so y's stores set
// the pace: written in 32-column strips down all the rows (the order before), D.0's forward
// stored ~19 GB/s on 1 thread where a plain store loop reaches ~30. With the rows written front
// to back, the filter packed with the bias in panels that one pointer walks (small_k_pack; read
// through A's row stride, the loop reloaded strides from the stack), the im2col scratch 64-byte
// aligned (AlignedAllocator), for k <= 16 the next panel's lines prefetched for writing while
// this one's FMAs run (f.0, bound by its FMAs, lost 7% to the prefetch), and the images unfolded
// one at a time (conv2d_forward_small_k), on the Intel Xeon host (2026-12-03, bench_dtn
// --only-layers, batch 64, best times) D.0's forward went from 0.43-0.44 to 0.31 ms on 1 thread
// and from 0.23-0.27 to 0.16 ms on 2, its memory time (benchmarks/RESULTS.md), and f.0's from
// 1.94-2.06 to 1.61 ms and from 1.03-1.10 to 0.92 ms.
//
// Without AVX-512 (AVX2 and FMA: laptops, AMD Zen 1-3) the same loop nest runs panels of 6 rows x
// 16 columns (12 accumulators of AVX2's 16 registers). Through the packed GEMM there, D.0's
// forward ran at 39-42% of Eigen's GEMM rate and 40% of its memory time (an -mavx2 -mfma build
// on the Intel Xeon host, 2026-12-03); see benchmarks/RESULTS.md for the figures with this path.
inline bool small_k_fits(long k) { return k <= 32; }
#if defined(__AVX512F__)
constexpr int kSmallKRows = 8, kSmallKCols = 32;  // a panel: rows of y x columns, in registers
#else
constexpr int kSmallKRows = 6, kSmallKCols = 16;
#endif
#if defined(__GNUC__) && !defined(__CUDACC__)
#define DTN_SMALL_K_UNROLL _Pragma("GCC unroll 8")
#else
#define DTN_SMALL_K_UNROLL
#endif
// The filter A [m, k] and the bias in panels of P = kSmallKRows rows, each (k + 1) * P floats:
// the P rows' biases (0 without a bias), then a[P + t*P + r] = A[i + r, t]; rows past m are 0.
inline long small_k_panel_size(int k) { return (k + 1) * static_cast<long>(kSmallKRows); }
// The floats small_k_pack writes for m rows.
inline long small_k_packed_size(int m, int k) { return (m + kSmallKRows - 1) / kSmallKRows * small_k_panel_size(k); }
inline void small_k_pack(int m, int k, const float* A, const float* bias, float* a) {
  constexpr int P = kSmallKRows;
  for (int i = 0; i < m; i += P) {
    for (int r = 0; r < P; ++r) *a++ = bias && i + r < m ? bias[i + r] : 0.f;
    for (int t = 0; t < k; ++t)
      for (int r = 0; r < P; ++r) *a++ = i + r < m ? A[static_cast<long>(i + r) * k + t] : 0.f;
  }
}
// One panel of P = kSmallKRows rows x C = kSmallKCols columns of y, from a panel of small_k_pack:
//   y[r, 0 .. C) = a[r] + sum over t < k of a[P + t*P + r] * b[t*ldb + 0 .. C)
// (y's rows have stride hw). Full: all P rows and C columns; otherwise `rows` of them and the
// first `left` columns (the others neither read nor written). pf, when set, is the first of
// pf_rows rows whose lines at these columns are prefetched for writing.
#if defined(__AVX512F__)
template <bool Full>
inline void small_k_panel(int k, const float* a, const float* b, long ldb, int left, float* y, long hw, int rows,
                          const float* pf, int pf_rows) {
  for (int r = 0; r < pf_rows; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(pf + r * hw), _MM_HINT_ET0);
    _mm_prefetch(reinterpret_cast<const char*>(pf + r * hw + 16), _MM_HINT_ET0);
  }
  const __mmask16 m0 = Full ? 0xffff : simd::lanes(0, std::min(16, left));
  const __mmask16 m1 = Full ? 0xffff : simd::lanes(0, std::max(0, left - 16));
  __m512 a0[8], a1[8];
  DTN_SMALL_K_UNROLL
  for (int r = 0; r < 8; ++r) a0[r] = a1[r] = _mm512_set1_ps(a[r]);
  a += 8;
  for (int t = 0; t < k; ++t, a += 8, b += ldb) {
    const __m512 b0 = Full ? _mm512_loadu_ps(b) : _mm512_maskz_loadu_ps(m0, b);
    const __m512 b1 = Full ? _mm512_loadu_ps(b + 16) : _mm512_maskz_loadu_ps(m1, b + 16);
    DTN_SMALL_K_UNROLL
    for (int r = 0; r < 8; ++r) {
      const __m512 av = _mm512_set1_ps(a[r]);
      a0[r] = _mm512_fmadd_ps(av, b0, a0[r]);
      a1[r] = _mm512_fmadd_ps(av, b1, a1[r]);
    }
  }
  DTN_SMALL_K_UNROLL
  for (int r = 0; r < 8; ++r) {
    if (Full) {
      _mm512_storeu_ps(y + r * hw, a0[r]);
      _mm512_storeu_ps(y + r * hw + 16, a1[r]);
    } else if (r < rows) {
      _mm512_mask_storeu_ps(y + r * hw, m0, a0[r]);
      _mm512_mask_storeu_ps(y + r * hw + 16, m1, a1[r]);
    }
  }
}
#else
template <bool Full>
inline void small_k_panel(int k, const float* a, const float* b, long ldb, int left, float* y, long hw, int rows,
                          const float* pf, int pf_rows) {
  for (int r = 0; r < pf_rows; ++r) _mm_prefetch(reinterpret_cast<const char*>(pf + r * hw), _MM_HINT_ET0);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 8), lane);
  __m256 a0[6], a1[6];
  DTN_SMALL_K_UNROLL
  for (int r = 0; r < 6; ++r) a0[r] = a1[r] = _mm256_set1_ps(a[r]);
  a += 6;
  for (int t = 0; t < k; ++t, a += 6, b += ldb) {
    const __m256 b0 = Full ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, m0);
    const __m256 b1 = Full ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, m1);
    DTN_SMALL_K_UNROLL
    for (int r = 0; r < 6; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      a0[r] = _mm256_fmadd_ps(av, b0, a0[r]);
      a1[r] = _mm256_fmadd_ps(av, b1, a1[r]);
    }
  }
  DTN_SMALL_K_UNROLL
  for (int r = 0; r < 6; ++r) {
    if (Full) {
      _mm256_storeu_ps(y + r * hw, a0[r]);
      _mm256_storeu_ps(y + r * hw + 8, a1[r]);
    } else if (r < rows) {
      _mm256_maskstore_ps(y + r * hw, m0, a0[r]);
      _mm256_maskstore_ps(y + r * hw + 8, m1, a1[r]);
    }
  }
}
#endif
// y [m, hw] of one image from its unfolded columns B [k, hw] (row stride ldb) and the filter and
// bias packed by small_k_pack. rows_ahead: the rows of y from this image's first on that the
// calling thread writes one after the other (its next images' rows follow this image's), so that
// the last panel's prefetch runs on into the next image.
inline void conv_small_k(int m, long hw, int k, const float* a, const float* B, long ldb, float* y, long rows_ahead) {
  constexpr int P = kSmallKRows, C = kSmallKCols;
  const long jb = std::min(hw, std::max(static_cast<long>(C), 4096L / k / C * C));  // k x jb floats <= 16 KiB
  const bool prefetch = k <= 16;
  for (long j0 = 0; j0 < hw; j0 += jb) {
    const long j1 = std::min(hw, j0 + jb);
    // with one column block, the sweep goes on with the next image; else with the next block
    const long rows_after = jb == hw ? rows_ahead : m;
    for (int i = 0; i < m; i += P) {
      const int rows = std::min(P, m - i);
      const int next = prefetch ? static_cast<int>(std::min<long>(P, std::max<long>(0, rows_after - i - P))) : 0;
      const float* ai = a + i / P * small_k_panel_size(k);
      for (long j = j0; j < j1; j += C) {
        const int left = static_cast<int>(std::min<long>(C, j1 - j));
        float* yij = y + i * hw + j;
        const float* pf = next ? yij + P * hw : nullptr;
        if (rows == P && left == C)
          small_k_panel<true>(k, ai, B + j, ldb, C, yij, hw, P, pf, next);
        else
          small_k_panel<false>(k, ai, B + j, ldb, left, yij, hw, rows, pf, next);
      }
    }
  }
}
#else
inline bool small_k_fits(long) { return false; }  // no conv_small_k without AVX2 and FMA
#endif

#if defined(DTN_OWN_SGEMM)
// The calling thread's buffer for a filter packed once per convolution call (sgemm::PackedA).
inline float* packed_filter(long floats) {
  static thread_local sgemm::Buffer b;
  return b.get(static_cast<std::size_t>(floats));
}
#endif

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
        threads(std::max(1, std::min(dtn::num_threads(), nchunks))) {}
};

// The column matrix of each thread, reused across calls (no allocation in the steady state).
template <class T>
struct ConvScratch {
  std::vector<std::vector<T, AlignedAllocator<T>>> cols;  // 64-byte aligned rows for the kernels
  void ensure(int threads, std::size_t ncols) {
    if (static_cast<int>(cols.size()) < threads) cols.resize(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t)
      if (cols[static_cast<std::size_t>(t)].size() < ncols) cols[static_cast<std::size_t>(t)].resize(ncols);
  }
};
template <class T>
ConvScratch<T>& conv_scratch(const ConvPlan& p) {
  static thread_local ConvScratch<T> s;
  s.ensure(p.threads, static_cast<std::size_t>(p.ckk * p.chunk * p.hw));
  return s;
}

// Images i0 .. i0 + cnt of an output-shaped tensor [n, c_out, hw] seen as one [c_out, cnt * hw]
// matrix (image i in columns [i*hw, (i+1)*hw)), in place: the GEMM reads dy and writes y through
// it, with no copy into or out of a column-ordered scratch matrix.
template <class T>
MatView<T> output_view(const ConvGeom& g, T* t, int i0, long hw) {
  return MatView<T>{t + static_cast<long>(i0) * g.c_out * hw, hw, hw, static_cast<long>(g.c_out) * hw};
}

// db[ch] += sum of dy [n, c, hw] over the batch and the pixels, accumulated in double: channels
// swept in blocks image by image as batch norm's are (reduce.hpp, channel_blocks), each channel's
// lanes taking its planes in order (the same bits whatever the thread count).
template <class T>
void bias_grad(int n, int c, long hw, const T* dy, T* db) {
  const int blocks = channel_blocks(n, c, hw, 1, sizeof(T), dtn::num_threads());
  for_channel_blocks<T>(n, c, hw, blocks, block_width(c, blocks) * kLanes, 0, [&](int c0, int nb, double* lanes, T*) {
    sum_block_planes(lanes, dy, n, c, hw, c0, nb);
    for (int k = 0; k < nb; ++k) db[c0 + k] += static_cast<T>(lanes_total(lanes + static_cast<std::size_t>(k) * kLanes));
  });
}
template <class T>
void bias_grad(const ConvGeom& g, const T* dy, T* db) {
  bias_grad(g.n, g.c_out, static_cast<long>(g.h_out) * g.w_out, dy, db);
}

#if defined(DTN_SMALL_K)
// The forward pass of a convolution with k = c_in*kh*kw <= 32 (float): each thread unfolds one
// image at a time into a buffer of its own (k x hw floats: 9 KiB for D.0, 108 KiB for f.0) just
// before sweeping it, so the columns stay in cache. Where the stores set the pace (k <= 16, with
// the prefetch for writing) each thread takes a contiguous range of images, and the prefetch runs
// on from each image into the next. Through the chunked im2col of the other layers (chunks of 2
// images for D.0, then of 7) it stopped at every chunk's end and the threads waited for each
// other at the end of the schedule: D.0's forward on 2 threads took 186 and then 176 us (medians,
// standalone driver, Intel Xeon host, 2026-12-03), now 157 us; chunks of a thread's whole share
// had been as fast on 2 threads but 10% slower on 1 (their columns no longer stayed in L2 beside
// y). f.0 (k = 27, bound by its FMAs) keeps a dynamic schedule: its static ranges ran up to 10%
// slower on 2 threads in a noisy hour.
inline void conv2d_forward_small_k(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y) {
  const int k = g.c_in * g.kh * g.kw, m = g.c_out;
  const long hw = static_cast<long>(g.h_out) * g.w_out, in_img = static_cast<long>(g.c_in) * g.h_in * g.w_in;
  static thread_local std::vector<float, AlignedAllocator<float>> panels;
  panels.resize(static_cast<std::size_t>(small_k_packed_size(m, k)));
  small_k_pack(m, k, w, bias, panels.data());
  const float* a = panels.data();
  const int threads = std::max(1, std::min(dtn::num_threads(), g.n));
  // one image's columns per thread, allocated here (an allocation failure inside the parallel
  // region could not be thrown out of it)
  ConvScratch<float>& s = conv_scratch<float>(ConvPlan(g));
  s.ensure(threads, static_cast<std::size_t>(k * hw));
  DTN_OMP(parallel num_threads(threads))
  {
    float* cols = s.cols[static_cast<std::size_t>(dtn::cpu::thread_num())].data();
    const auto image = [&](int img, long rows_ahead) {
      im2col(g, x + img * in_img, 1, in_img, cols, hw, 0);
      conv_small_k(m, hw, k, a, cols, hw, y + static_cast<long>(img) * m * hw, rows_ahead);
    };
    if (k <= 16) {  // bound by y's stores (conv_small_k prefetches): contiguous ranges
      const int t = dtn::cpu::thread_num(), nt = dtn::cpu::team_size();
      const int i0 = static_cast<int>(static_cast<long>(g.n) * t / nt);
      const int i1 = static_cast<int>(static_cast<long>(g.n) * (t + 1) / nt);
      for (int img = i0; img < i1; ++img) image(img, static_cast<long>(i1 - img) * m);
    } else {  // bound by the FMAs: images handed out one at a time, as the threads get free
      DTN_OMP(for schedule(dynamic, 1))
      for (int img = 0; img < g.n; ++img) image(img, m);
    }
  }
}
#endif

// A dense convolution (conv_is_dense, backend.hpp) is one GEMM over the flattened images
// (dense_conv_forward and the others, backend.hpp).
// Unfolding it image by image would write each column with a stride of the batch size, which
// thrashes the cache (measured 0.6 GFLOP/s on D's last layer), so it takes that path instead.

template <class T>
void conv2d_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y) {
  if (conv_is_dense(g)) {
    dense_conv_forward([](auto... a) { gemm<T>(a...); }, g, x, w, y);
    if (bias)
      for (int i = 0; i < g.n; ++i)
        for (int co = 0; co < g.c_out; ++co) y[static_cast<long>(i) * g.c_out + co] += bias[co];
    return;
  }
#if defined(DTN_SMALL_K)
  if constexpr (std::is_same<T, float>::value)
    if (small_k_fits(static_cast<long>(g.c_in) * g.kh * g.kw)) return conv2d_forward_small_k(g, x, w, bias, y);
#endif
  if (winograd::enabled() && winograd::fits(g)) return winograd::forward(g, x, w, bias, y);
  if (winograd::enabled() && winograd_s2::fits(g)) return winograd_s2::forward(g, x, w, bias, y);
  if (winograd::enabled() && winograd_s2k3::fits(g)) return winograd_s2k3::forward(g, x, w, bias, y);
  const ConvPlan p(g);
  const long hw = p.hw, ckk = p.ckk, in_img = p.in_img;
  const int chunk = p.chunk, nchunks = p.nchunks;
  bool packed_unfold = false;  // dtn's packed GEMM unfolds x inside its packing: no column matrix
#if defined(DTN_OWN_SGEMM)
  // The filter is packed once for all chunks (packing it per chunk was ~1.5% of a DTN step).
  sgemm::PackedA wp{nullptr, 0};
  if constexpr (std::is_same<T, float>::value) {
    const int k = static_cast<int>(ckk);
    wp = sgemm::pack_a_whole(plain_view(w, ckk), false, g.c_out, k, packed_filter(sgemm::packed_a_size(g.c_out, k)));
    packed_unfold = unfold_packable(g, chunk, in_img);
  }
#endif
  ConvScratch<T>* s = packed_unfold ? nullptr : &conv_scratch<T>(p);
  // y [c_out, cnt*hw] = bias + w [c_out, ckk] * unfold(x chunk)
  DTN_OMP(parallel for schedule(dynamic, 1) num_threads(p.threads))
  for (int ci = 0; ci < nchunks; ++ci) {
    const int i0 = ci * chunk, cnt = std::min(chunk, g.n - i0);
    const long ld = cnt * hw;
#if defined(DTN_OWN_SGEMM)
    if constexpr (std::is_same<T, float>::value)
      if (packed_unfold) {
        sgemm::gemm_packed(g.c_out, static_cast<int>(ld), static_cast<int>(ckk), 1.f, wp,
                           UnfoldB{g, x + i0 * in_img, in_img, false}, 0.f, output_view(g, y, i0, hw), bias);
        continue;
      }
#endif
    T* cols = s->cols[static_cast<std::size_t>(dtn::cpu::thread_num())].data();
    im2col(g, x + i0 * in_img, cnt, in_img, cols, ld, 0);
#if defined(DTN_OWN_SGEMM)
    if constexpr (std::is_same<T, float>::value) {
      const sgemm::ViewB b{plain_view<const float>(cols, ld), false};
      sgemm::gemm_packed(g.c_out, static_cast<int>(ld), static_cast<int>(ckk), 1.f, wp, b, 0.f,
                         output_view(g, y, i0, hw), bias);
      continue;
    }
#endif
    gemm_view<T>(false, false, g.c_out, static_cast<int>(ld), static_cast<int>(ckk), T(1), plain_view(w, ckk),
                 plain_view<const T>(cols, ld), T(0), output_view(g, y, i0, hw), bias);
  }
}

template <class T>
void conv2d_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  if (conv_is_dense(g)) {
    dense_conv_backward_data([](auto... a) { gemm<T>(a...); }, g, dy, w, dx);
    return;
  }
  if (winograd::enabled() && winograd::fits(g)) return winograd::backward_data(g, dy, w, dx);
  if (winograd::enabled() && winograd_s2::fits(g)) return winograd_s2::backward_data(g, dy, w, dx);
  if (winograd::enabled() && winograd_s2k3::fits(g)) return winograd_s2k3::backward_data(g, dy, w, dx);
  const ConvPlan p(g);
  const long hw = p.hw, ckk = p.ckk, in_img = p.in_img;
  const int chunk = p.chunk, nchunks = p.nchunks;
  ConvScratch<T>& s = conv_scratch<T>(p);
#if defined(DTN_OWN_SGEMM)
  // w^T packed once for all chunks: its rows are read down columns of w, a cache line and
  // often a page per packed value, and packing it per chunk was ~2% of a DTN step.
  sgemm::PackedA wt{nullptr, 0};
  if constexpr (std::is_same<T, float>::value)
    wt = sgemm::pack_a_whole(plain_view(w, ckk), true, static_cast<int>(ckk), g.c_out,
                             packed_filter(sgemm::packed_a_size(static_cast<int>(ckk), g.c_out)));
#endif
  DTN_OMP(parallel for schedule(dynamic, 1) num_threads(p.threads))
  for (int ci = 0; ci < nchunks; ++ci) {
    const int tid = dtn::cpu::thread_num();
    const int i0 = ci * chunk, cnt = std::min(chunk, g.n - i0);
    const long ld = cnt * hw;
    T* cols = s.cols[static_cast<std::size_t>(tid)].data();
    // cols [ckk, cnt*hw] = w^T [ckk, c_out] * dy [c_out, cnt*hw]
#if defined(DTN_OWN_SGEMM)
    if constexpr (std::is_same<T, float>::value)
      sgemm::gemm_packed(static_cast<int>(ckk), static_cast<int>(ld), g.c_out, 1.f, wt,
                         sgemm::ViewB{output_view(g, dy, i0, hw), false}, 0.f, plain_view(cols, ld));
    else
#endif
      gemm_view<T>(true, false, static_cast<int>(ckk), static_cast<int>(ld), g.c_out, T(1), plain_view(w, ckk),
                   output_view(g, dy, i0, hw), T(0), plain_view(cols, ld));
    T* dxc = dx + i0 * in_img;
    std::fill(dxc, dxc + cnt * in_img, T(0));
    col2im_add(g, cols, ld, 0, cnt, in_img, dxc);
  }
}

template <class T>
void conv2d_backward_filter(const ConvGeom& g, const T* x, const T* dy, T* dw, T* db) {
  if (conv_is_dense(g)) {
    dense_conv_backward_filter([](auto... a) { gemm<T>(a...); }, g, x, dy, dw);
    if (db) bias_grad(g, dy, db);
    return;
  }
  if (winograd::enabled() && winograd_s2::fits(g)) {
    winograd_s2::backward_filter(g, x, dy, dw);
    if (db) bias_grad(g, dy, db);
    return;
  }
  if (winograd::enabled() && winograd_s2k3::fits(g)) {
    winograd_s2k3::backward_filter(g, x, dy, dw);
    if (db) bias_grad(g, dy, db);
    return;
  }
  const ConvPlan p(g);
  const long hw = p.hw, ckk = p.ckk, in_img = p.in_img;
  const long wsize = g.c_out * ckk;
  const int chunk = p.chunk, nchunks = p.nchunks;
  bool packed_unfold = false;  // dtn's packed GEMM unfolds x inside its packing: no column matrix
#if defined(DTN_OWN_SGEMM)
  packed_unfold = std::is_same<T, float>::value && unfold_packable(g, chunk, in_img);
#endif
  ConvScratch<T>* s = packed_unfold ? nullptr : &conv_scratch<T>(p);
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
  DTN_OMP(parallel num_threads(p.threads))
  {
    const int tid = dtn::cpu::thread_num(), nt = dtn::cpu::team_size();
    DTN_OMP(single)
    used = nt;
    const int lo = static_cast<int>(static_cast<long>(nchunks) * tid / nt);
    const int hi = static_cast<int>(static_cast<long>(nchunks) * (tid + 1) / nt);
    T* acc = tid == 0 ? dw : part + (tid - 1) * wsize;
    T* cols = s ? s->cols[static_cast<std::size_t>(tid)].data() : nullptr;
    for (int ci = lo; ci < hi; ++ci) {
      const int i0 = ci * chunk, cnt = std::min(chunk, g.n - i0);
      const long ld = cnt * hw;
      // acc [c_out, ckk] (+)= dy [c_out, cnt*hw] * cols^T [cnt*hw, ckk]; a partial starts at 0
      const T beta = (tid == 0 || ci > lo) ? T(1) : T(0);
#if defined(DTN_OWN_SGEMM)
      if constexpr (std::is_same<T, float>::value)
        if (packed_unfold) {
          sgemm::gemm_packed(g.c_out, static_cast<int>(ckk), static_cast<int>(ld), 1.f,
                             sgemm::ViewA{output_view(g, dy, i0, hw), false}, UnfoldB{g, x + i0 * in_img, in_img, true},
                             beta, plain_view(acc, ckk));
          continue;
        }
#endif
      im2col(g, x + i0 * in_img, cnt, in_img, cols, ld, 0);
      gemm_view<T>(false, true, g.c_out, static_cast<int>(ckk), static_cast<int>(ld), T(1), output_view(g, dy, i0, hw),
                   plain_view<const T>(cols, ld), beta, plain_view(acc, ckk));
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
