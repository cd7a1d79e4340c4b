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
// the Intel Xeon host, 2026-12-02). The planes of a channel are added one at a time (add_plane_*),
// so that a sweep can take a block of channels image by image (channel_blocks below).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "parallel.hpp"

namespace dtn {
namespace cpu {

constexpr int kLanes = 32;

inline double lanes_total(const double* acc) {
  double s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// Calls body(j, l) for j = 0 .. hw-1 of one plane in order, with l = j % kLanes its lane; blocks
// of kLanes and of 8 have compile-time trip counts.
template <class Body>
inline void for_lanes_plane(long hw, Body&& body) {
  long j = 0;
  for (; j + kLanes <= hw; j += kLanes)
    for (int k = 0; k < kLanes; ++k) body(j + k, k);
  for (; j + 8 <= hw; j += 8) {
    const int l = static_cast<int>(j % kLanes);
    for (int k = 0; k < 8; ++k) body(j + k, l + k);
  }
  for (; j < hw; ++j) body(j, static_cast<int>(j % kLanes));
}

// One plane of hw values added to the running lanes of its channel (NAcc arrays of kLanes
// doubles): body(a, j, l) adds element j into lanes a[.][l]. Adding a channel's planes in order
// gives the same bits however the planes of different channels are interleaved between, which is
// what lets a sweep take blocks of channels image by image (channel_blocks). The lanes in use
// are copied into a local array for the plane, so that they stay in registers whatever the
// compiler must assume of aliasing between acc and the data (double data may alias acc).
template <int NAcc, class Body>
inline void add_plane(double* const (&acc)[NAcc], long hw, Body&& body) {
  const int used = hw < kLanes ? static_cast<int>(hw) : kLanes;
  double a[NAcc][kLanes];
  for (int q = 0; q < NAcc; ++q)
    for (int k = 0; k < used; ++k) a[q][k] = acc[q][k];
  for_lanes_plane(hw, [&](long j, int l) { body(a, j, l); });
  for (int q = 0; q < NAcc; ++q)
    for (int k = 0; k < used; ++k) acc[q][k] = a[q][k];
}

// acc += the plane p (hw values), lane by lane
template <class T>
inline void add_plane_sum(double* acc, const T* p, long hw) {
  add_plane<1>({acc}, hw, [&](double (&a)[1][kLanes], long j, int l) { a[0][l] += static_cast<double>(p[j]); });
}
// lanes + k * kLanes = the lanes of the sum of channel c0 + k (k < nb) of an [n, c, hw] tensor x,
// its planes added image by image (a block of channel_blocks: batch norm's mean, a conv's bias
// gradient).
template <class T>
inline void sum_block_planes(double* lanes, const T* x, int n, int c, long hw, int c0, int nb) {
  std::fill(lanes, lanes + static_cast<std::size_t>(nb) * kLanes, 0.0);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < nb; ++k)
      add_plane_sum(lanes + static_cast<std::size_t>(k) * kLanes,
                    x + (static_cast<std::size_t>(i) * static_cast<std::size_t>(c) + static_cast<std::size_t>(c0 + k)) *
                            static_cast<std::size_t>(hw),
                    hw);
}
// acc += (p - c)^2 over the plane
template <class T>
inline void add_plane_sq_dev(double* acc, const T* p, long hw, double c) {
  add_plane<1>({acc}, hw, [&](double (&a)[1][kLanes], long j, int l) {
    const double d = static_cast<double>(p[j]) - c;
    a[0][l] += d * d;
  });
}
// sa += a and sd += a * (b - c) over the plane
template <class T>
inline void add_plane_sum_dot_dev(double* sa, double* sd, const T* a, const T* b, long hw, double c) {
  add_plane<2>({sa, sd}, hw, [&](double (&acc)[2][kLanes], long j, int l) {
    const double v = static_cast<double>(a[j]);
    acc[0][l] += v;
    acc[1][l] += v * (static_cast<double>(b[j]) - c);
  });
}

// How many blocks a per-channel sweep (batch norm in backend.hpp, conv bias gradients in conv.hpp)
// takes the channels in, block z of `blocks` being channels [z * c / blocks, (z + 1) * c / blocks)
// swept image by image: in NCHW a block's planes of one image are contiguous, so the sweep reads
// runs of the block's width * hw values, which the hardware prefetchers follow, where one channel
// alone is runs of hw values c * hw apart (64 bytes for 4x4 planes), read at the memory's latency
// (the channel-by-channel loops moved 4-11 GB/s with the data out of cache, the Intel Xeon host,
// 2026-12-04). For an [n, c, hw] tensor of elem-byte values with
// `tensors` tensors read or written per pass: blocks wide enough for one image's run of a block
// to be about kBlockRunBytes, narrow enough for the block's part of the tensors to stay within
// kBlockBytes (a 2 MiB L2) between passes, and as many as a multiple of `threads` where there
// are channels enough, so that the threads share them evenly. Tuned in DTN steps at batch 128 on
// the Intel Xeon host (2 threads, 2026-12-04; batch norm + ReLU forward and backward per step,
// ms): runs of 8-32 KiB in blocks of 2 MiB 35 + 58, of 1 MiB 34 + 67; blocks of 256 KiB were
// slower than one channel at a time (43 + 73).
constexpr double kBlockRunBytes = 8192, kBlockBytes = 2 << 20;
inline int channel_blocks(int n, int c, long hw, int tensors, std::size_t elem, int threads) {
  if (n < 1 || c < 1 || hw < 1) return 1;
  if (threads < 1) threads = 1;
  const double plane = static_cast<double>(hw) * static_cast<double>(elem);
  const double for_run = std::ceil(kBlockRunBytes / plane);
  const double fitting = std::floor(kBlockBytes / (plane * n * tensors));
  const double width = std::max(1.0, std::min(for_run, fitting));
  const long blocks = static_cast<long>(std::ceil(c / width));
  return static_cast<int>(std::min<long>(c, (blocks + threads - 1) / threads * threads));
}

// The calling thread's scratch of at least n values of U, grown when needed and kept for the
// next call (no allocation in the steady state, as conv.hpp's scratch); Slot tells apart two
// buffers of one type.
template <class U, int Slot>
U* thread_scratch(std::size_t n) {
  static thread_local std::vector<U> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// Calls body(c0, nb, doubles, values) for the `blocks` blocks of channels [c0, c0 + nb) of an
// [n, c, hw] tensor (widths at most one apart), blocks in parallel; doubles and values: this
// thread's scratch, of n_doubles doubles and n_values T (contents left from earlier calls).
// (n and hw are read by the OpenMP clause only.)
template <class T, class Body>
void for_channel_blocks([[maybe_unused]] int n, int c, [[maybe_unused]] long hw, int blocks, std::size_t n_doubles,
                        std::size_t n_values, Body&& body) {
  DTN_OMP(parallel if (static_cast<double>(n) * c * hw > 32768.0))
  {
    double* doubles = thread_scratch<double, 0>(n_doubles);
    T* values = thread_scratch<T, 1>(n_values);
    DTN_OMP(for schedule(static))
    for (int z = 0; z < blocks; ++z) {
      const int c0 = static_cast<int>(static_cast<long>(z) * c / blocks);
      const int c1 = static_cast<int>(static_cast<long>(z + 1) * c / blocks);
      body(c0, c1 - c0, doubles, values);
    }
  }
}
// the widest of `blocks` blocks of c channels
inline std::size_t block_width(int c, int blocks) { return static_cast<std::size_t>((c + blocks - 1) / blocks); }

}  // namespace cpu
}  // namespace dtn
