#pragma once
// Backend<Cpu>: the reference implementation of every device op (see backend/backend.hpp for
// the contract). Multithreaded with OpenMP; GEMMs on Eigen. Reductions accumulate in double
// in a fixed order, so results are deterministic for a given thread count.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../../ops/functors.hpp"
#include "../backend.hpp"
#include "conv.hpp"
#include "gemm.hpp"
#include "parallel.hpp"
#include "pool.hpp"
#include "reduce.hpp"

namespace dtn {

template <>
struct Backend<Cpu> {
  // ---- convolution and GEMM
  template <class T>
  static void conv2d_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y) {
    cpu::conv2d_forward(g, x, w, bias, y);
  }
  template <class T>
  static void conv2d_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
    cpu::conv2d_backward_data(g, dy, w, dx);
  }
  template <class T>
  static void conv2d_backward_filter(const ConvGeom& g, const T* x, const T* dy, T* dw, T* db) {
    cpu::conv2d_backward_filter(g, x, dy, dw, db);
  }
  // Both backward passes one after the other, weight gradient first.
  template <class T>
  static void conv2d_backward(const ConvGeom& g, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db) {
    conv2d_backward_passes<Backend>(g, x, dy, w, dx, dw, db, in_order);
  }
  template <class T>
  static void conv_transpose2d_backward(const ConvGeom& g, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db) {
    conv_transpose2d_backward_passes<Backend>(g, x, dy, w, dx, dw, db, in_order);
  }
  static constexpr auto in_order = [](auto& first, auto& second) {
    first();
    second();
  };
  template <class T>
  static void gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb, T beta,
                   T* C, int ldc) {
    cpu::gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  template <class T>
  static void bias_add(int n, int c, long hw, const T* bias, T* y) {
    DTN_OMP(parallel for collapse(2))
    for (int i = 0; i < n; ++i)
      for (int ch = 0; ch < c; ++ch) {
        T* p = y + (static_cast<long>(i) * c + ch) * hw;
        const T b = bias[ch];
        for (long j = 0; j < hw; ++j) p[j] += b;
      }
  }
  template <class T>
  static void bias_backward(int n, int c, long hw, const T* dy, T* db) {
    cpu::bias_grad(n, c, hw, dy, db);
  }

  // ---- batch norm (per channel over n and hw), with an activation applied to its output (fused)
  //
  // Channels are swept in blocks, each image by image (cpu::channel_blocks, reduce.hpp: runs of
  // memory the prefetchers follow, the block's tensors kept in L2 between the passes over it).
  // Each channel's lanes still take its planes in order, so the results are the bits of a
  // channel-by-channel sweep, whatever the block size and the thread count.

  // y = act(x * a + b) over one plane (a and b in double, the result rounded to T first).
  template <class T, class Act>
  static void affine_plane(const T* x, T* y, long hw, double a, double b, const Act& act) {
    for (long j = 0; j < hw; ++j) y[j] = act.forward(static_cast<T>(x[j] * a + b));
  }
  // out = act.grad_from_output(y, dy) over one plane (out may be dy's own storage). A loop of its
  // own, in T, because inside the double-precision loops that follow, the select of ReLU's
  // gradient (y > 0 ? g : 0) does not vectorise: under -ftrapping-math GCC moves the
  // float-to-double conversion into the select's arms, where it may not be executed
  // unconditionally (formed inside them, the parameter-gradient-only backward ran 7x slower).
  template <class T, class Act>
  static void act_grad_plane(const Act& act, const T* y, const T* dy, T* out, long hw) {
    for (long j = 0; j < hw; ++j) out[j] = act.grad_from_output(y[j], dy[j]);
  }
  static std::size_t plane_offset(const BnGeom& g, int i, int ch) {
    return (static_cast<std::size_t>(i) * static_cast<std::size_t>(g.c) + static_cast<std::size_t>(ch)) *
           static_cast<std::size_t>(g.hw);
  }

  template <class T, class Act = ops::Identity>
  static void batchnorm_forward_train(const BnGeom& g, const T* x, const T* gamma, const T* beta, T* running_mean,
                                      T* running_var, T* y, T* save_mean, T* save_invstd, Act act = Act{}) {
    const double m = static_cast<double>(g.n) * static_cast<double>(g.hw);
    const int blocks = cpu::channel_blocks(g.n, g.c, g.hw, 2, sizeof(T), dtn::num_threads());
    const std::size_t width = cpu::block_width(g.c, blocks);
    constexpr std::size_t L = cpu::kLanes;
    // scratch: the block's lanes, then a and b of each of its channels
    cpu::for_channel_blocks<T>(g.n, g.c, g.hw, blocks, width * (L + 2), 0, [&](int c0, int nb, double* lanes, T*) {
      double* ca = lanes + width * L;
      double* cb = ca + width;
      cpu::sum_block_planes(lanes, x, g.n, g.c, g.hw, c0, nb);
      for (int k = 0; k < nb; ++k) ca[k] = cpu::lanes_total(lanes + k * L) / m;  // the mean, for now
      std::fill(lanes, lanes + static_cast<std::size_t>(nb) * L, 0.0);
      for (int i = 0; i < g.n; ++i)
        for (int k = 0; k < nb; ++k) cpu::add_plane_sq_dev(lanes + k * L, x + plane_offset(g, i, c0 + k), g.hw, ca[k]);
      for (int k = 0; k < nb; ++k) {
        const int ch = c0 + k;
        const double mean = ca[k], sq = cpu::lanes_total(lanes + k * L);
        const double var = sq / m;  // biased, used for normalisation
        const double invstd = 1.0 / std::sqrt(var + g.eps);
        ca[k] = gamma[ch] * invstd;
        cb[k] = beta[ch] - mean * ca[k];
        save_mean[ch] = static_cast<T>(mean);
        save_invstd[ch] = static_cast<T>(invstd);
        const double unbiased = m > 1 ? sq / (m - 1) : var;
        running_mean[ch] = static_cast<T>((1 - g.momentum) * running_mean[ch] + g.momentum * mean);
        running_var[ch] = static_cast<T>((1 - g.momentum) * running_var[ch] + g.momentum * unbiased);
      }
      for (int i = 0; i < g.n; ++i)
        for (int k = 0; k < nb; ++k) {
          const std::size_t off = plane_offset(g, i, c0 + k);
          affine_plane(x + off, y + off, g.hw, ca[k], cb[k], act);
        }
    });
  }
  template <class T, class Act = ops::Identity>
  static void batchnorm_forward_eval(const BnGeom& g, const T* x, const T* gamma, const T* beta, const T* running_mean,
                                     const T* running_var, T* y, Act act = Act{}) {
    const long planes = static_cast<long>(g.n) * g.c;
    DTN_OMP(parallel for if (static_cast<double>(planes) * g.hw > 32768.0))
    for (long p = 0; p < planes; ++p) {  // plane by plane, in memory order
      const int ch = static_cast<int>(p % g.c);
      const double invstd = 1.0 / std::sqrt(static_cast<double>(running_var[ch]) + g.eps);
      const double a = gamma[ch] * invstd, b = beta[ch] - running_mean[ch] * a;
      affine_plane(x + p * g.hw, y + p * g.hw, g.hw, a, b, act);
    }
  }
  // Training-mode backward: dx = gamma*invstd/m * (m*dz - sum(dz) - xhat*sum(dz*xhat)), where
  // dz = act.grad_from_output(y, dy) is the gradient at batch norm's own output (dz = dy when Act
  // is Identity, and then y is not read).
  template <class T, class Act = ops::Identity>
  static void batchnorm_backward(const BnGeom& g, const T* x, const T* dy, const T* gamma, const T* save_mean,
                                 const T* save_invstd, T* dx, T* dgamma, T* dbeta, const T* y = nullptr,
                                 Act act = Act{}) {
    constexpr bool plain = std::is_same<Act, ops::Identity>::value;
    const double m = static_cast<double>(g.n) * static_cast<double>(g.hw);
    const int blocks = cpu::channel_blocks(g.n, g.c, g.hw, plain ? 3 : 4, sizeof(T), dtn::num_threads());
    const std::size_t width = cpu::block_width(g.c, blocks);
    constexpr std::size_t L = cpu::kLanes;
    // dz of one plane when dx is not wanted (parameter gradients only); with dx, dz goes into dx
    // and dx is then computed from it in place
    const bool dz_in_plane = !plain && !dx;
    // scratch: the block's two sets of lanes, then sum(dz) and sum(dz * xhat) of each channel;
    // and the dz plane
    const std::size_t n_plane = dz_in_plane ? static_cast<std::size_t>(g.hw) : 0;
    const std::size_t n_doubles = 2 * width * L + 2 * width;
    cpu::for_channel_blocks<T>(g.n, g.c, g.hw, blocks, n_doubles, n_plane, [&](int c0, int nb, double* lanes, T* plane) {
      double* sa = lanes;
      double* sd = lanes + width * L;
      double* sdy = sd + width * L;
      double* sdyx = sdy + width;
      std::fill(lanes, lanes + 2 * width * L, 0.0);
      for (int i = 0; i < g.n; ++i)
        for (int k = 0; k < nb; ++k) {
          const int ch = c0 + k;
          const std::size_t off = plane_offset(g, i, ch);
          const T* dz = dy + off;
          if (!plain) {
            T* out = dz_in_plane ? plane : dx + off;
            act_grad_plane(act, y + off, dy + off, out, g.hw);
            dz = out;
          }
          // sum(dz) and sum(dz * (x - mean))
          cpu::add_plane_sum_dot_dev(sa + k * L, sd + k * L, dz, x + off, g.hw, static_cast<double>(save_mean[ch]));
        }
      for (int k = 0; k < nb; ++k) {
        const int ch = c0 + k;
        sdy[k] = cpu::lanes_total(sa + k * L);
        sdyx[k] = cpu::lanes_total(sd + k * L) * static_cast<double>(save_invstd[ch]);  // sum(dz * xhat)
        dgamma[ch] += static_cast<T>(sdyx[k]);
        dbeta[ch] += static_cast<T>(sdy[k]);
      }
      if (!dx) return;
      for (int i = 0; i < g.n; ++i)
        for (int k = 0; k < nb; ++k) {
          const int ch = c0 + k;
          const double mean = save_mean[ch], invstd = save_invstd[ch];
          const double kk = gamma[ch] * invstd / m;
          const std::size_t off = plane_offset(g, i, ch);
          // one pointer for the in-place case, so the loop is not versioned for aliasing
          const T* src = plain ? dy + off : dx + off;
          T* dst = dx + off;
          const T* xp = x + off;
          for (long j = 0; j < g.hw; ++j) {
            const double xhat = (xp[j] - mean) * invstd;
            dst[j] = static_cast<T>(kk * (m * static_cast<double>(src[j]) - sdy[k] - xhat * sdyx[k]));
          }
        }
    });
  }
  // The segmented forms: `count` batches of sizes[z] samples one after the other (g.n in all),
  // each its own batch, in order (save_* one row of g.c per segment).
  template <class T, class Act = ops::Identity>
  static void batchnorm_forward_train_segments(const BnGeom& g, int count, const int* sizes, const T* x, const T* gamma,
                                               const T* beta, T* running_mean, T* running_var, T* y, T* save_mean,
                                               T* save_invstd, Act act = Act{}) {
    check_bn_segments(g, count, sizes, "dtn::Backend<Cpu>::batchnorm_forward_train_segments");
    BnGeom s = g;
    std::size_t off = 0;
    for (int z = 0; z < count; ++z) {
      s.n = sizes[z];
      const std::size_t row = static_cast<std::size_t>(z) * static_cast<std::size_t>(g.c);
      batchnorm_forward_train(s, x + off, gamma, beta, running_mean, running_var, y + off, save_mean + row,
                              save_invstd + row, act);
      off += static_cast<std::size_t>(sizes[z]) * static_cast<std::size_t>(g.c) * static_cast<std::size_t>(g.hw);
    }
  }
  template <class T, class Act = ops::Identity>
  static void batchnorm_backward_segments(const BnGeom& g, int count, const int* sizes, const T* x, const T* dy,
                                          const T* gamma, const T* save_mean, const T* save_invstd, T* dx, T* dgamma,
                                          T* dbeta, const T* y = nullptr, Act act = Act{}) {
    check_bn_segments(g, count, sizes, "dtn::Backend<Cpu>::batchnorm_backward_segments");
    BnGeom s = g;
    std::size_t off = 0;
    for (int z = 0; z < count; ++z) {
      s.n = sizes[z];
      const std::size_t row = static_cast<std::size_t>(z) * static_cast<std::size_t>(g.c);
      batchnorm_backward(s, x + off, dy + off, gamma, save_mean + row, save_invstd + row, dx ? dx + off : nullptr,
                         dgamma, dbeta, y ? y + off : nullptr, act);
      off += static_cast<std::size_t>(sizes[z]) * static_cast<std::size_t>(g.c) * static_cast<std::size_t>(g.hw);
    }
  }
  // Evaluation-mode backward (input gradient only): batch norm is then the affine map
  // z = gamma (x - mean) / sqrt(var + eps) + beta with the running statistics, so
  // dx = gamma / sqrt(var + eps) * dz, dz as in batchnorm_backward.
  template <class T, class Act = ops::Identity>
  static void batchnorm_backward_eval(const BnGeom& g, const T* dy, const T* gamma, const T* running_var, T* dx,
                                      const T* y = nullptr, Act act = Act{}) {
    constexpr bool plain = std::is_same<Act, ops::Identity>::value;
    const long planes = static_cast<long>(g.n) * g.c;
    DTN_OMP(parallel for if (static_cast<double>(planes) * g.hw > 32768.0))
    for (long p = 0; p < planes; ++p) {  // plane by plane, in memory order
      const int ch = static_cast<int>(p % g.c);
      const double a = gamma[ch] / std::sqrt(static_cast<double>(running_var[ch]) + g.eps);
      const long off = p * g.hw;
      if (!plain) act_grad_plane(act, y + off, dy + off, dx + off, g.hw);
      const T* src = plain ? dy + off : dx + off;
      T* dst = dx + off;
      for (long j = 0; j < g.hw; ++j) dst[j] = static_cast<T>(static_cast<double>(src[j]) * a);
    }
  }

  // ---- max pooling (no padding); argmax indexes the input plane
  // The first maximum in row-major window order wins; a NaN wins over any number and the first
  // NaN is kept (NaN propagates, as in PyTorch). The window loop is written once per window row
  // with the comparison !(v <= best) && best == best, which is that rule without std::isnan calls.
  template <class T>
  static void maxpool_forward(const PoolGeom& g, const T* x, T* y, int* argmax) {
    const long planes = static_cast<long>(g.n) * g.c;
    DTN_OMP(parallel for)
    for (long p = 0; p < planes; ++p) {
      const T* xp = x + p * g.h_in * g.w_in;
      T* yp = y + p * g.h_out * g.w_out;
      int* ap = argmax + p * g.h_out * g.w_out;
      if (g.k == 2 && g.stride == 2) {  // f's pools: cpu/pool.hpp (AVX-512 for float)
        cpu::maxpool2x2_plane(g, xp, yp, ap);
        continue;
      }
      for (int oh = 0; oh < g.h_out; ++oh)
        for (int ow = 0; ow < g.w_out; ++ow) {
          const int base = (oh * g.stride) * g.w_in + ow * g.stride;
          int best = base;
          T bv = xp[best];
          for (int i = 0; i < g.k; ++i) {
            const int row = base + i * g.w_in;
            for (int j = 0; j < g.k; ++j) {
              const T v = xp[row + j];
              if (!(v <= bv) && bv == bv) {
                bv = v;
                best = row + j;
              }
            }
          }
          yp[oh * g.w_out + ow] = bv;
          ap[oh * g.w_out + ow] = best;
        }
    }
  }
  template <class T>
  static void maxpool_backward(const PoolGeom& g, const T* dy, const int* argmax, T* dx) {
    const long planes = static_cast<long>(g.n) * g.c;
    DTN_OMP(parallel for)
    for (long p = 0; p < planes; ++p) {
      T* dxp = dx + p * g.h_in * g.w_in;
      std::fill(dxp, dxp + static_cast<long>(g.h_in) * g.w_in, T(0));
      const T* dyp = dy + p * g.h_out * g.w_out;
      const int* ap = argmax + p * g.h_out * g.w_out;
      for (long o = 0; o < static_cast<long>(g.h_out) * g.w_out; ++o) dxp[ap[o]] += dyp[o];
    }
  }

  // ---- element-wise maps over the functors of ops/functors.hpp
  template <class Op, class T>
  static void map_forward(Op op, std::size_t n, const T* x, T* y) {
    DTN_OMP(parallel for if (n > 32768))
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(n); ++i) y[i] = op.forward(x[i]);
  }
  template <class Op, class T>
  static void map_backward(Op op, std::size_t n, const T* x, const T* y, const T* dy, T* dx) {
    DTN_OMP(parallel for if (n > 32768))
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(n); ++i) dx[i] = op.backward(x[i], y[i], dy[i]);
  }

  // ---- channel repeat (PyTorch x.repeat(1, reps, 1, 1))
  template <class T>
  static void repeat_channels_forward(int n, int c, int reps, long hw, const T* x, T* y) {
    for (int i = 0; i < n; ++i)
      for (int r = 0; r < reps; ++r)
        std::memcpy(y + (static_cast<long>(i) * c * reps + static_cast<long>(r) * c) * hw,
                    x + static_cast<long>(i) * c * hw, sizeof(T) * static_cast<std::size_t>(c * hw));
  }
  template <class T>
  static void repeat_channels_backward(int n, int c, int reps, long hw, const T* dy, T* dx) {
    for (int i = 0; i < n; ++i) {
      T* d = dx + static_cast<long>(i) * c * hw;
      std::fill(d, d + c * hw, T(0));
      for (int r = 0; r < reps; ++r) {
        const T* s = dy + (static_cast<long>(i) * c * reps + static_cast<long>(r) * c) * hw;
        for (long j = 0; j < c * hw; ++j) d[j] += s[j];
      }
    }
  }

  // ---- bilinear resize, align_corners = false (PyTorch's default)
  struct Lerp {
    int i0, i1;
    double w0, w1;
  };
  static Lerp lerp_index(int out_index, int in_size, int out_size) {
    const double scale = static_cast<double>(in_size) / out_size;
    double src = (out_index + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    int i0 = static_cast<int>(src);
    if (i0 > in_size - 1) i0 = in_size - 1;
    const int i1 = i0 < in_size - 1 ? i0 + 1 : i0;
    const double w1 = src - i0;
    return {i0, i1, 1.0 - w1, w1};
  }
  template <class T>
  static void resize_bilinear_forward(const ResizeGeom& g, const T* x, T* y) {
    const long planes = static_cast<long>(g.n) * g.c;
    DTN_OMP(parallel for)
    for (long p = 0; p < planes; ++p) {
      const T* xp = x + p * g.h_in * g.w_in;
      T* yp = y + p * g.h_out * g.w_out;
      for (int oh = 0; oh < g.h_out; ++oh) {
        const Lerp h = lerp_index(oh, g.h_in, g.h_out);
        for (int ow = 0; ow < g.w_out; ++ow) {
          const Lerp w = lerp_index(ow, g.w_in, g.w_out);
          const double v = h.w0 * (w.w0 * xp[h.i0 * g.w_in + w.i0] + w.w1 * xp[h.i0 * g.w_in + w.i1]) +
                           h.w1 * (w.w0 * xp[h.i1 * g.w_in + w.i0] + w.w1 * xp[h.i1 * g.w_in + w.i1]);
          yp[oh * g.w_out + ow] = static_cast<T>(v);
        }
      }
    }
  }
  template <class T>
  static void resize_bilinear_backward(const ResizeGeom& g, const T* dy, T* dx) {
    const long planes = static_cast<long>(g.n) * g.c;
    DTN_OMP(parallel for)
    for (long p = 0; p < planes; ++p) {
      T* dxp = dx + p * g.h_in * g.w_in;
      std::fill(dxp, dxp + static_cast<long>(g.h_in) * g.w_in, T(0));
      const T* dyp = dy + p * g.h_out * g.w_out;
      for (int oh = 0; oh < g.h_out; ++oh) {
        const Lerp h = lerp_index(oh, g.h_in, g.h_out);
        for (int ow = 0; ow < g.w_out; ++ow) {
          const Lerp w = lerp_index(ow, g.w_in, g.w_out);
          const T d = dyp[oh * g.w_out + ow];
          dxp[h.i0 * g.w_in + w.i0] += static_cast<T>(h.w0 * w.w0 * d);
          dxp[h.i0 * g.w_in + w.i1] += static_cast<T>(h.w0 * w.w1 * d);
          dxp[h.i1 * g.w_in + w.i0] += static_cast<T>(h.w1 * w.w0 * d);
          dxp[h.i1 * g.w_in + w.i1] += static_cast<T>(h.w1 * w.w1 * d);
        }
      }
    }
  }

  // ---- losses (scalar written to *loss)
  template <class T>
  static void mse(std::size_t n, const T* a, const T* b, T* loss, T* grad_a, T grad_scale) {
    double acc = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(a[i]) - b[i];
      acc += d * d;
    }
    *loss = static_cast<T>(acc / static_cast<double>(n));
    if (grad_a) {
      const double k = 2.0 * grad_scale / static_cast<double>(n);
      for (std::size_t i = 0; i < n; ++i) grad_a[i] = static_cast<T>(k * (static_cast<double>(a[i]) - b[i]));
    }
  }
  // Total variation with B = 1: per pixel sqrt(dh^2 + dv^2 + eps) with forward differences
  // (a difference past the last row/column is 0), summed over pixels and channels, averaged
  // over the batch. eps > 0 makes the root differentiable at 0.
  template <class T>
  static void total_variation(int n, int c, int h, int w, const T* z, T eps, T* loss, T* grad, T grad_scale) {
    double acc = 0;
    if (grad) std::fill(grad, grad + static_cast<long>(n) * c * h * w, T(0));
    const double k = static_cast<double>(grad_scale) / n;
    for (long p = 0; p < static_cast<long>(n) * c; ++p) {
      const T* zp = z + p * h * w;
      T* gp = grad ? grad + p * h * w : nullptr;
      for (int i = 0; i < h; ++i)
        for (int j = 0; j < w; ++j) {
          const double v = zp[i * w + j];
          const double dh = j + 1 < w ? zp[i * w + j + 1] - v : 0.0;
          const double dv = i + 1 < h ? zp[(i + 1) * w + j] - v : 0.0;
          const double s = std::sqrt(dh * dh + dv * dv + static_cast<double>(eps));
          acc += s;
          if (gp) {
            gp[i * w + j] += static_cast<T>(-k * (dh + dv) / s);
            if (j + 1 < w) gp[i * w + j + 1] += static_cast<T>(k * dh / s);
            if (i + 1 < h) gp[(i + 1) * w + j] += static_cast<T>(k * dv / s);
          }
        }
    }
    *loss = static_cast<T>(acc / n);
  }
  template <class T>
  static void softmax_cross_entropy(int n, int k, const T* logits, const int* targets, T* loss, T* dlogits,
                                    T grad_scale) {
    double acc = 0;
    for (int i = 0; i < n; ++i) {
      const T* l = logits + static_cast<long>(i) * k;
      if (targets[i] < 0 || targets[i] >= k) {  // as on the GPU: NaN, not a read past the row
        acc = std::numeric_limits<double>::quiet_NaN();
        if (dlogits) std::fill(dlogits + static_cast<long>(i) * k, dlogits + static_cast<long>(i + 1) * k,
                               std::numeric_limits<T>::quiet_NaN());
        continue;
      }
      double mx = l[0];
      for (int j = 1; j < k; ++j) mx = std::max(mx, static_cast<double>(l[j]));
      double se = 0;
      for (int j = 0; j < k; ++j) se += std::exp(l[j] - mx);
      const double lse = mx + std::log(se);
      acc += lse - l[targets[i]];
      if (dlogits) {
        T* d = dlogits + static_cast<long>(i) * k;
        for (int j = 0; j < k; ++j) {
          const double p = std::exp(l[j] - lse);
          d[j] = static_cast<T>(grad_scale * (p - (j == targets[i] ? 1.0 : 0.0)) / n);
        }
      }
    }
    *loss = static_cast<T>(acc / n);
  }
  template <class T>
  static void argmax_rows(int n, int k, const T* logits, int* out) {
    for (int i = 0; i < n; ++i) {
      const T* l = logits + static_cast<long>(i) * k;
      out[i] = static_cast<int>(std::max_element(l, l + k) - l);
    }
  }

  // ---- optimizer
  template <class T>
  static void adam_update(std::size_t n, T* param, const T* grad, T* m, T* v, const AdamStep<T>& s) {
    DTN_OMP(parallel for if (n > 65536))
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(n); ++i) {
      const T gi = grad[i] + s.weight_decay * param[i];
      m[i] = s.beta1 * m[i] + s.one_minus_beta1 * gi;
      v[i] = s.beta2 * v[i] + s.one_minus_beta2 * gi * gi;
      const T mhat = m[i] / s.bias_correction1;
      const T vhat = v[i] / s.bias_correction2;
      param[i] -= s.lr * mhat / (std::sqrt(vhat) + s.eps);
    }
  }

  // The same with the scalars read through a pointer and nothing done when *skip != 0 (the
  // device-side guard of graph-captured steps; on the CPU both pointers are host memory).
  template <class T>
  static void adam_update_device(std::size_t n, T* param, const T* grad, T* m, T* v, const AdamStep<T>* s,
                                 const int* skip) {
    if (skip != nullptr && *skip != 0) return;
    adam_update(n, param, grad, m, v, *s);
  }

  // ---- utilities
  template <class T>
  static void fill(std::size_t n, T* p, T value) {
    std::fill(p, p + n, value);
  }
  template <class T>
  static void axpy(std::size_t n, T a, const T* x, T* y) {
    for (std::size_t i = 0; i < n; ++i) y[i] += a * x[i];
  }
  template <class T>
  static void scale(std::size_t n, T a, T* x) {
    for (std::size_t i = 0; i < n; ++i) x[i] *= a;
  }
  template <class T>
  static void u8_to_signed(std::size_t n, const unsigned char* src, T* dst) {
    const ops::U8ToSigned f;
    for (std::size_t i = 0; i < n; ++i) dst[i] = f.template operator()<T>(src[i]);
  }
  template <class T>
  static void count_nonfinite(std::size_t n, const T* x, int* out) {
    int c = 0;
    for (std::size_t i = 0; i < n; ++i) c += std::isfinite(x[i]) ? 0 : 1;
    *out = c;
  }
  template <class T>
  static void sum(std::size_t n, const T* x, T* out) {
    double acc = 0;
    for (std::size_t i = 0; i < n; ++i) acc += x[i];
    *out = static_cast<T>(acc);
  }
};

}  // namespace dtn
