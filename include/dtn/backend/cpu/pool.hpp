#pragma once
// 2x2, stride-2 max pooling of one image plane (f's pools), with the rule of every dtn max pool:
// the window is scanned row by row, a value replaces the current maximum when it is larger or
// NaN, and nothing replaces a NaN (the first maximum wins; NaN propagates). argmax is the index
// of the winner inside the plane.
#include <algorithm>
#include <type_traits>

#include "../backend.hpp"
#include "simd_avx2.hpp"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dtn {
namespace cpu {

template <class T>
void maxpool2x2_plane_generic(const PoolGeom& g, const T* xp, T* yp, int* ap) {
  for (int oh = 0; oh < g.h_out; ++oh) {
    const T* r0 = xp + (2 * oh) * g.w_in;
    const T* r1 = r0 + g.w_in;
    T* yr = yp + oh * g.w_out;
    int* ar = ap + oh * g.w_out;
    for (int ow = 0; ow < g.w_out; ++ow) {
      const T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
      T bv = a;
      int off = 0;
      const bool tb = !(b <= bv) & (bv == bv);
      bv = tb ? b : bv;
      off = tb ? 1 : off;
      const bool tc = !(c <= bv) & (bv == bv);
      bv = tc ? c : bv;
      off = tc ? g.w_in : off;
      const bool td = !(d <= bv) & (bv == bv);
      bv = td ? d : bv;
      off = td ? g.w_in + 1 : off;
      yr[ow] = bv;
      ar[ow] = (2 * oh) * g.w_in + 2 * ow + off;
    }
  }
}

#if defined(__AVX512F__)
// The same selects on 16 output columns at a time: two masked loads per input row, split into
// even and odd columns by one permute each, and three compare-and-blend steps. Identical
// results (values and argmax) to the generic loop; lanes beyond the row are never loaded.
inline void maxpool2x2_plane_simd(const PoolGeom& g, const float* xp, float* yp, int* ap) {
  // even: also the input column offset 2 * lane of each output lane
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i one = _mm512_set1_epi32(1), down = _mm512_set1_epi32(g.w_in), diag = _mm512_set1_epi32(g.w_in + 1);
  // Replaces bv by v where !(v <= bv) and bv is not NaN (the scalar rule); returns that mask.
  const auto take = [](__m512 v, __m512& bv) {
    const __mmask16 m = _mm512_cmp_ps_mask(v, bv, _CMP_NLE_UQ) & _mm512_cmp_ps_mask(bv, bv, _CMP_ORD_Q);
    bv = _mm512_mask_blend_ps(m, bv, v);
    return m;
  };
  for (int oh = 0; oh < g.h_out; ++oh) {
    const float* r0 = xp + (2 * oh) * g.w_in;
    const float* r1 = r0 + g.w_in;
    for (int ow0 = 0; ow0 < g.w_out; ow0 += 16) {
      const int n = std::min(16, g.w_out - ow0);
      const __mmask16 out = static_cast<__mmask16>((1u << n) - 1u);
      const int in = 2 * n;  // input columns 2*ow0 .. 2*ow0 + in of both rows
      const __mmask16 m0 = static_cast<__mmask16>((1u << std::min(in, 16)) - 1u);
      const __mmask16 m1 = static_cast<__mmask16>((1u << std::max(in - 16, 0)) - 1u);
      const float* p0 = r0 + 2 * ow0;
      const float* p1 = r1 + 2 * ow0;
      const __m512 lo0 = _mm512_maskz_loadu_ps(m0, p0), hi0 = _mm512_maskz_loadu_ps(m1, p0 + 16);
      const __m512 lo1 = _mm512_maskz_loadu_ps(m0, p1), hi1 = _mm512_maskz_loadu_ps(m1, p1 + 16);
      __m512 bv = _mm512_permutex2var_ps(lo0, even, hi0);  // a
      __m512i off = _mm512_setzero_si512();
      off = _mm512_mask_mov_epi32(off, take(_mm512_permutex2var_ps(lo0, odd, hi0), bv), one);   // b
      off = _mm512_mask_mov_epi32(off, take(_mm512_permutex2var_ps(lo1, even, hi1), bv), down);  // c
      off = _mm512_mask_mov_epi32(off, take(_mm512_permutex2var_ps(lo1, odd, hi1), bv), diag);   // d
      const __m512i base = _mm512_set1_epi32((2 * oh) * g.w_in + 2 * ow0);
      _mm512_mask_storeu_ps(yp + oh * g.w_out + ow0, out, bv);
      _mm512_mask_storeu_epi32(ap + oh * g.w_out + ow0, out, _mm512_add_epi32(_mm512_add_epi32(base, even), off));
    }
  }
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
// AVX2: the same selects on 8 output columns at a time (masked loads of 16 input columns per
// row, split into even and odd columns by a shuffle and a permute). Identical results to the
// generic loop; lanes beyond the row are never loaded. Measured 3-4x faster than the generic loop
// on f.0's and f.3's pools (AMD EPYC, Zen 3).
inline void maxpool2x2_plane_avx2(const PoolGeom& g, const float* xp, float* yp, int* ap) {
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);  // input column offset 2 * lane
  const __m256i one = _mm256_set1_epi32(1), down = _mm256_set1_epi32(g.w_in), diag = _mm256_set1_epi32(g.w_in + 1);
  // Replaces bv by v where !(v <= bv) and bv is not NaN (the scalar rule); returns that mask.
  const auto take = [](__m256 v, __m256& bv) {
    const __m256 m = _mm256_and_ps(_mm256_cmp_ps(v, bv, _CMP_NLE_UQ), _mm256_cmp_ps(bv, bv, _CMP_ORD_Q));
    bv = _mm256_blendv_ps(bv, v, m);
    return _mm256_castps_si256(m);
  };
  const auto lanes = [](int n) {  // the first n (<= 8, may be <= 0) lanes as a mask
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
  };
  for (int oh = 0; oh < g.h_out; ++oh) {
    const float* r0 = xp + (2 * oh) * g.w_in;
    const float* r1 = r0 + g.w_in;
    for (int ow0 = 0; ow0 < g.w_out; ow0 += 8) {
      const int n = std::min(8, g.w_out - ow0), in = 2 * n;  // input columns 2*ow0 .. 2*ow0 + in
      const __m256i m0 = lanes(in), m1 = lanes(in - 8);
      const float* p0 = r0 + 2 * ow0;
      const float* p1 = r1 + 2 * ow0;
      const __m256 lo0 = _mm256_maskload_ps(p0, m0), hi0 = _mm256_maskload_ps(p0 + 8, m1);
      const __m256 lo1 = _mm256_maskload_ps(p1, m0), hi1 = _mm256_maskload_ps(p1 + 8, m1);
      __m256 bv = avx2::evens(lo0, hi0);  // a
      __m256i off = _mm256_setzero_si256();
      off = _mm256_blendv_epi8(off, one, take(avx2::odds(lo0, hi0), bv));    // b
      off = _mm256_blendv_epi8(off, down, take(avx2::evens(lo1, hi1), bv));  // c
      off = _mm256_blendv_epi8(off, diag, take(avx2::odds(lo1, hi1), bv));   // d
      const __m256i idx = _mm256_add_epi32(_mm256_add_epi32(_mm256_set1_epi32((2 * oh) * g.w_in + 2 * ow0), even), off);
      avx2::store_first(yp + oh * g.w_out + ow0, n, bv);
      if (n == 8)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ap + oh * g.w_out + ow0), idx);
      else
        _mm256_maskstore_epi32(ap + oh * g.w_out + ow0, lanes(n), idx);
    }
  }
}
#endif

// The 2x2 plane pool: AVX-512 or AVX2 for float where compiled for it, the generic loop otherwise.
template <class T>
void maxpool2x2_plane(const PoolGeom& g, const T* xp, T* yp, int* ap) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) return maxpool2x2_plane_simd(g, xp, yp, ap);
#elif defined(__AVX2__)
  // (rows of fewer than 8 outputs, f.6's 8 -> 4 pool, measured no faster than the generic loop)
  if constexpr (std::is_same<T, float>::value)
    if (g.w_out >= 8) return maxpool2x2_plane_avx2(g, xp, yp, ap);
#endif
  maxpool2x2_plane_generic(g, xp, yp, ap);
}

}  // namespace cpu
}  // namespace dtn
