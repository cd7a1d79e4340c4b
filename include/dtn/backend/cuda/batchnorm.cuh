#pragma once
// Batch normalisation over (n, hw) per channel, and the bias gradient, on the channel grid of
// channel.cuh: (channel, slice) blocks reduce into per-slice partials, and a finishing map
// (channel_finish_map_kernel) adds each channel's partials in slice order and applies the
// per-channel result: training-mode forward and backward are two kernels each. The statistics
// are one pass over x of shifted sums, sum(x - k) and sum((x - k)^2) with k the channel's first
// element, accumulated in double: the variance sum((x - k)^2) - sum(x - k)^2 / m then loses to
// cancellation only about (mean - k)^2 / var times double's rounding, far below float's for any
// data float can hold. Results are deterministic (a fixed order everywhere, no atomics) and agree
// with the CPU reference's two-pass formulas to float rounding (biased variance for the
// normalisation, unbiased for the running variance, PyTorch momentum convention). The per-channel
// partials live in the context's scratch buffer, so the whole op stays stream-ordered, host-free
// and capturable.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

#include "channel.cuh"
#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"
#include "../../core/macros.hpp"
#include "../../ops/functors.hpp"

namespace dtn {
namespace cuda {
namespace detail {

// Scratch for one batch-norm or bias op: `slices` partials per channel (room for a SumPair
// each), then two doubles per channel (the in-place forward's a and b).
inline std::size_t channel_scratch_bytes(const ChannelGrid& g) {
  return g.partials() * sizeof(SumPair) + 2 * static_cast<std::size_t>(g.c) * sizeof(double);
}
struct ChannelScratch {
  void* partials;
  double* stats;  // [2 * c]
};
inline ChannelScratch channel_scratch_at(const ChannelGrid& g, void* base) {
  return ChannelScratch{base, reinterpret_cast<double*>(static_cast<char*>(base) + g.partials() * sizeof(SumPair))};
}

template <class T>
struct ChannelValueTerm {
  const T* x;
  DTN_HD double operator()(std::size_t o, unsigned) const { return static_cast<double>(x[o]); }
};

// sum(x - k) and sum((x - k)^2), k = x at image 0, position 0 of the channel.
template <class T>
struct ShiftedSumsTerm {
  const T* x;
  unsigned hw;
  DTN_HD SumPair operator()(std::size_t o, unsigned ch) const {
    const double d = static_cast<double>(x[o]) - static_cast<double>(x[static_cast<std::size_t>(ch) * hw]);
    return SumPair{d, d * d};
  }
};

// sum(dz) and sum(dz * xhat), xhat = (x - mean) * invstd, dz = the gradient at batch norm's
// output: dy through the fused activation (ops::grad_at; dz = dy for ops::Identity).
template <class T, class Act>
struct DyXhatTerm {
  const T* x;
  const T* dy;
  const T* save_mean;
  const T* save_invstd;
  const T* y;  // the activation's output
  Act act;
  DTN_HD SumPair operator()(std::size_t o, unsigned ch) const {
    const double d = static_cast<double>(ops::grad_at(act, y, o, dy[o]));
    const double xhat = (static_cast<double>(x[o]) - static_cast<double>(save_mean[ch])) *
                        static_cast<double>(save_invstd[ch]);
    return SumPair{d, d * xhat};
  }
};

// y = act(x * a + b) per channel, the affine map in double (rounded to T before act).
template <class T, class Act>
struct AffineApply {
  const T* x;
  T* y;
  const double* a;
  const double* b;
  Act act;
  struct At {
    const T* x;
    T* y;
    double a, b;
    Act act;
    DTN_HD void operator()(std::size_t o) const {
      y[o] = act.forward(static_cast<T>(static_cast<double>(x[o]) * a + b));
    }
  };
  DTN_HD At at(unsigned ch) const { return At{x, y, a[ch], b[ch], act}; }
};

// Training-mode forward as a finishing map: the statistics from the shifted sums, the saved and
// running statistics stored once per channel, and y = act(x * a + b), a = gamma * invstd,
// b = beta - mean * a.
struct BnForwardCoeffs {
  double mean, invstd, unbiased, a, b;
};
template <class T, class Act>
struct BnForwardOp {
  const T* x;
  T* y;
  unsigned hw;
  double m, eps, momentum;
  const T* gamma;
  const T* beta;
  T* running_mean;
  T* running_var;
  T* save_mean;
  T* save_invstd;
  Act act;
  DTN_HD BnForwardCoeffs coeffs(unsigned ch, SumPair s) const {
    const double k = m > 0 ? static_cast<double>(x[static_cast<std::size_t>(ch) * hw]) : 0.0;
    const double dmean = s.a / m;
    double sq = s.b - s.a * dmean;  // sum of squared deviations from the mean
    if (sq < 0) sq = 0;             // rounding only
    const double var = sq / m;
    BnForwardCoeffs c;
    c.mean = k + dmean;
    c.invstd = 1.0 / sqrt(var + eps);
    c.unbiased = m > 1 ? sq / (m - 1) : var;
    c.a = static_cast<double>(gamma[ch]) * c.invstd;
    c.b = static_cast<double>(beta[ch]) - c.mean * c.a;
    return c;
  }
  DTN_HD void store(unsigned ch, const BnForwardCoeffs& c) const {
    save_mean[ch] = static_cast<T>(c.mean);
    save_invstd[ch] = static_cast<T>(c.invstd);
    running_mean[ch] = static_cast<T>((1 - momentum) * static_cast<double>(running_mean[ch]) + momentum * c.mean);
    running_var[ch] = static_cast<T>((1 - momentum) * static_cast<double>(running_var[ch]) + momentum * c.unbiased);
  }
  DTN_HD typename AffineApply<T, Act>::At at(const BnForwardCoeffs& c) const {
    return typename AffineApply<T, Act>::At{x, y, c.a, c.b, act};
  }
};

// A finishing map's coefficients and stores as a plain finish, keeping a and b in stats ([a | b],
// c each) for a separate map: batch norm's forward where y is x itself, whose first map block
// would overwrite the k that the channel's other blocks read.
template <class Op>
struct StoreAffineFinish {
  Op op;
  double* stats;
  unsigned c;
  DTN_HD void operator()(unsigned ch, SumPair total) const {
    const BnForwardCoeffs k = op.coeffs(ch, total);
    op.store(ch, k);
    stats[ch] = k.a;
    stats[c + ch] = k.b;
  }
};

// Evaluation mode: a and b from the running statistics, computed once per block.
template <class T, class Act>
struct BnEvalApply {
  const T* x;
  T* y;
  const T* gamma;
  const T* beta;
  const T* running_mean;
  const T* running_var;
  double eps;
  Act act;
  DTN_HD typename AffineApply<T, Act>::At at(unsigned ch) const {
    const double invstd = 1.0 / sqrt(static_cast<double>(running_var[ch]) + eps);
    const double a = static_cast<double>(gamma[ch]) * invstd;
    return typename AffineApply<T, Act>::At{x, y, a,
                                            static_cast<double>(beta[ch]) - static_cast<double>(running_mean[ch]) * a, act};
  }
};

// Evaluation-mode backward: dx = gamma / sqrt(running_var + eps) * dz.
template <class T, class Act>
struct BnEvalBackwardApply {
  const T* dy;
  T* dx;
  const T* gamma;
  const T* running_var;
  const T* y;
  double eps;
  Act act;
  struct At {
    const T* dy;
    T* dx;
    const T* y;
    double a;
    Act act;
    DTN_HD void operator()(std::size_t o) const {
      dx[o] = static_cast<T>(static_cast<double>(ops::grad_at(act, y, o, dy[o])) * a);
    }
  };
  DTN_HD At at(unsigned ch) const {
    return At{dy, dx, y, static_cast<double>(gamma[ch]) / sqrt(static_cast<double>(running_var[ch]) + eps), act};
  }
};

// Training-mode backward as a finishing map: dgamma += sum(dz * xhat), dbeta += sum(dz) stored
// once per channel, and dx = k * (m * dz - sum(dz) - xhat * sum(dz * xhat)), k = gamma * invstd
// / m, dz as in DyXhatTerm.
struct BnBackwardCoeffs {
  double mean, invstd, sdy, sdyx, k;
};
template <class T, class Act>
struct BnBackwardOp {
  const T* x;
  const T* dy;
  const T* gamma;
  const T* save_mean;
  const T* save_invstd;
  T* dx;
  T* dgamma;
  T* dbeta;
  const T* y;
  double m;
  Act act;
  struct At {
    const T* x;
    const T* dy;
    T* dx;
    const T* y;
    double mean, invstd, sdy, sdyx, k, m;
    Act act;
    DTN_HD void operator()(std::size_t o) const {
      const double xhat = (static_cast<double>(x[o]) - mean) * invstd;
      const double dz = static_cast<double>(ops::grad_at(act, y, o, dy[o]));
      dx[o] = static_cast<T>(k * (m * dz - sdy - xhat * sdyx));
    }
  };
  DTN_HD BnBackwardCoeffs coeffs(unsigned ch, SumPair s) const {
    const double invstd = static_cast<double>(save_invstd[ch]);
    return BnBackwardCoeffs{static_cast<double>(save_mean[ch]), invstd, s.a, s.b,
                            static_cast<double>(gamma[ch]) * invstd / m};
  }
  DTN_HD void store(unsigned ch, const BnBackwardCoeffs& c) const {
    dgamma[ch] += static_cast<T>(c.sdyx);
    dbeta[ch] += static_cast<T>(c.sdy);
  }
  DTN_HD At at(const BnBackwardCoeffs& c) const { return At{x, dy, dx, y, c.mean, c.invstd, c.sdy, c.sdyx, c.k, m, act}; }
};

// Only a finishing map's stores (batch norm's backward without dx).
template <class Op>
struct StoreFinish {
  Op op;
  DTN_HD void operator()(unsigned ch, SumPair total) const { op.store(ch, op.coeffs(ch, total)); }
};

template <class T>
struct BiasGradFinish {
  T* db;
  DTN_HD void operator()(unsigned ch, double total) const { db[ch] += static_cast<T>(total); }
};

// The ops' stages, written once for any executor (DeviceExec here; the host emulation of
// tests/cuda_host runs the same code on host arrays). `scratch` holds channel_scratch_bytes(g).
template <class Exec, class T, class Act>
void bn_forward_train(const Exec& ex, const ChannelGrid& g, double eps, double momentum, const T* x, const T* gamma,
                      const T* beta, T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd,
                      void* scratch, const Act& act) {
  const ChannelScratch sc = channel_scratch_at(g, scratch);
  auto* partials = static_cast<SumPair*>(sc.partials);
  const BnForwardOp<T, Act> op{x,    y,           g.hw,         static_cast<double>(g.m), eps, momentum, gamma,
                               beta, running_mean, running_var, save_mean,                save_invstd, act};
  ex.partials(g, ShiftedSumsTerm<T>{x, g.hw}, partials);
  if (static_cast<const void*>(x) != static_cast<const void*>(y)) {
    ex.finish_map(g, static_cast<const SumPair*>(partials), op);
  } else {  // in place: every block must read its channel's k before any block writes y
    ex.finish(g, static_cast<const SumPair*>(partials), StoreAffineFinish<BnForwardOp<T, Act>>{op, sc.stats, g.c});
    ex.map(g, AffineApply<T, Act>{x, y, sc.stats, sc.stats + g.c, act});
  }
}

// y: the fused activation's output (not read for ops::Identity); dy: the gradient there.
template <class Exec, class T, class Act>
void bn_backward(const Exec& ex, const ChannelGrid& g, const T* x, const T* dy, const T* gamma, const T* save_mean,
                 const T* save_invstd, T* dx, T* dgamma, T* dbeta, void* scratch, const T* y, const Act& act) {
  auto* partials = static_cast<SumPair*>(channel_scratch_at(g, scratch).partials);
  const BnBackwardOp<T, Act> op{x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, y, static_cast<double>(g.m), act};
  ex.partials(g, DyXhatTerm<T, Act>{x, dy, save_mean, save_invstd, y, act}, partials);
  if (dx)
    ex.finish_map(g, static_cast<const SumPair*>(partials), op);
  else
    ex.finish(g, static_cast<const SumPair*>(partials), StoreFinish<BnBackwardOp<T, Act>>{op});
}

// ---- The same on a batch of segments (each its own statistics; channel.cuh, SegmentGrids): one
// launch per stage for all of them, each segment's results bit for bit those of the ops above on
// it alone. save_mean, save_invstd: one row of c per segment. Scratch: seg_scratch_bytes(sg).
inline std::size_t seg_scratch_bytes(const SegmentGrids& sg) {
  return sg.partials() * sizeof(SumPair) + 2 * static_cast<std::size_t>(sg.g[0].c) * sg.count * sizeof(double);
}
template <class Exec, class T, class Act>
void bn_forward_train_seg(const Exec& ex, const SegmentGrids& sg, double eps, double momentum, const T* x,
                          const T* gamma, const T* beta, T* running_mean, T* running_var, T* y, T* save_mean,
                          T* save_invstd, void* scratch, const Act& act) {
  const unsigned c = sg.g[0].c;
  auto* partials = static_cast<SumPair*>(scratch);
  double* stats = reinterpret_cast<double*>(static_cast<char*>(scratch) + sg.partials() * sizeof(SumPair));
  PerSegment<ShiftedSumsTerm<T>> terms{};
  PerSegment<BnForwardOp<T, Act>> ops{};
  PerSegment<StoreAffineFinish<BnForwardOp<T, Act>>> finishes{};
  PerSegment<AffineApply<T, Act>> maps{};
  std::size_t off = 0;  // the segment's first element
  for (unsigned z = 0; z < sg.count; ++z) {
    const ChannelGrid& g = sg.g[z];
    terms.v[z] = ShiftedSumsTerm<T>{x + off, g.hw};
    ops.v[z] = BnForwardOp<T, Act>{x + off,     y + off,      g.hw,        static_cast<double>(g.m), eps,
                                   momentum,    gamma,        beta,        running_mean,             running_var,
                                   save_mean + static_cast<std::size_t>(z) * c, save_invstd + static_cast<std::size_t>(z) * c, act};
    double* st = stats + 2 * static_cast<std::size_t>(z) * c;
    finishes.v[z] = StoreAffineFinish<BnForwardOp<T, Act>>{ops.v[z], st, c};
    maps.v[z] = AffineApply<T, Act>{x + off, y + off, st, st + c, act};
    off += sg.numel(z);
  }
  ex.partials(sg, terms, partials);
  if (static_cast<const void*>(x) != static_cast<const void*>(y)) {
    ex.finish_map(sg, static_cast<const SumPair*>(partials), ops);
  } else {  // in place: as bn_forward_train
    ex.finish(sg, static_cast<const SumPair*>(partials), finishes);
    ex.map(sg, maps);
  }
}
template <class Exec, class T, class Act>
void bn_backward_seg(const Exec& ex, const SegmentGrids& sg, const T* x, const T* dy, const T* gamma,
                     const T* save_mean, const T* save_invstd, T* dx, T* dgamma, T* dbeta, void* scratch, const T* y,
                     const Act& act) {
  const unsigned c = sg.g[0].c;
  auto* partials = static_cast<SumPair*>(scratch);
  PerSegment<DyXhatTerm<T, Act>> terms{};
  PerSegment<BnBackwardOp<T, Act>> ops{};
  PerSegment<StoreFinish<BnBackwardOp<T, Act>>> finishes{};
  std::size_t off = 0;
  for (unsigned z = 0; z < sg.count; ++z) {
    const ChannelGrid& g = sg.g[z];
    const T* sm = save_mean + static_cast<std::size_t>(z) * c;
    const T* si = save_invstd + static_cast<std::size_t>(z) * c;
    const T* yz = y ? y + off : nullptr;
    terms.v[z] = DyXhatTerm<T, Act>{x + off, dy + off, sm, si, yz, act};
    ops.v[z] = BnBackwardOp<T, Act>{x + off, dy + off, gamma,  sm, si, dx ? dx + off : nullptr,
                                    dgamma,  dbeta,    yz,     static_cast<double>(g.m), act};
    finishes.v[z] = StoreFinish<BnBackwardOp<T, Act>>{ops.v[z]};
    off += sg.numel(z);
  }
  ex.partials(sg, terms, partials);
  if (dx)
    ex.finish_map(sg, static_cast<const SumPair*>(partials), ops);
  else
    ex.finish(sg, static_cast<const SumPair*>(partials), finishes);
}

// Any number of segments, kMaxSegments at a time; scratch(bytes) gives the scratch of each group.
template <class Exec, class Scratch, class T, class Act>
void bn_forward_train_segments(const Exec& ex, Scratch&& scratch, int count, const int* sizes, int c, long hw,
                               double eps, double momentum, const T* x, const T* gamma, const T* beta, T* running_mean,
                               T* running_var, T* y, T* save_mean, T* save_invstd, const Act& act) {
  for (int first = 0; first < count; first += static_cast<int>(kMaxSegments)) {
    const int k = std::min(count - first, static_cast<int>(kMaxSegments));
    const SegmentGrids sg = segment_grids(k, sizes + first, c, hw, "batchnorm_forward_train_segments");
    bn_forward_train_seg(ex, sg, eps, momentum, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd,
                         scratch(seg_scratch_bytes(sg)), act);
    const std::size_t step = sg.numel();
    x += step;
    y += step;
    save_mean += static_cast<std::size_t>(k) * c;
    save_invstd += static_cast<std::size_t>(k) * c;
  }
}
template <class Exec, class Scratch, class T, class Act>
void bn_backward_segments(const Exec& ex, Scratch&& scratch, int count, const int* sizes, int c, long hw, const T* x,
                          const T* dy, const T* gamma, const T* save_mean, const T* save_invstd, T* dx, T* dgamma,
                          T* dbeta, const T* y, const Act& act) {
  for (int first = 0; first < count; first += static_cast<int>(kMaxSegments)) {
    const int k = std::min(count - first, static_cast<int>(kMaxSegments));
    const SegmentGrids sg = segment_grids(k, sizes + first, c, hw, "batchnorm_backward_segments");
    bn_backward_seg(ex, sg, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, scratch(seg_scratch_bytes(sg)), y,
                    act);
    const std::size_t step = sg.numel();
    x += step;
    dy += step;
    if (dx) dx += step;
    if (y) y += step;
    save_mean += static_cast<std::size_t>(k) * c;
    save_invstd += static_cast<std::size_t>(k) * c;
  }
}

template <class Exec, class T>
void bias_grad(const Exec& ex, const ChannelGrid& g, const T* dy, T* db, void* scratch) {
  double* partials = static_cast<double*>(channel_scratch_at(g, scratch).partials);
  ex.partials(g, ChannelValueTerm<T>{dy}, partials);
  ex.finish(g, static_cast<const double*>(partials), BiasGradFinish<T>{db});
}

}  // namespace detail

template <class T, class Act = ops::Identity>
void batchnorm_forward_train(int n, int c, long hw, double eps, double momentum, const T* x, const T* gamma,
                             const T* beta, T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd,
                             Act act = Act{}) {
  if (c <= 0) return;
  const detail::ChannelGrid g = detail::channel_grid(n, c, hw, "batchnorm_forward_train");
  Context& ctx = context();
  detail::bn_forward_train(detail::DeviceExec{ctx.stream()}, g, eps, momentum, x, gamma, beta, running_mean,
                           running_var, y, save_mean, save_invstd, ctx.scratch(detail::channel_scratch_bytes(g)), act);
}

// Training-mode forward on `count` segments of sizes[z] images each, one after the other (in all
// n = their sum): each segment normalised with its own statistics, save_mean and save_invstd one
// row of c per segment, the running statistics updated once per segment, in order. Bit for bit
// batchnorm_forward_train on each segment in turn, in one launch per stage (per kMaxSegments).
template <class T, class Act = ops::Identity>
void batchnorm_forward_train_segments(int count, const int* sizes, int c, long hw, double eps, double momentum,
                                      const T* x, const T* gamma, const T* beta, T* running_mean, T* running_var, T* y,
                                      T* save_mean, T* save_invstd, Act act = Act{}) {
  if (c <= 0) return;
  Context& ctx = context();
  detail::bn_forward_train_segments(detail::DeviceExec{ctx.stream()}, [&](std::size_t b) { return ctx.scratch(b); },
                                    count, sizes, c, hw, eps, momentum, x, gamma, beta, running_mean, running_var, y,
                                    save_mean, save_invstd, act);
}

template <class T, class Act = ops::Identity>
void batchnorm_forward_eval(int n, int c, long hw, double eps, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, T* y, Act act = Act{}) {
  if (c <= 0 || n == 0 || hw == 0) return;  // nothing to normalise
  const detail::ChannelGrid g = detail::channel_grid(n, c, hw, "batchnorm_forward_eval");
  detail::DeviceExec{stream()}.map(g,
                                   detail::BnEvalApply<T, Act>{x, y, gamma, beta, running_mean, running_var, eps, act});
}

template <class T, class Act = ops::Identity>
void batchnorm_backward(int n, int c, long hw, const T* x, const T* dy, const T* gamma, const T* save_mean,
                        const T* save_invstd, T* dx, T* dgamma, T* dbeta, const T* y = nullptr, Act act = Act{}) {
  if (c <= 0) return;
  const detail::ChannelGrid g = detail::channel_grid(n, c, hw, "batchnorm_backward");
  Context& ctx = context();
  detail::bn_backward(detail::DeviceExec{ctx.stream()}, g, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta,
                      ctx.scratch(detail::channel_scratch_bytes(g)), y, act);
}

// Training-mode backward of batchnorm_forward_train_segments: dx per segment, dgamma and dbeta
// accumulating over the segments in order. Bit for bit batchnorm_backward on each segment in turn.
template <class T, class Act = ops::Identity>
void batchnorm_backward_segments(int count, const int* sizes, int c, long hw, const T* x, const T* dy, const T* gamma,
                                 const T* save_mean, const T* save_invstd, T* dx, T* dgamma, T* dbeta,
                                 const T* y = nullptr, Act act = Act{}) {
  if (c <= 0) return;
  Context& ctx = context();
  detail::bn_backward_segments(detail::DeviceExec{ctx.stream()}, [&](std::size_t b) { return ctx.scratch(b); }, count,
                               sizes, c, hw, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, y, act);
}

template <class T, class Act = ops::Identity>
void batchnorm_backward_eval(int n, int c, long hw, double eps, const T* dy, const T* gamma, const T* running_var,
                             T* dx, const T* y = nullptr, Act act = Act{}) {
  if (c <= 0 || n == 0 || hw == 0) return;  // nothing to do
  const detail::ChannelGrid g = detail::channel_grid(n, c, hw, "batchnorm_backward_eval");
  detail::DeviceExec{stream()}.map(g, detail::BnEvalBackwardApply<T, Act>{dy, dx, gamma, running_var, y, eps, act});
}

// db[ch] += sum over n and hw of dy (double accumulation).
template <class T>
void bias_backward(int n, int c, long hw, const T* dy, T* db) {
  if (c <= 0 || n == 0 || hw == 0) return;  // an empty sum adds nothing
  const detail::ChannelGrid g = detail::channel_grid(n, c, hw, "bias_backward");
  Context& ctx = context();
  detail::bias_grad(detail::DeviceExec{ctx.stream()}, g, dy, db, ctx.scratch(detail::channel_scratch_bytes(g)));
}

}  // namespace cuda
}  // namespace dtn
