#pragma once
// dtn's single-precision GEMM for x86-64 targets with AVX2 and FMA: the Goto/BLIS loop nest
// around a register micro-kernel, 8 x 48 elements of C with AVX-512 (three zmm registers per row)
// and 6 x 16 with AVX2 (two ymm registers per row).
//
// Why not Eigen: on an AMD EPYC (Zen 3) 2-core host Eigen 3.4's float GEMM (its 24x4 AVX2
// kernel) ran at ~62 GFLOP/s per core inside the DTN step, against ~95 GFLOP/s measured for a
// pure FMA loop on the same core; 63% of the step was that kernel (perf, 2026-12-02). And owning
// the packing lets the convolutions read dy and write y in place (matview.hpp), add the bias in
// the kernel's store and unfold small inputs inside the packing of B (UnfoldB in unfold.hpp).
// Double always goes through Eigen; DTN_NO_OWN_SGEMM sends float there too, and DTN_SGEMM_AVX2
// keeps the AVX2 kernel on an AVX-512 target (for comparisons).
//
//   C [m, n] = alpha * op(A) [m, k] * op(B) [k, n] + beta * C      (row-major, row strides ld*)
//
// Blocking: B is packed KC x NC at a time into column panels of NR = 16, A MC x KC at a time
// into row panels of MR (in L2). The micro-kernel reads NB panels of B side by side (NK = 16 NB
// columns of C) and sweeps the A panels; per k step it loads the NK values of B, broadcasts MR
// values of A and does MR x NK / (vector width) FMAs.
// - AVX-512: MR = 8, NB = 3, KC = 384: 24 accumulators of AVX-512's 32 registers, and 11 loads
//   per 24 FMAs, so that two FMA ports stay busy with two load ports. The earlier 16 x 16 kernel
//   (one B load and 16 broadcasts per 16 FMAs) was load-bound on an Intel Xeon with AVX-512 and
//   two FMA units: 149 GFLOP/s per core on a 1024^3 product against 192 for 8 x 48 and 187 for
//   Eigen's 48 x 4; KC 256 -> 384 gave ~1% on the DTN step (benchmarks/RESULTS.md, 2026-12-02).
// - AVX2: MR = 6, NB = 1, KC = 256: 12 accumulators of AVX2's 16 registers, 8 loads per 12 FMAs.
//
// Summation order: every element of C is the sum over k in increasing order, in float, KC terms
// per block and the blocks added in order; it does not depend on the thread count (threads split
// C's columns or rows, never k) nor on MR or NB, but on KC, so the AVX-512 and AVX2 builds may
// differ in the last bits. It differs from Eigen's order, so the two agree within float
// rounding, not bitwise. Two paths for small shapes keep the thread independence with orders of
// their own: B read in place (up to 64 rows; depth sub-blocks of 128) and dot products (A B^T
// with up to 12 columns: sums per vector lane, then across the lanes).
#include "parallel.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#include "matview.hpp"

#if defined(__AVX2__) && defined(__FMA__) && !defined(DTN_NO_OWN_SGEMM)
#define DTN_OWN_SGEMM 1
#if defined(__AVX512F__) && !defined(DTN_SGEMM_AVX2)
#define DTN_SGEMM_AVX512 1
#endif
#include <immintrin.h>

// Full unrolling of the micro-kernel's row loops, so that its accumulators stay in registers.
// (nvcc's front end rejects the pragma: see DTN_UNROLL_8 in unfold.hpp.)
#if defined(__CUDACC__)
#define DTN_SGEMM_UNROLL
#elif defined(__clang__)
#define DTN_SGEMM_UNROLL _Pragma("unroll")
#else
#define DTN_SGEMM_UNROLL _Pragma("GCC unroll 16")
#endif

// The micro-kernels stay functions of their own: when GCC inlined kernel_np<3> into the
// convolution's loop nest, its accumulators lost registers and the DTN step took 5% longer
// (Intel Xeon host, 2026-12-03).
#if defined(__GNUC__)
#define DTN_SGEMM_NOINLINE __attribute__((noinline))
#else
#define DTN_SGEMM_NOINLINE
#endif

namespace dtn {
namespace cpu {
namespace sgemm {

#if defined(DTN_SGEMM_AVX512)
constexpr int MR = 8, NB = 3, KC = 384;
#else
constexpr int MR = 6, NB = 1, KC = 256;
#endif
constexpr int NR = 16;       // columns of a packed B panel
constexpr int NK = NB * NR;  // columns of the micro-kernel's block of C: NB panels side by side
constexpr int MC = 144, NC = 3072;
static_assert(MC % MR == 0, "A blocks hold whole panels");

// A float buffer aligned to 64 bytes that only grows (per thread, reused across calls).
class Buffer {
 public:
  float* get(std::size_t n) {
    if (n > size_) {
      p_.reset(static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t(64))));
      size_ = n;
    }
    return p_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<float, Free> p_;
  std::size_t size_ = 0;
};

// Copies n contiguous floats, or zeros when src is null (the padding of a partial panel).
inline void copy_or_zero(const float* src, int n, float* d) {
  if (src)
    for (int r = 0; r < n; ++r) d[r] = src[r];
  else
    for (int r = 0; r < n; ++r) d[r] = 0.f;
}

// In-register transpose of 8 rows of 8 floats.
inline void transpose8(__m256& r0, __m256& r1, __m256& r2, __m256& r3, __m256& r4, __m256& r5, __m256& r6,
                       __m256& r7) {
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r0 = _mm256_permute2f128_ps(u0, u4, 0x20);
  r1 = _mm256_permute2f128_ps(u1, u5, 0x20);
  r2 = _mm256_permute2f128_ps(u2, u6, 0x20);
  r3 = _mm256_permute2f128_ps(u3, u7, 0x20);
  r4 = _mm256_permute2f128_ps(u0, u4, 0x31);
  r5 = _mm256_permute2f128_ps(u1, u5, 0x31);
  r6 = _mm256_permute2f128_ps(u2, u6, 0x31);
  r7 = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// The packing of W stored rows (W a multiple of 8), len values each: d[q*W + c] = src[c][q] for
// q < len, through 8x8 register transposes (the tail, len % 8 values, one by one). Packs B's
// panels (W = 16) when B is stored transposed, and A's panels of MR rows when A is not.
template <int W>
inline void pack_rows(const float* const* src, int len, float* d0) {
  static_assert(W % 8 == 0, "groups of 8 rows");
  int q = 0;
  for (; q + 8 <= len; q += 8)
    for (int h = 0; h < W / 8; ++h) {
      const float* const* s = src + 8 * h;
      __m256 r0 = _mm256_loadu_ps(s[0] + q), r1 = _mm256_loadu_ps(s[1] + q), r2 = _mm256_loadu_ps(s[2] + q),
             r3 = _mm256_loadu_ps(s[3] + q), r4 = _mm256_loadu_ps(s[4] + q), r5 = _mm256_loadu_ps(s[5] + q),
             r6 = _mm256_loadu_ps(s[6] + q), r7 = _mm256_loadu_ps(s[7] + q);
      transpose8(r0, r1, r2, r3, r4, r5, r6, r7);
      float* d = d0 + q * W + 8 * h;
      _mm256_storeu_ps(d, r0);
      _mm256_storeu_ps(d + W, r1);
      _mm256_storeu_ps(d + 2 * W, r2);
      _mm256_storeu_ps(d + 3 * W, r3);
      _mm256_storeu_ps(d + 4 * W, r4);
      _mm256_storeu_ps(d + 5 * W, r5);
      _mm256_storeu_ps(d + 6 * W, r6);
      _mm256_storeu_ps(d + 7 * W, r7);
    }
  for (; q < len; ++q)
    for (int c = 0; c < W; ++c) d0[q * W + c] = src[c][q];
}

// Packs rows [i0, i0 + mc) x depth [p0, p0 + kc) of op(A) into panels of MR rows: panel q holds,
// for each p, the MR values op(A)(i0 + q*MR + r, p0 + p) contiguously; rows past mc are zero.
// op(A)(i, p) is A(i, p), or A(p, i) when trans.
inline void pack_a(const MatView<const float>& A, bool trans, int i0, int p0, int mc, int kc, float* dst) {
  for (int ir = 0; ir < mc; ir += MR) {
    const int mr = std::min(MR, mc - ir), i = i0 + ir;
    if (trans) {  // MR values along a stored row per p: contiguous unless they cross a group
      const bool run = A.run(i, mr);
      for (int p = 0; p < kc; ++p) {
        float* d = dst + p * MR;
        if (run && mr == MR)
          std::memcpy(d, A.at(p0 + p, i), sizeof(float) * MR);
        else if (run)
          copy_or_zero(A.at(p0 + p, i), mr, d);
        else
          for (int r = 0; r < mr; ++r) d[r] = *A.at(p0 + p, i + r);
        copy_or_zero(nullptr, MR - mr, d + mr);
      }
    } else {  // MR stored rows, each contiguous in p within a group
      for (int p = 0; p < kc;) {
        const int len = static_cast<int>(std::min<long>(kc - p, A.hw - (p0 + p) % A.hw));  // to the group's end
        const float* rows[MR];
        for (int r = 0; r < MR; ++r) rows[r] = A.at(i + std::min(r, mr - 1), p0 + p);
        float* d = dst + p * MR;
        if (mr == MR) {
          if constexpr (MR % 8 == 0)
            pack_rows<MR>(rows, len, d);
          else
            for (int q = 0; q < len; ++q)
              for (int r = 0; r < MR; ++r) d[q * MR + r] = rows[r][q];
        } else {
          for (int q = 0; q < len; ++q)
            for (int r = 0; r < MR; ++r) d[q * MR + r] = r < mr ? rows[r][q] : 0.f;
        }
        p += len;
      }
    }
    dst += static_cast<long>(MR) * kc;
  }
}

// Packs depth [p0, p0 + kc) x columns [j0, j0 + nc) of op(B) into panels of NR columns: panel q
// holds, for each p, the NR values op(B)(p0 + p, j0 + q*NR + c) contiguously; columns past nc
// are zero. op(B)(p, j) is B(p, j), or B(j, p) when trans.
inline void pack_b(const MatView<const float>& B, bool trans, int p0, int j0, int kc, int nc, float* dst) {
  for (int jr = 0; jr < nc; jr += NR) {
    const int nr = std::min(NR, nc - jr), j = j0 + jr;
    if (!trans) {  // NR values along a stored row per p: contiguous unless they cross a group
      if (nr == NR && B.run(j, NR)) {
        const float* src = B.at(p0, j);
        for (int p = 0; p < kc; ++p, src += B.ld) {
          _mm256_store_ps(dst + p * NR, _mm256_loadu_ps(src));
          _mm256_store_ps(dst + p * NR + 8, _mm256_loadu_ps(src + 8));
        }
      } else {
        const float* col[NR];
        for (int c = 0; c < nr; ++c) col[c] = B.at(p0, j + c);
        for (int p = 0; p < kc; ++p) {
          float* d = dst + p * NR;
          for (int c = 0; c < nr; ++c) d[c] = col[c][p * B.ld];
          copy_or_zero(nullptr, NR - nr, d + nr);
        }
      }
    } else {  // NR stored rows, each contiguous in p within a group
      for (int p = 0; p < kc;) {
        const int len = static_cast<int>(std::min<long>(kc - p, B.hw - (p0 + p) % B.hw));
        const float* cols[NR];
        for (int c = 0; c < NR; ++c) cols[c] = B.at(j + std::min(c, nr - 1), p0 + p);
        float* d0 = dst + p * NR;
        if (nr == NR) {
          pack_rows<NR>(cols, len, d0);
        } else {
          for (int q = 0; q < len; ++q)
            for (int c = 0; c < NR; ++c) d0[q * NR + c] = c < nr ? cols[c][q] : 0.f;
        }
        p += len;
      }
    }
    dst += static_cast<long>(NR) * kc;
  }
}

// Where the micro-kernel's result goes: the mr x nr corner of the MR x NK block of C at (i, j),
// C = (accumulate ? C : 0) + alpha * acc (+ bias[r] for row r, when bias is set).
struct Tile {
  const MatView<float>* C;
  long i, j;
  int mr, nr;
  float alpha;
  bool accumulate;
  const float* bias;  // the block's first row's bias, or null

  // A full block whose NK columns are contiguous in C: stored from registers by the kernel.
  bool direct() const { return mr == MR && nr == NK && C->run(j, NK); }
  float* row(int r) const { return C->at(i + r, j); }
  float row_bias(int r) const { return bias && r < mr ? bias[r] : 0.f; }
  // Any other block: from a local copy of the accumulators, through per-column addresses.
  void store(const float (&tile)[MR][NK]) const {
    for (int jj = 0; jj < nr;) {  // runs of contiguous columns
      const int len = static_cast<int>(std::min<long>(nr - jj, C->hw - (j + jj) % C->hw));
      for (int r = 0; r < mr; ++r) {
        float* cr = C->at(i + r, j + jj);
        const float* tr = tile[r] + jj;
        if (accumulate)
          for (int q = 0; q < len; ++q) cr[q] += tr[q];
        else
          for (int q = 0; q < len; ++q) cr[q] = tr[q];
      }
      jj += len;
    }
  }
};

#if defined(DTN_SGEMM_AVX512)
// The micro-kernel on NP of B's panels: the MR x (NP*16) block acc = sum over p < kc of
// a[p*MR + r] * b(p, q*16 + c), stored as t says. b(p, q*16 + c) is b_q[p*16 + c] for packed
// panels, b_q = b + q*16*kc the q-th (a and b packed, 64-byte aligned). With InPlace, it is
// b[p*ldb + q*16 + c], B read where it is stored (gemm_serial_inplace), for the block's t.nr
// columns only (masked loads give the others 0, and t stores only t.nr columns); pf, when set,
// is prefetched row by row like b (the next strip of B).
// (One body for both: with the end of the kernel moved into a helper that took the accumulators
// by reference, the DTN step took 4% longer.)
template <int NP, bool InPlace>
DTN_SGEMM_NOINLINE void kernel_np(int kc, const float* a, const float* b, long ldb, const Tile& t, const float* pf) {
  __m512 acc[MR][NP];
  const long bstep = InPlace ? NR : static_cast<long>(NR) * kc;
  __mmask16 mk[NP];
  DTN_SGEMM_UNROLL
  for (int q = 0; q < NP; ++q) {
    const int c = std::min(NR, std::max(0, t.nr - q * NR));
    mk[q] = static_cast<__mmask16>((1u << c) - 1u);
  }
  const bool direct = NP == NB && t.direct();
  if (direct) {  // prefetch C's rows, read or written after the loop (0-10% on the Zen 4 host)
    DTN_SGEMM_UNROLL
    for (int r = 0; r < MR; ++r) {
      DTN_SGEMM_UNROLL
      for (int q = 0; q < NP; ++q) _mm_prefetch(reinterpret_cast<const char*>(t.row(r) + q * NR), _MM_HINT_T0);
    }
  }
  DTN_SGEMM_UNROLL
  for (int r = 0; r < MR; ++r) {
    DTN_SGEMM_UNROLL
    for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_setzero_ps();
  }
  for (int p = 0; p < kc; ++p) {
    __m512 bv[NP];
    DTN_SGEMM_UNROLL
    for (int q = 0; q < NP; ++q)
      bv[q] = InPlace ? _mm512_maskz_loadu_ps(mk[q], b + q * bstep) : _mm512_load_ps(b + q * bstep);
    if (InPlace && pf) {
      DTN_SGEMM_UNROLL
      for (int q = 0; q < NB; ++q) _mm_prefetch(reinterpret_cast<const char*>(pf + q * NR), _MM_HINT_T0);
      pf += ldb;
    }
    DTN_SGEMM_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r]);
      DTN_SGEMM_UNROLL
      for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_fmadd_ps(av, bv[q], acc[r][q]);
    }
    a += MR;
    b += InPlace ? ldb : NR;
  }
  const __m512 al = _mm512_set1_ps(t.alpha);
  DTN_SGEMM_UNROLL
  for (int r = 0; r < MR; ++r) {
    const __m512 bias = _mm512_set1_ps(t.row_bias(r));
    DTN_SGEMM_UNROLL
    for (int q = 0; q < NP; ++q) {
      if (t.alpha != 1.f) acc[r][q] = _mm512_mul_ps(acc[r][q], al);
      if (t.bias) acc[r][q] = _mm512_add_ps(acc[r][q], bias);
    }
  }
  if (direct) {
    DTN_SGEMM_UNROLL
    for (int r = 0; r < MR; ++r) {
      float* cr = t.row(r);
      DTN_SGEMM_UNROLL
      for (int q = 0; q < NP; ++q) {
        float* c = cr + q * NR;
        _mm512_storeu_ps(c, t.accumulate ? _mm512_add_ps(_mm512_loadu_ps(c), acc[r][q]) : acc[r][q]);
      }
    }
    return;
  }
  alignas(64) float tile[MR][NK];
  DTN_SGEMM_UNROLL
  for (int r = 0; r < MR; ++r) {
    DTN_SGEMM_UNROLL
    for (int q = 0; q < NP; ++q) _mm512_store_ps(tile[r] + q * NR, acc[r][q]);
  }
  t.store(tile);
}

// The micro-kernel for the block t names: on as many panels as its columns need (packed B, or
// B in place with ldb and pf as kernel_np says).
template <bool InPlace>
inline void kernel_for(int kc, const float* a, const float* b, long ldb, const Tile& t, const float* pf) {
  static_assert(NB >= 1 && NB <= 4, "1 to 4 panels per micro-kernel");
  const int np = (t.nr + NR - 1) / NR;
  if (np >= NB) return kernel_np<NB, InPlace>(kc, a, b, ldb, t, pf);
  if constexpr (NB > 1) { if (np == 1) return kernel_np<1, InPlace>(kc, a, b, ldb, t, pf); }
  if constexpr (NB > 2) { if (np == 2) return kernel_np<2, InPlace>(kc, a, b, ldb, t, pf); }
  if constexpr (NB > 3) { if (np == 3) return kernel_np<3, InPlace>(kc, a, b, ldb, t, pf); }
}
inline void kernel(int kc, const float* a, const float* b, const Tile& t) {
  kernel_for<false>(kc, a, b, NR, t, nullptr);
}
inline void kernel_inplace(int kc, const float* a, const float* b, long ldb, const Tile& t, const float* pf) {
  kernel_for<true>(kc, a, b, ldb, t, pf);
}
#else
// The micro-kernel: the 6x16 block acc = sum over p < kc of a[p*6 + r] * b(p, c), stored as t
// says. b(p, c) is b[p*16 + c] for a packed panel (32-byte aligned); with InPlace, b[p*ldb + c]
// for B where it is stored (gemm_serial_inplace), and columns past t.nr are not read (Masked:
// maskload gives them 0); pf, when set, is prefetched like b (the next strip of B in place).
template <bool InPlace, bool Masked>
DTN_SGEMM_NOINLINE void kernel_impl(int kc, const float* a, const float* b, long ldb, const Tile& t, const float* pf) {
  __m256i m0 = _mm256_setzero_si256(), m1 = m0;
  if constexpr (Masked) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(t.nr), lane);
    m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(t.nr - 8), lane);
  }
  const bool direct = t.direct();
  if (direct) {  // prefetch C's rows, read or written after the loop, as the AVX-512 kernel does
    DTN_SGEMM_UNROLL
    for (int r = 0; r < MR; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(t.row(r)), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(t.row(r) + NR - 1), _MM_HINT_T0);  // a row may span two lines
    }
  }
  __m256 acc[MR][2];
  DTN_SGEMM_UNROLL
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int p = 0; p < kc; ++p) {
    __m256 b0, b1;
    if constexpr (Masked) {
      b0 = _mm256_maskload_ps(b, m0);
      b1 = _mm256_maskload_ps(b + 8, m1);
    } else if constexpr (InPlace) {
      b0 = _mm256_loadu_ps(b);
      b1 = _mm256_loadu_ps(b + 8);
    } else {
      b0 = _mm256_load_ps(b);
      b1 = _mm256_load_ps(b + 8);
    }
    if constexpr (InPlace) {
      if (pf) {
        _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T0);
        pf += ldb;
      }
    }
    DTN_SGEMM_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
    }
    a += MR;
    b += InPlace ? ldb : NR;
  }
  const __m256 al = _mm256_set1_ps(t.alpha);
  DTN_SGEMM_UNROLL
  for (int r = 0; r < MR; ++r) {
    if (t.alpha != 1.f) {
      acc[r][0] = _mm256_mul_ps(acc[r][0], al);
      acc[r][1] = _mm256_mul_ps(acc[r][1], al);
    }
    if (t.bias) {
      const __m256 bv = _mm256_set1_ps(t.row_bias(r));
      acc[r][0] = _mm256_add_ps(acc[r][0], bv);
      acc[r][1] = _mm256_add_ps(acc[r][1], bv);
    }
  }
  if (direct) {
    DTN_SGEMM_UNROLL
    for (int r = 0; r < MR; ++r) {
      float* cr = t.row(r);
      __m256 v0 = acc[r][0], v1 = acc[r][1];
      if (t.accumulate) {
        v0 = _mm256_add_ps(_mm256_loadu_ps(cr), v0);
        v1 = _mm256_add_ps(_mm256_loadu_ps(cr + 8), v1);
      }
      _mm256_storeu_ps(cr, v0);
      _mm256_storeu_ps(cr + 8, v1);
    }
    return;
  }
  alignas(32) float tile[MR][NR];
  DTN_SGEMM_UNROLL
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(tile[r], acc[r][0]);
    _mm256_store_ps(tile[r] + 8, acc[r][1]);
  }
  t.store(tile);
}
inline void kernel(int kc, const float* a, const float* b, const Tile& t) {
  kernel_impl<false, false>(kc, a, b, NR, t, nullptr);
}
inline void kernel_inplace(int kc, const float* a, const float* b, long ldb, const Tile& t, const float* pf) {
  if (t.nr == NR)
    kernel_impl<true, false>(kc, a, b, ldb, t, pf);
  else
    kernel_impl<true, true>(kc, a, b, ldb, t, pf);
}
#endif

inline Buffer& a_buffer() {
  static thread_local Buffer b;
  return b;
}
inline Buffer& b_buffer() {
  static thread_local Buffer b;
  return b;
}

// The B operand as a stored matrix seen through a view (op(B) = B, or B^T when trans). Any type
// with the same pack() can stand for B in gemm_packed (the convolutions pack their unfolded input
// straight from the image: unfold.hpp).
struct ViewB {
  MatView<const float> v;
  bool trans;
  void pack(int p0, int j0, int kc, int nc, float* dst) const { pack_b(v, trans, p0, j0, kc, nc, dst); }
};

// The A operand seen through a view (op(A) = A, or A^T when trans): each block of MC x KC is
// packed into the calling thread's buffer when the loop nest reaches it.
struct ViewA {
  MatView<const float> v;
  bool trans;
  // The packed panels of rows [i0, i0 + mc) x depth [p0, p0 + kc): panel ir at + ir * kc.
  const float* block(int i0, int p0, int mc, int kc, float* scratch) const {
    pack_a(v, trans, i0, p0, mc, kc, scratch);
    return scratch;
  }
  static constexpr bool needs_scratch = true;
};

// Rows padded to whole panels, and the floats of op(A) [m, k] packed whole (PackedA).
inline long packed_rows(int m) { return (m + MR - 1) / MR * MR; }
inline long packed_a_size(int m, int k) { return packed_rows(m) * k; }

// op(A) [m, k] packed once, for a product that is run many times with the same A (a
// convolution's filter against each chunk of images): depth block pc holds the panels of all
// rows, panel ir of it at data + pc * packed_rows(m) + ir * kc, exactly as ViewA packs one block.
struct PackedA {
  const float* data;
  long rows;  // packed_rows(m)
  const float* block(int i0, int p0, int /*mc*/, int kc, float* /*scratch*/) const {
    return data + p0 * rows + static_cast<long>(i0) * kc;
  }
  static constexpr bool needs_scratch = false;
};

// Packs op(A) [m, k] (A on a view) into dst (packed_a_size(m, k) floats) for PackedA; the blocks
// in parallel unless called inside a parallel region.
inline PackedA pack_a_whole(const MatView<const float>& A, bool trans, int m, int k, float* dst) {
  const long rows = packed_rows(m);
  const int kblocks = (k + KC - 1) / KC, mblocks = (m + MC - 1) / MC;
  DTN_OMP(parallel for collapse(2) if (!omp_in_parallel() && static_cast<double>(m) * k > 65536.0))
  for (int pb = 0; pb < kblocks; ++pb)
    for (int ib = 0; ib < mblocks; ++ib) {
      const int pc = pb * KC, ic = ib * MC, kc = std::min(KC, k - pc);
      pack_a(A, trans, ic, pc, std::min(MC, m - ic), kc, dst + pc * rows + static_cast<long>(ic) * kc);
    }
  return PackedA{dst, rows};
}

// One thread: the full loop nest over rows [i0, i1) and columns [j0, j1) of C. beta is 0 or 1
// here (the caller scales C for other values). alpha multiplies each depth block's sum before it
// is added; the bias, when set, is added with the first depth block.
template <class PackA, class PackB>
void gemm_serial(int i0, int i1, int j0, int j1, int k, float alpha, const PackA& A, const PackB& B, bool beta_one,
                 const MatView<float>& C, const float* bias) {
  const int m = i1 - i0, n = j1 - j0;
  const int ncap = std::min(NC, (n + NR - 1) / NR * NR), kcap = std::min(KC, k);
  const int mcap = static_cast<int>(std::min<long>(MC, packed_rows(m)));
  float* bp = b_buffer().get(static_cast<std::size_t>(ncap) * kcap);
  float* scratch = PackA::needs_scratch ? a_buffer().get(static_cast<std::size_t>(mcap) * kcap) : nullptr;
  for (int jc = j0; jc < j1; jc += NC) {
    const int nc = std::min(NC, j1 - jc);
    for (int pc = 0; pc < k; pc += KC) {
      const int kc = std::min(KC, k - pc);
      B.pack(pc, jc, kc, nc, bp);
      for (int ic = i0; ic < i1; ic += MC) {
        const int mc = std::min(MC, i1 - ic);
        const float* ap = A.block(ic, pc, mc, kc, scratch);
        for (int jr = 0; jr < nc; jr += NK)
          for (int ir = 0; ir < mc; ir += MR) {
            const Tile t{&C, ic + ir, jc + jr, std::min(MR, mc - ir), std::min(NK, nc - jr), alpha,
                         beta_one || pc > 0, (bias && pc == 0) ? bias + ic + ir : nullptr};
            kernel(kc, ap + static_cast<long>(ir) * kc, bp + static_cast<long>(jr) * kc, t);
          }
      }
    }
  }
}

// B read where it is stored, for products with few rows: packing B copies all of it (a pass over
// B's memory and a write of as much) so that the kernel can then read each packed value
// packed_rows(m) / MR times from cache. With up to 64 rows the copy costs more than it saves
// (Intel Xeon host, 2026-12-03, batch 64, 2 threads): g.0's forward (m = 64, B its 4 MiB filter)
// took 22% less time in place, g.9's (16 rows) 23% less, D.0's data gradient (9) 25% less and
// f.0's (27) 33% less; pack_b had been half of the time of the last three. At 128 rows (f.3's
// forward through an explicit unfold, as on AMD hosts) in place was 2.6% slower, so the limit is
// 64. op(B) = B must be stored row by row (not transposed); each kernel call reads a strip of up
// to NK columns inside one of B's groups, with row stride B.ld, and prefetches the next strip
// while it reads this one (~8% on g.9). The strip is read once per row panel, in depth
// sub-blocks of kInplaceDepth rows (NK * 4 bytes * 128 = 24 KiB, which stays in L1 between the
// panels; a single panel is summed in the same sub-blocks, so that a thread's block of rows is
// summed as the whole product is). Each sub-block's sum is added to C on its own, as a KC block's
// is, so for k > 128 the last bits can differ from the packed path's; the order still depends
// only on the shape, not on the threads.
constexpr int kInplaceRows = 64, kInplaceDepth = 128;
template <class PackA>
void gemm_serial_inplace(int i0, int i1, int j0, int j1, int k, float alpha, const PackA& A,
                         const MatView<const float>& B, bool beta_one, const MatView<float>& C, const float* bias) {
  const int m = i1 - i0, kcap = std::min(KC, k);
  const int mcap = static_cast<int>(std::min<long>(MC, packed_rows(m)));
  float* scratch = PackA::needs_scratch ? a_buffer().get(static_cast<std::size_t>(mcap) * kcap) : nullptr;
  for (int pc = 0; pc < k; pc += KC) {
    const int kc = std::min(KC, k - pc);
    for (int ic = i0; ic < i1; ic += MC) {
      const int mc = std::min(MC, i1 - ic);
      const float* ap = A.block(ic, pc, mc, kc, scratch);
      for (int jr = j0; jr < j1;) {
        const int nr = static_cast<int>(std::min<long>(std::min(NK, j1 - jr), B.hw - jr % B.hw));
        const float* bp = B.at(pc, jr);
        const bool pf_next = jr + nr < j1 && B.run(jr, nr + 1);
        for (int pd = 0; pd < kc; pd += kInplaceDepth) {
          const int kd = std::min(kInplaceDepth, kc - pd);
          const bool first = pc == 0 && pd == 0;
          for (int ir = 0; ir < mc; ir += MR) {
            const Tile t{&C, ic + ir, jr, std::min(MR, mc - ir), nr, alpha, beta_one || !first,
                         (bias && first) ? bias + ic + ir : nullptr};
            kernel_inplace(kd, ap + static_cast<long>(ir) * kc + static_cast<long>(pd) * MR, bp + pd * B.ld, B.ld, t,
                           ir == 0 && pf_next ? bp + pd * B.ld + nr : nullptr);
          }
        }
        jr += nr;
      }
    }
  }
}

// Whether a product of m rows reads B in place (above): decided for the whole product, never for
// one thread's block of rows, since the two paths can round differently and the result must not
// depend on the thread count.
template <class PackB>
bool reads_b_in_place(int m, const PackB& B) {
  if constexpr (std::is_same<PackB, ViewB>::value) return !B.trans && packed_rows(m) <= kInplaceRows;
  (void)m, (void)B;
  return false;
}

// The loop nest for one thread's block of C: B in place (in_place, from reads_b_in_place) or packed.
template <class PackA, class PackB>
void gemm_block(bool in_place, int i0, int i1, int j0, int j1, int k, float alpha, const PackA& A, const PackB& B,
                bool beta_one, const MatView<float>& C, const float* bias) {
  if constexpr (std::is_same<PackB, ViewB>::value)
    if (in_place) return gemm_serial_inplace(i0, i1, j0, j1, k, alpha, A, B.v, beta_one, C, bias);
  gemm_serial(i0, i1, j0, j1, k, alpha, A, B, beta_one, C, bias);
}

// Whether a product outside a parallel region is worth splitting over the threads: 2^21 or more
// multiply-adds, or (for shallow products bound by memory traffic: D.9's at batch 64 touch 2 MiB
// for 1.5M multiply-adds) 2^18 or more floats of operands and result.
inline bool parallel_pays(int m, int n, int k) {
  const double work = static_cast<double>(m) * n * k;
  const double touched = static_cast<double>(m) * k + static_cast<double>(k) * n + static_cast<double>(m) * n;
  return work >= double(1 << 21) || touched >= double(1 << 18);
}

// C = alpha A B + beta C (+ bias[i] on row i, when bias is set), C on a view (matview.hpp),
// A [m, k] and B [k, n] given by their packers (ViewA or PackedA; ViewB or UnfoldB). Called
// inside a parallel region (the convolutions give each thread its own chunk) it runs on the
// calling thread; outside one, a product for which parallel_pays is split over the OpenMP
// threads by blocks of C's columns (or rows, when C is taller than wide), each thread running
// the serial loop nest on its block.
template <class PackA, class PackB>
void gemm_packed(int m, int n, int k, float alpha, const PackA& A, const PackB& B, float beta, const MatView<float>& C,
                 const float* bias = nullptr) {
  if (m <= 0 || n <= 0) return;
  const bool empty = k <= 0 || alpha == 0.f;
  if ((beta != 0.f && beta != 1.f) || (empty && (beta == 0.f || bias))) {
    // C = beta * C (exactly 0 for beta = 0: C is not read), plus the bias when no product adds it.
    // (With a product and beta 0 or 1 the micro-kernel writes or adds every element itself.)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n;) {
        const int len = static_cast<int>(std::min<long>(n - j, C.hw - j % C.hw));
        float* c = C.at(i, j);
        const float b = empty && bias ? bias[i] : 0.f;
        for (int q = 0; q < len; ++q) c[q] = (beta == 0.f ? 0.f : c[q] * beta) + b;
        j += len;
      }
  }
  if (empty) return;
  const bool beta_one = beta != 0.f, in_place = reads_b_in_place(m, B);
  const int threads = dtn::cpu::in_parallel() ? 1 : dtn::num_threads();
  const bool by_cols = n >= m;
  const int units = by_cols ? (n + NR - 1) / NR : (m + MR - 1) / MR;
  const int parts = parallel_pays(m, n, k) ? std::min(threads, units) : 1;
  if (parts <= 1) {
    gemm_block(in_place, 0, m, 0, n, k, alpha, A, B, beta_one, C, bias);
    return;
  }
  DTN_OMP(parallel num_threads(parts))
  {
    const int t = dtn::cpu::thread_num(), nt = dtn::cpu::team_size();
    const int u0 = static_cast<int>(static_cast<long>(units) * t / nt);
    const int u1 = static_cast<int>(static_cast<long>(units) * (t + 1) / nt);
    if (by_cols) {
      const int j0 = u0 * NR, j1 = std::min(n, u1 * NR);
      if (j1 > j0) gemm_block(in_place, 0, m, j0, j1, k, alpha, A, B, beta_one, C, bias);
    } else {
      const int i0 = u0 * MR, i1 = std::min(m, u1 * MR);
      if (i1 > i0) gemm_block(in_place, i0, i1, 0, n, k, alpha, A, B, beta_one, C, bias);
    }
  }
}

// ---- Products with few columns whose operands both run along the depth: C = A B^T
// C [m, n] = alpha A [m, k] B [n, k]^T + beta C (+ bias) with n small (a convolution's filter
// gradient for few unfolded rows, dw [c_out, c_in*kh*kw] = dy * cols^T: D.0's 9; D.9's forward,
// y [batch, 3] = x * w^T; a classifier's last Linear layer). The packed loop nest would copy all
// of A and B into panels and then fill most of its 48 columns with padding; here each element of
// C is a dot product of a row of A with a row of B, both read where they are stored: RI x RJ at
// a time (RI = RJ = 4: 16 accumulators, 8 loads per 16 FMAs), each kept as vector-lane partial
// sums over the depth and added across the lanes at the end. The summation order is fixed by k
// and the groups of the views (deterministic; threads split C's rows only), and differs from the
// packed kernel's, so the two agree within float rounding.
#if defined(DTN_SGEMM_AVX512)
struct DotVec {
  using V = __m512;
  static constexpr int W = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_first(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
  }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float sum(V v) { return _mm512_reduce_add_ps(v); }
};
#else
struct DotVec {
  using V = __m256;
  static constexpr int W = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_first(const float* p, int n) {
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(V v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
  }
};
#endif
// Up to 12 columns: D.0's filter gradient (9) took 20% less time than through the packed loop nest,
// g.9's (16) and f.0's (27) 10% more (Intel Xeon host, 2026-12-03).
constexpr int kDotRows = 4, kDotMaxCols = 12, kDotMinDepth = 64;

// Rows [i, i + RI) x columns [j, j + RJ) of C.
template <int RI, int RJ>
inline void dot_block(int i, int j, int k, float alpha, const MatView<const float>& A, const MatView<const float>& B,
                      bool accumulate, const MatView<float>& C, const float* bias) {
  using D = DotVec;
  typename D::V acc[RI][RJ];
  DTN_SGEMM_UNROLL
  for (int r = 0; r < RI; ++r) {
    DTN_SGEMM_UNROLL
    for (int c = 0; c < RJ; ++c) acc[r][c] = D::zero();
  }
  for (int p = 0; p < k;) {  // runs of the depth along which both rows are contiguous
    const int len = static_cast<int>(std::min<long>({static_cast<long>(k - p), A.hw - p % A.hw, B.hw - p % B.hw}));
    const float* a[RI];
    const float* b[RJ];
    DTN_SGEMM_UNROLL
    for (int r = 0; r < RI; ++r) a[r] = A.at(i + r, p);
    DTN_SGEMM_UNROLL
    for (int c = 0; c < RJ; ++c) b[c] = B.at(j + c, p);
    const auto step = [&](auto load) {
      typename D::V av[RI], bv[RJ];
      DTN_SGEMM_UNROLL
      for (int r = 0; r < RI; ++r) av[r] = load(a[r]);
      DTN_SGEMM_UNROLL
      for (int c = 0; c < RJ; ++c) bv[c] = load(b[c]);
      DTN_SGEMM_UNROLL
      for (int r = 0; r < RI; ++r) {
        DTN_SGEMM_UNROLL
        for (int c = 0; c < RJ; ++c) acc[r][c] = D::fma(av[r], bv[c], acc[r][c]);
      }
    };
    int q = 0;
    for (; q + D::W <= len; q += D::W) step([q](const float* x) { return D::load(x + q); });
    if (q < len) step([q, rest = len - q](const float* x) { return D::load_first(x + q, rest); });
    p += len;
  }
  DTN_SGEMM_UNROLL
  for (int r = 0; r < RI; ++r) {
    DTN_SGEMM_UNROLL
    for (int c = 0; c < RJ; ++c) {
      float* cp = C.at(i + r, j + c);
      const float v = alpha * D::sum(acc[r][c]) + (bias ? bias[i + r] : 0.f);
      *cp = accumulate ? *cp + v : v;
    }
  }
}

// Rows [i, i + RI) of C, in column blocks of at most 4 made as even as possible (n = 9: 3 + 3 + 3,
// not 4 + 4 + 1, whose last block would read A's rows again for a quarter of the work).
template <int RI>
inline void dot_row_block(int i, int n, int k, float alpha, const MatView<const float>& A,
                          const MatView<const float>& B, bool accumulate, const MatView<float>& C, const float* bias) {
  const int blocks = (n + 3) / 4;
  for (int b = 0, j = 0; b < blocks; ++b) {
    const int w = (n - j) / (blocks - b) + ((n - j) % (blocks - b) != 0);
    switch (w) {
      case 4: dot_block<RI, 4>(i, j, k, alpha, A, B, accumulate, C, bias); break;
      case 3: dot_block<RI, 3>(i, j, k, alpha, A, B, accumulate, C, bias); break;
      case 2: dot_block<RI, 2>(i, j, k, alpha, A, B, accumulate, C, bias); break;
      default: dot_block<RI, 1>(i, j, k, alpha, A, B, accumulate, C, bias); break;
    }
    j += w;
  }
}

// C = alpha A B^T + beta C (+ bias) for beta 0 or 1 (C not read for 0); rows of C split over
// the threads outside a parallel region when the product is large enough to pay for them.
inline void gemm_dot(int m, int n, int k, float alpha, const MatView<const float>& A, const MatView<const float>& B,
                     bool beta_one, const MatView<float>& C, const float* bias,
                     [[maybe_unused]] bool parallel) {  // read by the OpenMP clause only
  const int blocks = (m + kDotRows - 1) / kDotRows;
  DTN_OMP(parallel for schedule(static) if (parallel))
  for (int bi = 0; bi < blocks; ++bi) {
    const int i = bi * kDotRows;
    switch (std::min(kDotRows, m - i)) {
      case 4: dot_row_block<4>(i, n, k, alpha, A, B, beta_one, C, bias); break;
      case 3: dot_row_block<3>(i, n, k, alpha, A, B, beta_one, C, bias); break;
      case 2: dot_row_block<2>(i, n, k, alpha, A, B, beta_one, C, bias); break;
      default: dot_row_block<1>(i, n, k, alpha, A, B, beta_one, C, bias); break;
    }
  }
}

// C = alpha op(A) op(B) + beta C (+ bias), all on views.
inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const MatView<const float>& A,
                 const MatView<const float>& B, float beta, const MatView<float>& C, const float* bias = nullptr) {
  if (!trans_a && trans_b && n <= kDotMaxCols && k >= kDotMinDepth && m > 0 && alpha != 0.f &&
      (beta == 0.f || beta == 1.f)) {
    gemm_dot(m, n, k, alpha, A, B, beta != 0.f, C, bias, !dtn::cpu::in_parallel() && parallel_pays(m, n, k));
    return;
  }
  gemm_packed(m, n, k, alpha, ViewA{A, trans_a}, ViewB{B, trans_b}, beta, C, bias);
}

}  // namespace sgemm
}  // namespace cpu
}  // namespace dtn
#endif
