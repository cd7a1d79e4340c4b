#pragma once
// Per-channel reductions in double for the CPU backend (batch norm statistics and gradients, conv
// bias gradients), written so that the compiler can vectorise them.
//
// A channel of an NCHW tensor is n planes of hw contiguous values, plane i at i * stride. A plain
// `double acc; for (...) acc += p[j];` is one dependent add per element: the compiler may not
// reorder floating-point additions (no -ffast-math), so the loop runs at the add's latency, not
// its throughput (measured: batch norm's statistics were ~9% of a DTN step). These helpers keep
// kLanes independent double partial sums for the whole channel, element j of every plane going
// to lane j % kLanes, and add the lanes in a fixed order at the end: the summation order is fixed
// by the code (deterministic, independent of the thread count), every product and sum is still
// formed in double, and the lanes map onto SIMD registers (32 doubles = four AVX-512 registers,
// eight AVX2 ones, enough independent chains to hide the add's latency). The lanes run across the
// planes, so a 4x4 plane costs two vector adds, not a reduction of its own (summing each plane
// into a scalar first made batch norm on 4x4 planes latency-bound: ~8% of a DTN step, perf on
// the Intel Xeon host, 2026-12-02).
#include <cstddef>

namespace dtn {
namespace cpu {

constexpr int kLanes = 32;

inline double lanes_total(const double (&acc)[kLanes]) {
  double s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// Calls body(q, l) for every element q = i * stride + j (i < n, j < hw) in order of i, then j,
// with l = j % kLanes its lane; blocks of kLanes and of 8 have compile-time trip counts.
template <class Body>
inline void for_lanes(int n, long stride, long hw, Body&& body) {
  for (int i = 0; i < n; ++i) {
    const long off = static_cast<long>(i) * stride;
    long j = 0;
    for (; j + kLanes <= hw; j += kLanes)
      for (int k = 0; k < kLanes; ++k) body(off + j + k, k);
    for (; j + 8 <= hw; j += 8) {
      const int l = static_cast<int>(j % kLanes);
      for (int k = 0; k < 8; ++k) body(off + j + k, l + k);
    }
    for (; j < hw; ++j) body(off + j, static_cast<int>(j % kLanes));
  }
}

// sum of p over the channel
template <class T>
double sum_d(const T* p, int n, long stride, long hw) {
  double acc[kLanes] = {};
  for_lanes(n, stride, hw, [&](long q, int l) { acc[l] += static_cast<double>(p[q]); });
  return lanes_total(acc);
}

// sum of (p - c)^2 over the channel
template <class T>
double sum_sq_dev_d(const T* p, int n, long stride, long hw, double c) {
  double acc[kLanes] = {};
  for_lanes(n, stride, hw, [&](long q, int l) {
    const double d = static_cast<double>(p[q]) - c;
    acc[l] += d * d;
  });
  return lanes_total(acc);
}

// sum of a, and sum of a * (b - c), over the channel, in one pass; a(q) gives element q of a
template <class A, class T>
void sum_and_dot_dev_d(const A& a, const T* b, int n, long stride, long hw, double c, double& sum_a, double& dot) {
  double sa[kLanes] = {}, sd[kLanes] = {};
  for_lanes(n, stride, hw, [&](long q, int l) {
    const double v = static_cast<double>(a(q));
    sa[l] += v;
    sd[l] += v * (static_cast<double>(b[q]) - c);
  });
  sum_a = lanes_total(sa);
  dot = lanes_total(sd);
}

}  // namespace cpu
}  // namespace dtn
