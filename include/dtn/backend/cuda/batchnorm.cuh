#pragma once
// Batch normalisation over (n, hw) per channel, and the bias gradient, on the channel grid of
// channel.cuh: (channel, slice) blocks reduce into per-slice partials, one thread per channel adds
// them in slice order, and a map applies the per-channel result. Statistics are two-pass (mean,
// then sum of squared deviations), accumulated in double, so results are deterministic and match
// the CPU reference's formulas (biased variance for the normalisation, unbiased for the running
// variance, PyTorch momentum convention). The per-channel values between the kernels live in the
// context's scratch buffer, so the whole op stays stream-ordered, host-free and capturable.
#include <cuda_runtime.h>

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
// each), then three doubles per channel.
inline std::size_t channel_scratch_bytes(const ChannelGrid& g) {
  return g.partials() * sizeof(SumPair) + 3 * static_cast<std::size_t>(g.c) * sizeof(double);
}
struct ChannelScratch {
  void* partials;
  double* stats;  // [3 * c]
};
inline ChannelScratch channel_scratch_at(const ChannelGrid& g, void* base) {
  return ChannelScratch{base, reinterpret_cast<double*>(static_cast<char*>(base) + g.partials() * sizeof(SumPair))};
}

template <class T>
struct ChannelValueTerm {
  const T* x;
  DTN_HD double operator()(std::size_t o, unsigned) const { return static_cast<double>(x[o]); }
};

template <class T>
struct SquaredDeviationTerm {
  const T* x;
  const double* mean;
  DTN_HD double operator()(std::size_t o, unsigned ch) const {
    const double d = static_cast<double>(x[o]) - mean[ch];
    return d * d;
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

struct MeanFinish {
  double m;
  double* mean;
  DTN_HD void operator()(unsigned ch, double total) const { mean[ch] = total / m; }
};

// From the sum of squared deviations: the normalisation y = x * a + b (a, b stored beside the
// mean), the saved statistics and the running ones.
template <class T>
struct BnStatsFinish {
  double m, eps, momentum;
  const T* gamma;
  const T* beta;
  T* running_mean;
  T* running_var;
  T* save_mean;
  T* save_invstd;
  double* stats;  // [mean | a | b], c each
  unsigned c;
  DTN_HD void operator()(unsigned ch, double sq) const {
    const double mean = stats[ch];
    const double var = sq / m;
    const double invstd = 1.0 / sqrt(var + eps);
    const double a = static_cast<double>(gamma[ch]) * invstd;
    stats[c + ch] = a;
    stats[2 * c + ch] = static_cast<double>(beta[ch]) - mean * a;
    save_mean[ch] = static_cast<T>(mean);
    save_invstd[ch] = static_cast<T>(invstd);
    const double unbiased = m > 1 ? sq / (m - 1) : var;
    running_mean[ch] = static_cast<T>((1 - momentum) * static_cast<double>(running_mean[ch]) + momentum * mean);
    running_var[ch] = static_cast<T>((1 - momentum) * static_cast<double>(running_var[ch]) + momentum * unbiased);
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

// dgamma += sum(dy * xhat), dbeta += sum(dy); stores sum(dy), sum(dy * xhat) and
// k = gamma * invstd / m for the dx map.
template <class T>
struct BnBackwardFinish {
  double m;
  const T* gamma;
  const T* save_invstd;
  T* dgamma;
  T* dbeta;
  double* stats;  // [sum dy | sum dy*xhat | k], c each
  unsigned c;
  DTN_HD void operator()(unsigned ch, SumPair s) const {
    dgamma[ch] += static_cast<T>(s.b);
    dbeta[ch] += static_cast<T>(s.a);
    stats[ch] = s.a;
    stats[c + ch] = s.b;
    stats[2 * c + ch] = static_cast<double>(gamma[ch]) * static_cast<double>(save_invstd[ch]) / m;
  }
};

// dx = k * (m * dz - sum(dz) - xhat * sum(dz * xhat)), dz as in DyXhatTerm.
template <class T, class Act>
struct BnBackwardApply {
  const T* x;
  const T* dy;
  const T* save_mean;
  const T* save_invstd;
  T* dx;
  const double* stats;
  unsigned c;
  double m;
  const T* y;
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
  DTN_HD At at(unsigned ch) const {
    return At{x,
              dy,
              dx,
              y,
              static_cast<double>(save_mean[ch]),
              static_cast<double>(save_invstd[ch]),
              stats[ch],
              stats[c + ch],
              stats[2 * c + ch],
              m,
              act};
  }
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
  double* partials = static_cast<double*>(sc.partials);
  double* mean = sc.stats;
  const double m = static_cast<double>(g.m);
  ex.partials(g, ChannelValueTerm<T>{x}, partials);
  ex.finish(g, static_cast<const double*>(partials), MeanFinish{m, mean});
  ex.partials(g, SquaredDeviationTerm<T>{x, mean}, partials);
  ex.finish(g, static_cast<const double*>(partials),
            BnStatsFinish<T>{m, eps, momentum, gamma, beta, running_mean, running_var, save_mean, save_invstd, sc.stats,
                             g.c});
  ex.map(g, AffineApply<T, Act>{x, y, sc.stats + g.c, sc.stats + 2 * static_cast<std::size_t>(g.c), act});
}

// y: the fused activation's output (not read for ops::Identity); dy: the gradient there.
template <class Exec, class T, class Act>
void bn_backward(const Exec& ex, const ChannelGrid& g, const T* x, const T* dy, const T* gamma, const T* save_mean,
                 const T* save_invstd, T* dx, T* dgamma, T* dbeta, void* scratch, const T* y, const Act& act) {
  const ChannelScratch sc = channel_scratch_at(g, scratch);
  auto* partials = static_cast<SumPair*>(sc.partials);
  const double m = static_cast<double>(g.m);
  ex.partials(g, DyXhatTerm<T, Act>{x, dy, save_mean, save_invstd, y, act}, partials);
  ex.finish(g, static_cast<const SumPair*>(partials),
            BnBackwardFinish<T>{m, gamma, save_invstd, dgamma, dbeta, sc.stats, g.c});
  if (dx) ex.map(g, BnBackwardApply<T, Act>{x, dy, save_mean, save_invstd, dx, sc.stats, g.c, m, y, act});
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
