#pragma once
// Losses (mse, total variation, softmax cross-entropy) and argmax over rows. The scalar loss is
// written to device memory by the deterministic two-pass reduction of reduce.cuh; gradients are
// written in the same pass (mse, cross-entropy) or by a gather map (total variation), so
// nothing waits for the host and no atomics are used. Arithmetic is in double, as in the CPU
// reference; products and sums that decide a stored value use rn.cuh's round-to-nearest
// operations so the compiler does not fuse them into FMAs the CPU reference does not do.
//
// Each op is written once against an executor (the *_on functions): DeviceFlatExec launches the
// kernels; the host emulation in tests/cuda_host runs the same terms and maps over every block
// and thread and compares with Backend<Cpu>, without a GPU.
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>

#include "../../core/macros.hpp"
#include "check.cuh"
#include "context.cuh"
#include "launch.cuh"
#include "reduce.cuh"
#include "rn.cuh"

namespace dtn {
namespace cuda {
namespace detail {

// total / divisor, converted to Out (mean over the batch or over the elements).
template <class Out>
struct DivideTo {
  double divisor;
  DTN_HD Out operator()(double total) const { return static_cast<Out>(total / divisor); }
};

template <class T>
struct MseTerm {
  const T* a;
  const T* b;
  T* grad;          // may be null
  double grad_mul;  // 2 * grad_scale / n
  DTN_HD double operator()(std::size_t i) const {
    const double d = add_rn(static_cast<double>(a[i]), -static_cast<double>(b[i]));
    if (grad) grad[i] = static_cast<T>(mul_rn(grad_mul, d));
    return mul_rn(d, d);
  }
};

// Forward differences at (row, col) of one plane; 0 past the last row/column.
template <class T>
struct TvAt {
  const T* z;
  int h, w;
  double eps;
  // Returns s = sqrt(dh^2 + dv^2 + eps) and the two differences.
  DTN_HD double operator()(const T* plane, int row, int col, double& dh, double& dv) const {
    const double v = static_cast<double>(plane[row * w + col]);
    dh = col + 1 < w ? add_rn(static_cast<double>(plane[row * w + col + 1]), -v) : 0.0;
    dv = row + 1 < h ? add_rn(static_cast<double>(plane[(row + 1) * w + col]), -v) : 0.0;
    return sqrt(add_rn(add_rn(mul_rn(dh, dh), mul_rn(dv, dv)), eps));
  }
};

template <class T>
struct TvTerm {
  TvAt<T> at;
  DTN_HD double operator()(std::size_t i) const {
    const std::size_t plane_size = static_cast<std::size_t>(at.h) * at.w;
    const int o = static_cast<int>(i % plane_size);
    double dh, dv;
    return at(at.z + (i - o), o / at.w, o % at.w, dh, dv);
  }
};

// grad(i, j) gathers, in the CPU's order: the dv term of the pixel above, the dh term of the pixel
// to the left, then its own term.
template <class T>
struct TvGradOp {
  TvAt<T> at;
  double k;
  T* grad;
  DTN_HD void operator()(std::size_t i) const {
    const std::size_t plane_size = static_cast<std::size_t>(at.h) * at.w;
    const int o = static_cast<int>(i % plane_size);
    const int row = o / at.w, col = o % at.w;
    const T* plane = at.z + (i - o);
    double dh, dv, s;
    T acc = T(0);
    if (row > 0) {
      s = at(plane, row - 1, col, dh, dv);
      acc += static_cast<T>(div_rn(mul_rn(k, dv), s));
    }
    if (col > 0) {
      s = at(plane, row, col - 1, dh, dv);
      acc += static_cast<T>(div_rn(mul_rn(k, dh), s));
    }
    s = at(plane, row, col, dh, dv);
    acc += static_cast<T>(div_rn(mul_rn(-k, add_rn(dh, dv)), s));
    grad[i] = acc;
  }
};

// One row of logits per index: returns lse - logit[target] and writes the row's gradient. A target
// outside [0, k) gives NaN (loss and gradient row), which count_nonfinite then reports; the
// kernel cannot throw.
template <class T>
struct CrossEntropyTerm {
  const T* logits;
  const int* targets;
  T* dlogits;  // may be null
  int k;
  double grad_mul;  // grad_scale / n
  DTN_HD double operator()(std::size_t i) const {
    const T* l = logits + i * static_cast<std::size_t>(k);
    const int t = targets[i];
    if (t < 0 || t >= k) {
      const double nan = quiet_nan();
      if (dlogits)
        for (int j = 0; j < k; ++j) dlogits[i * static_cast<std::size_t>(k) + j] = static_cast<T>(nan);
      return nan;
    }
    double mx = static_cast<double>(l[0]);
    for (int j = 1; j < k; ++j) mx = fmax(mx, static_cast<double>(l[j]));
    double se = 0;
    for (int j = 0; j < k; ++j) se += exp(add_rn(static_cast<double>(l[j]), -mx));
    const double lse = add_rn(mx, log(se));
    const double lt = static_cast<double>(l[t]);  // read before dlogits is written: it may be logits
    if (dlogits) {
      T* d = dlogits + i * static_cast<std::size_t>(k);
      for (int j = 0; j < k; ++j) {
        const double p = exp(add_rn(static_cast<double>(l[j]), -lse));
        d[j] = static_cast<T>(mul_rn(grad_mul, add_rn(p, j == t ? -1.0 : 0.0)));
      }
    }
    return add_rn(lse, -lt);
  }
};

// std::max_element semantics: the first index whose value no later value exceeds.
template <class T>
struct ArgmaxRowsOp {
  int k;
  const T* logits;
  int* out;
  DTN_HD void operator()(std::size_t i) const {
    const T* l = logits + i * static_cast<std::size_t>(k);
    int best = 0;
    for (int j = 1; j < k; ++j)
      if (l[best] < l[j]) best = j;
    out[i] = best;
  }
};

// loss = mean((a - b)^2); grad_a = grad_scale * 2 (a - b) / n.
template <class Exec, class T>
void mse_on(const Exec& ex, std::size_t n, const T* a, const T* b, T* loss, T* grad_a, T grad_scale) {
  const double grad_mul = 2.0 * static_cast<double>(grad_scale) / static_cast<double>(n);
  ex.template reduce<double>(n, MseTerm<T>{a, b, grad_a, grad_mul}, loss, DivideTo<T>{static_cast<double>(n)});
}

// loss = (1/n) sum_images sum_{c,i,j} sqrt(dh^2 + dv^2 + eps).
template <class Exec, class T>
void total_variation_on(const Exec& ex, int n, int c, int h, int w, const T* z, T eps, T* loss, T* grad,
                        T grad_scale) {
  const std::size_t total = static_cast<std::size_t>(n) * c * static_cast<std::size_t>(h) * w;
  const TvAt<T> at{z, h, w, static_cast<double>(eps)};
  ex.template reduce<double>(total, TvTerm<T>{at}, loss, DivideTo<T>{static_cast<double>(n)});
  if (grad && total > 0) ex.map(total, TvGradOp<T>{at, static_cast<double>(grad_scale) / n, grad});
}

// loss = mean_i (logsumexp(logits_i) - logits_i[t_i]); dlogits = grad_scale (softmax - onehot) / n.
template <class Exec, class T>
void softmax_cross_entropy_on(const Exec& ex, int n, int k, const T* logits, const int* targets, T* loss, T* dlogits,
                              T grad_scale) {
  const double grad_mul = static_cast<double>(grad_scale) / n;
  ex.template reduce<double>(static_cast<std::size_t>(n < 0 ? 0 : n),
                             CrossEntropyTerm<T>{logits, targets, dlogits, k, grad_mul}, loss,
                             DivideTo<T>{static_cast<double>(n)});
}

template <class Exec, class T>
void argmax_rows_on(const Exec& ex, int n, int k, const T* logits, int* out) {
  if (n <= 0) return;
  ex.map(static_cast<std::size_t>(n), ArgmaxRowsOp<T>{k, logits, out});
}

}  // namespace detail

template <class T>
void mse(std::size_t n, const T* a, const T* b, T* loss, T* grad_a, T grad_scale) {
  detail::mse_on(detail::DeviceFlatExec{}, n, a, b, loss, grad_a, grad_scale);
}

template <class T>
void total_variation(int n, int c, int h, int w, const T* z, T eps, T* loss, T* grad, T grad_scale) {
  detail::total_variation_on(detail::DeviceFlatExec{}, n, c, h, w, z, eps, loss, grad, grad_scale);
}

template <class T>
void softmax_cross_entropy(int n, int k, const T* logits, const int* targets, T* loss, T* dlogits, T grad_scale) {
  detail::softmax_cross_entropy_on(detail::DeviceFlatExec{}, n, k, logits, targets, loss, dlogits, grad_scale);
}

template <class T>
void argmax_rows(int n, int k, const T* logits, int* out) {
  detail::argmax_rows_on(detail::DeviceFlatExec{}, n, k, logits, out);
}

}  // namespace cuda
}  // namespace dtn
