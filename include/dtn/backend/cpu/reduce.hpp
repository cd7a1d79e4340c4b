#pragma once
// Row reductions in double for the CPU backend, written so that the compiler can vectorise them.
//
// A plain `double acc; for (...) acc += p[j];` is one dependent add per element: the compiler may
// not reorder floating-point additions (no -ffast-math), so the loop runs at the add's latency,
// not its throughput (measured: batch norm's statistics were ~9% of a DTN step). These helpers
// keep kLanes independent double partial sums, element j going to lane j % kLanes, and add the
// lanes in a fixed order at the end: the summation order is fixed by the code (deterministic,
// independent of the thread count), every product and sum is still formed in double, and the
// lanes map onto SIMD registers (8 doubles = one AVX-512 register, two AVX2 registers).
#include <cstddef>

namespace dtn {
namespace cpu {

constexpr int kLanes = 8;

template <int L = kLanes>
inline double lanes_total(const double (&acc)[L]) {
  double s = 0;
  for (int k = 0; k < L; ++k) s += acc[k];
  return s;
}

// sum_j p[j]
template <class T>
double sum_d(const T* p, long n) {
  double acc[kLanes] = {};
  long j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += static_cast<double>(p[j + k]);
  for (; j < n; ++j) acc[j % kLanes] += static_cast<double>(p[j]);
  return lanes_total(acc);
}

// sum_j (p[j] - c)^2
template <class T>
double sum_sq_dev_d(const T* p, long n, double c) {
  double acc[kLanes] = {};
  long j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const double d = static_cast<double>(p[j + k]) - c;
      acc[k] += d * d;
    }
  for (; j < n; ++j) {
    const double d = static_cast<double>(p[j]) - c;
    acc[j % kLanes] += d * d;
  }
  return lanes_total(acc);
}

// sum_j a[j] * (b[j] - c)
template <class T>
double dot_dev_d(const T* a, const T* b, long n, double c) {
  double acc[kLanes] = {};
  long j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += static_cast<double>(a[j + k]) * (static_cast<double>(b[j + k]) - c);
  for (; j < n; ++j) acc[j % kLanes] += static_cast<double>(a[j]) * (static_cast<double>(b[j]) - c);
  return lanes_total(acc);
}

}  // namespace cpu
}  // namespace dtn
