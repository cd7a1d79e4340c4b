#pragma once
// Backend<Cuda>: every op of backend/backend.hpp on the GPU, with the CPU reference's semantics
// (backend/cpu/backend.hpp). Convolutions on cuDNN, GEMM on cuBLAS, everything else hand-written
// kernels (one .cuh per op family). All work is queued on the calling thread's stream
// (dtn::cuda::context()); loss scalars and counts are written to device memory; no op waits for
// the host or allocates once its sizes have been seen, so a training step can be captured in a
// CUDA graph. Only T = float is provided on the GPU.
#include <cstddef>
#include <type_traits>

#include "../../ops/functors.hpp"
#include "../backend.hpp"
#include "adam.cuh"
#include "batchnorm.cuh"
#include "conv.cuh"
#include "elementwise.cuh"
#include "gemm.cuh"
#include "loss.cuh"
#include "pool.cuh"
#include "reduce.cuh"
#include "resize.cuh"

namespace dtn {

template <class T>
struct cuda_supports : std::is_same<T, float> {};

#define DTN_CUDA_FLOAT_ONLY(T)                                                                                  \
  static_assert(::dtn::cuda_supports<T>::value,                                                                 \
                "dtn::Backend<Cuda> implements T = float only (double is CPU-only); use Tensor<float, Cuda>")

template <>
struct Backend<Cuda> {
  // ---- convolution and GEMM (cuDNN, cuBLAS)
  template <class T>
  static void conv2d_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::conv2d_forward(g, x, w, bias, y);
  }
  template <class T>
  static void conv2d_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::conv2d_backward_data(g, dy, w, dx);
  }
  template <class T>
  static void conv2d_backward_filter(const ConvGeom& g, const T* x, const T* dy, T* dw, T* db) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::conv2d_backward_filter(g, x, dy, dw, db);
  }
  // Both backward passes; with dtn::cuda::set_conv_overlap the weight gradient on a second
  // stream beside the input gradient (cuda::detail::conv_backward_both).
  template <class T>
  static void conv2d_backward(const ConvGeom& g, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db) {
    DTN_CUDA_FLOAT_ONLY(T);
    conv2d_backward_passes<Backend>(g, x, dy, w, dx, dw, db,
                                    cuda::detail::conv_backward_both(g, cuda::detail::ConvPass::bwd_data));
  }
  template <class T>
  static void conv_transpose2d_backward(const ConvGeom& g, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db) {
    DTN_CUDA_FLOAT_ONLY(T);
    conv_transpose2d_backward_passes<Backend>(g, x, dy, w, dx, dw, db,
                                              cuda::detail::conv_backward_both(g, cuda::detail::ConvPass::fwd));
  }
  template <class T>
  static void gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb, T beta,
                   T* C, int ldc) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  template <class T>
  static void bias_add(int n, int c, long hw, const T* bias, T* y) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::bias_add(n, c, hw, bias, y);
  }
  template <class T>
  static void bias_backward(int n, int c, long hw, const T* dy, T* db) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::bias_backward(n, c, hw, dy, db);
  }

  // ---- batch norm
  template <class T, class Act = ops::Identity>
  static void batchnorm_forward_train(const BnGeom& g, const T* x, const T* gamma, const T* beta, T* running_mean,
                                      T* running_var, T* y, T* save_mean, T* save_invstd, Act act = Act{}) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::batchnorm_forward_train(g.n, g.c, g.hw, g.eps, g.momentum, x, gamma, beta, running_mean, running_var, y,
                                  save_mean, save_invstd, act);
  }
  template <class T, class Act = ops::Identity>
  static void batchnorm_forward_train_segments(const BnGeom& g, int count, const int* sizes, const T* x, const T* gamma,
                                               const T* beta, T* running_mean, T* running_var, T* y, T* save_mean,
                                               T* save_invstd, Act act = Act{}) {
    DTN_CUDA_FLOAT_ONLY(T);
    check_bn_segments(g, count, sizes, "dtn::Backend<Cuda>::batchnorm_forward_train_segments");
    cuda::batchnorm_forward_train_segments(count, sizes, g.c, g.hw, g.eps, g.momentum, x, gamma, beta, running_mean,
                                           running_var, y, save_mean, save_invstd, act);
  }
  template <class T, class Act = ops::Identity>
  static void batchnorm_forward_eval(const BnGeom& g, const T* x, const T* gamma, const T* beta, const T* running_mean,
                                     const T* running_var, T* y, Act act = Act{}) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::batchnorm_forward_eval(g.n, g.c, g.hw, g.eps, x, gamma, beta, running_mean, running_var, y, act);
  }
  template <class T, class Act = ops::Identity>
  static void batchnorm_backward(const BnGeom& g, const T* x, const T* dy, const T* gamma, const T* save_mean,
                                 const T* save_invstd, T* dx, T* dgamma, T* dbeta, const T* y = nullptr,
                                 Act act = Act{}) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::batchnorm_backward(g.n, g.c, g.hw, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, y, act);
  }
  template <class T, class Act = ops::Identity>
  static void batchnorm_backward_segments(const BnGeom& g, int count, const int* sizes, const T* x, const T* dy,
                                          const T* gamma, const T* save_mean, const T* save_invstd, T* dx, T* dgamma,
                                          T* dbeta, const T* y = nullptr, Act act = Act{}) {
    DTN_CUDA_FLOAT_ONLY(T);
    check_bn_segments(g, count, sizes, "dtn::Backend<Cuda>::batchnorm_backward_segments");
    cuda::batchnorm_backward_segments(count, sizes, g.c, g.hw, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta,
                                      y, act);
  }
  template <class T, class Act = ops::Identity>
  static void batchnorm_backward_eval(const BnGeom& g, const T* dy, const T* gamma, const T* running_var, T* dx,
                                      const T* y = nullptr, Act act = Act{}) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::batchnorm_backward_eval(g.n, g.c, g.hw, g.eps, dy, gamma, running_var, dx, y, act);
  }

  // ---- max pooling
  template <class T>
  static void maxpool_forward(const PoolGeom& g, const T* x, T* y, int* argmax) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::maxpool_forward(g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out, g.k, g.stride, x, y, argmax);
  }
  template <class T>
  static void maxpool_backward(const PoolGeom& g, const T* dy, const int* argmax, T* dx) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::maxpool_backward(g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out, g.k, g.stride, dy, argmax, dx);
  }

  // ---- element-wise
  template <class Op, class T>
  static void map_forward(Op op, std::size_t n, const T* x, T* y) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::map_forward(op, n, x, y);
  }
  template <class Op, class T>
  static void map_backward(Op op, std::size_t n, const T* x, const T* y, const T* dy, T* dx) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::map_backward(op, n, x, y, dy, dx);
  }
  template <class T>
  static void repeat_channels_forward(int n, int c, int reps, long hw, const T* x, T* y) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::repeat_channels_forward(n, c, reps, hw, x, y);
  }
  template <class T>
  static void repeat_channels_backward(int n, int c, int reps, long hw, const T* dy, T* dx) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::repeat_channels_backward(n, c, reps, hw, dy, dx);
  }

  // ---- bilinear resize (align_corners = false)
  template <class T>
  static void resize_bilinear_forward(const ResizeGeom& g, const T* x, T* y) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::resize_bilinear_forward(g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out, x, y);
  }
  template <class T>
  static void resize_bilinear_backward(const ResizeGeom& g, const T* dy, T* dx) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::resize_bilinear_backward(g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out, dy, dx);
  }

  // ---- losses (scalar written to device memory)
  template <class T>
  static void mse(std::size_t n, const T* a, const T* b, T* loss, T* grad_a, T grad_scale) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::mse(n, a, b, loss, grad_a, grad_scale);
  }
  template <class T>
  static void total_variation(int n, int c, int h, int w, const T* z, T eps, T* loss, T* grad, T grad_scale) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::total_variation(n, c, h, w, z, eps, loss, grad, grad_scale);
  }
  // A target outside [0, k) makes the loss (and that row's gradient) NaN.
  template <class T>
  static void softmax_cross_entropy(int n, int k, const T* logits, const int* targets, T* loss, T* dlogits,
                                    T grad_scale) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::softmax_cross_entropy(n, k, logits, targets, loss, dlogits, grad_scale);
  }
  template <class T>
  static void argmax_rows(int n, int k, const T* logits, int* out) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::argmax_rows(n, k, logits, out);
  }

  // ---- optimizer
  template <class T>
  static void adam_update(std::size_t n, T* param, const T* grad, T* m, T* v, const AdamStep<T>& s) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::adam_update(n, param, grad, m, v, s);
  }
  template <class T>
  static void adam_update_device(std::size_t n, T* param, const T* grad, T* m, T* v, const AdamStep<T>* s,
                                 const int* skip) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::adam_update_device(n, param, grad, m, v, s, skip);
  }

  // ---- utilities
  template <class T>
  static void fill(std::size_t n, T* p, T value) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::fill(n, p, value);
  }
  template <class T>
  static void axpy(std::size_t n, T a, const T* x, T* y) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::axpy(n, a, x, y);
  }
  template <class T>
  static void scale(std::size_t n, T a, T* x) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::scale(n, a, x);
  }
  template <class T>
  static void u8_to_signed(std::size_t n, const unsigned char* src, T* dst) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::u8_to_signed(n, src, dst);
  }
  template <class T>
  static void count_nonfinite(std::size_t n, const T* x, int* out) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::count_nonfinite(n, x, out);
  }
  template <class T>
  static void sum(std::size_t n, const T* x, T* out) {
    DTN_CUDA_FLOAT_ONLY(T);
    cuda::sum(n, x, out);
  }
};

}  // namespace dtn
