#pragma once
// Batch normalisation over (n, hw) per channel, one block per channel. Statistics are two-pass
// (mean, then sum of squared deviations) in double with the fixed block tree of launch.cuh, so
// results are deterministic and match the CPU reference's formulas (biased variance for the
// normalisation, unbiased for the running variance, PyTorch momentum convention).
#include <cuda_runtime.h>

#include <cstddef>

#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"

namespace dtn {
namespace cuda {
namespace detail {

// Offset of element e (0 <= e < n*hw) of channel ch.
__device__ __forceinline__ std::size_t bn_offset(long e, int ch, int c, long hw) {
  const long img = e / hw, j = e % hw;
  return static_cast<std::size_t>((img * c + ch) * hw + j);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    bn_forward_train_kernel(int n, int c, long hw, double eps, double momentum, const T* x, const T* gamma,
                            const T* beta, T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd) {
  __shared__ double shared[kThreads];
  const int ch = static_cast<int>(blockIdx.x);
  const long m = static_cast<long>(n) * hw;
  const double md = static_cast<double>(m);
  double acc = 0;
  for (long e = threadIdx.x; e < m; e += kThreads) acc += static_cast<double>(x[bn_offset(e, ch, c, hw)]);
  const double mean = block_sum(acc, shared) / md;
  acc = 0;
  for (long e = threadIdx.x; e < m; e += kThreads) {
    const double d = static_cast<double>(x[bn_offset(e, ch, c, hw)]) - mean;
    acc += d * d;
  }
  const double sq = block_sum(acc, shared);
  const double var = sq / md;
  const double invstd = 1.0 / sqrt(var + eps);
  const double a = static_cast<double>(gamma[ch]) * invstd;
  const double b = static_cast<double>(beta[ch]) - mean * a;
  for (long e = threadIdx.x; e < m; e += kThreads) {
    const std::size_t o = bn_offset(e, ch, c, hw);
    y[o] = static_cast<T>(static_cast<double>(x[o]) * a + b);
  }
  if (threadIdx.x == 0) {
    save_mean[ch] = static_cast<T>(mean);
    save_invstd[ch] = static_cast<T>(invstd);
    const double unbiased = md > 1 ? sq / (md - 1) : var;
    running_mean[ch] = static_cast<T>((1 - momentum) * static_cast<double>(running_mean[ch]) + momentum * mean);
    running_var[ch] = static_cast<T>((1 - momentum) * static_cast<double>(running_var[ch]) + momentum * unbiased);
  }
}

template <class T>
__global__ void bn_forward_eval_kernel(std::size_t total, int c, long hw, double eps, const T* x, const T* gamma,
                                       const T* beta, const T* running_mean, const T* running_var, T* y) {
  for (std::size_t i = global_index(); i < total; i += grid_stride()) {
    const int ch = static_cast<int>((i / static_cast<std::size_t>(hw)) % static_cast<std::size_t>(c));
    const double invstd = 1.0 / sqrt(static_cast<double>(running_var[ch]) + eps);
    const double a = static_cast<double>(gamma[ch]) * invstd;
    const double b = static_cast<double>(beta[ch]) - static_cast<double>(running_mean[ch]) * a;
    y[i] = static_cast<T>(static_cast<double>(x[i]) * a + b);
  }
}

// dx = gamma*invstd/m * (m*dy - sum(dy) - xhat*sum(dy*xhat)); dgamma += sum(dy*xhat); dbeta += sum(dy).
template <class T>
__global__ void __launch_bounds__(kThreads)
    bn_backward_kernel(int n, int c, long hw, const T* x, const T* dy, const T* gamma, const T* save_mean,
                       const T* save_invstd, T* dx, T* dgamma, T* dbeta) {
  __shared__ double shared[kThreads];
  const int ch = static_cast<int>(blockIdx.x);
  const long m = static_cast<long>(n) * hw;
  const double md = static_cast<double>(m);
  const double mean = static_cast<double>(save_mean[ch]), invstd = static_cast<double>(save_invstd[ch]);
  double a_dy = 0, a_dyx = 0;
  for (long e = threadIdx.x; e < m; e += kThreads) {
    const std::size_t o = bn_offset(e, ch, c, hw);
    const double d = static_cast<double>(dy[o]);
    a_dy += d;
    a_dyx += d * ((static_cast<double>(x[o]) - mean) * invstd);
  }
  const double sdy = block_sum(a_dy, shared);
  const double sdyx = block_sum(a_dyx, shared);
  if (threadIdx.x == 0) {
    dgamma[ch] += static_cast<T>(sdyx);
    dbeta[ch] += static_cast<T>(sdy);
  }
  if (dx) {
    const double k = static_cast<double>(gamma[ch]) * invstd / md;
    for (long e = threadIdx.x; e < m; e += kThreads) {
      const std::size_t o = bn_offset(e, ch, c, hw);
      const double xhat = (static_cast<double>(x[o]) - mean) * invstd;
      dx[o] = static_cast<T>(k * (md * static_cast<double>(dy[o]) - sdy - xhat * sdyx));
    }
  }
}

// db[ch] += sum over n and hw of dy (double accumulation), one block per channel.
template <class T>
__global__ void __launch_bounds__(kThreads) bias_backward_kernel(int n, int c, long hw, const T* dy, T* db) {
  __shared__ double shared[kThreads];
  const int ch = static_cast<int>(blockIdx.x);
  const long m = static_cast<long>(n) * hw;
  double acc = 0;
  for (long e = threadIdx.x; e < m; e += kThreads) acc += static_cast<double>(dy[bn_offset(e, ch, c, hw)]);
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) db[ch] += static_cast<T>(total);
}

}  // namespace detail

template <class T>
void batchnorm_forward_train(int n, int c, long hw, double eps, double momentum, const T* x, const T* gamma,
                             const T* beta, T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd) {
  if (c <= 0) return;
  detail::bn_forward_train_kernel<<<static_cast<unsigned>(c), detail::kThreads, 0, stream()>>>(
      n, c, hw, eps, momentum, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void batchnorm_forward_eval(int n, int c, long hw, double eps, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, T* y) {
  const std::size_t total = static_cast<std::size_t>(n) * static_cast<std::size_t>(c) * static_cast<std::size_t>(hw);
  if (total == 0) return;
  detail::bn_forward_eval_kernel<<<detail::grid_for(total), detail::kThreads, 0, stream()>>>(
      total, c, hw, eps, x, gamma, beta, running_mean, running_var, y);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void batchnorm_backward(int n, int c, long hw, const T* x, const T* dy, const T* gamma, const T* save_mean,
                        const T* save_invstd, T* dx, T* dgamma, T* dbeta) {
  if (c <= 0) return;
  detail::bn_backward_kernel<<<static_cast<unsigned>(c), detail::kThreads, 0, stream()>>>(
      n, c, hw, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  DTN_CUDA_CHECK_LAUNCH();
}

template <class T>
void bias_backward(int n, int c, long hw, const T* dy, T* db) {
  if (c <= 0) return;
  detail::bias_backward_kernel<<<static_cast<unsigned>(c), detail::kThreads, 0, stream()>>>(n, c, hw, dy, db);
  DTN_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace dtn
