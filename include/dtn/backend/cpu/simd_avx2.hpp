#pragma once
// Small AVX2 helpers shared by the CPU backend's vectorised float paths (unfold.hpp, pool.hpp):
// 8-lane masks for AVX2's masked loads and stores, and the even/odd lanes of a 16-lane pair.
// Empty unless the translation unit targets AVX2.
#include <algorithm>

#if defined(__AVX2__)
#include <immintrin.h>

namespace dtn {
namespace cpu {
namespace avx2 {
// The lanes of `bits` (bit q = lane q) as a maskload/maskstore/blendv mask.
inline __m256i mask8(unsigned bits) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), bit), bit);
}
// Bits [lo, hi) of an 8-lane mask, clamped to the 8 lanes.
inline unsigned bits(int lo, int hi) {
  lo = std::max(lo, 0);
  hi = std::min(hi, 8);
  return hi <= lo ? 0u : ((1u << hi) - 1u) & ~((1u << lo) - 1u);
}
// The even (odd) lanes of the 16-lane pair (lo, hi), in order.
inline __m256 evens(__m256 lo, __m256 hi) {
  const __m256 t = _mm256_shuffle_ps(lo, hi, 0x88);  // lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), 0xD8));
}
inline __m256 odds(__m256 lo, __m256 hi) {
  const __m256 t = _mm256_shuffle_ps(lo, hi, 0xDD);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), 0xD8));
}
// Stores the first n lanes of v (n <= 8).
inline void store_first(float* p, int n, __m256 v) {
  if (n == 8)
    _mm256_storeu_ps(p, v);
  else
    _mm256_maskstore_ps(p, mask8(bits(0, n)), v);
}
}  // namespace avx2
}  // namespace cpu
}  // namespace dtn
#endif
