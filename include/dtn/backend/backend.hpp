#pragma once
// Backend<Dev>: the complete list of device operations the layers, losses and optimizer use.
// Backend<Cpu> (Eigen + OpenMP) is in backend/cpu/; Backend<Cuda> (hand-written kernels,
// cuDNN, cuBLAS) is in backend/cuda/ and only visible through <dtn/cuda.cuh>.
//
// Conventions shared by every backend:
//  * All pointers are device pointers of Dev; NCHW row-major; T is float (or double on CPU).
//  * "overwrites" outputs are fully written; "accumulates" outputs get += (parameter gradients).
//  * Loss functions write the scalar loss to *loss (a device pointer) and, when grad is not
//    null, write grad = grad_scale * d(loss)/d(input). Reductions are deterministic.
//  * Nothing synchronises with the host except the explicit copies in core/memory.hpp.
//
// Signatures (T a floating type):
//  conv2d_forward(const ConvGeom&, const T* x, const T* w, const T* bias_or_null, T* y)   overwrites y
//  conv2d_backward_data(const ConvGeom&, const T* dy, const T* w, T* dx)                  overwrites dx
//  conv2d_backward_filter(const ConvGeom&, const T* x, const T* dy, T* dw, T* db_or_null) accumulates
//      (w is [c_out, c_in, kh, kw]; transposed conv is expressed through these three with the
//       roles of x and y swapped, exactly as cuDNN does)
//  conv2d_backward(const ConvGeom&, const T* x, const T* dy, const T* w, T* dx_or_null, T* dw_or_null, T* db_or_null)
//      both backward passes: conv2d_backward_data into dx when dx is not null, conv2d_backward_filter
//      into dw and db when dw is not null (the GPU may run the two on two streams: set_conv_overlap)
//  conv_transpose2d_backward(const ConvGeom&, const T* x, const T* dy, const T* w, T* dx_or_null, T* dw_or_null,
//       T* db_or_null)   the same for a transposed convolution, the backward-data pass of the
//      convolution g (x: the layer's input, g's output shape; dy: g's input shape):
//      dx = conv2d_forward(dy, w); dw += conv2d_backward_filter(x = dy, dy = x); db += sum of dy per channel
//  bias_add(int n, int c, long hw, const T* bias, T* y)                   y[n][c][:] += bias[c]
//  bias_backward(int n, int c, long hw, const T* dy, T* db)               accumulates db[c]
//  gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* A, int lda,
//       const T* B, int ldb, T beta, T* C, int ldc)                       row-major C = a*op(A)op(B) + b*C
//  batchnorm_forward_train(const BnGeom&, const T* x, const T* gamma, const T* beta,
//       T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd, Act act = Identity)
//       (running statistics updated with momentum and the unbiased variance, as PyTorch;
//        y = act.forward(normalised x): an activation fused into the pass, ops/functors.hpp)
//  batchnorm_forward_eval(const BnGeom&, const T* x, const T* gamma, const T* beta,
//       const T* running_mean, const T* running_var, T* y, Act act = Identity)
//  batchnorm_backward(const BnGeom&, const T* x, const T* dy, const T* gamma, const T* save_mean,
//       const T* save_invstd, T* dx_or_null, T* dgamma, T* dbeta, const T* y = null, Act act = Identity)
//       dx overwritten, dgamma/dbeta accumulate; dy is the gradient at act's output y, turned
//       into the gradient at batch norm's output by act.grad_from_output(y, dy)
//  batchnorm_forward_train_segments(const BnGeom&, int count, const int* sizes, x, gamma, beta, running_mean,
//       running_var, y, save_mean, save_invstd, Act act = Identity)
//  batchnorm_backward_segments(const BnGeom&, int count, const int* sizes, x, dy, gamma, save_mean, save_invstd,
//       dx_or_null, dgamma, dbeta, y = null, Act act = Identity)
//       x holds `count` batches of sizes[z] samples one after the other (g.n in all): the same as
//       the two above on each in turn (save_* one row of g.c per segment; running statistics
//       updated, dgamma and dbeta accumulated, once per segment in order). The GPU runs them in
//       one launch per stage, bit for bit its per-segment results
//  batchnorm_backward_eval(const BnGeom&, const T* dy, const T* gamma, const T* running_var, T* dx,
//       const T* y = null, Act act = Identity)      evaluation mode, input gradient only; overwrites dx
//  maxpool_forward(const PoolGeom&, const T* x, T* y, int* argmax)         argmax = index within the input plane
//  maxpool_backward(const PoolGeom&, const T* dy, const int* argmax, T* dx) overwrites dx
//  map_forward(Op, size_t n, const T* x, T* y)                             y = op.forward(x) (ops/functors.hpp)
//  map_backward(Op, size_t n, const T* x, const T* y, const T* dy, T* dx) dx = op.backward(x, y, dy)
//  repeat_channels_forward(int n, int c, int reps, long hw, const T* x, T* y)   y has c*reps channels, y[:,j] = x[:, j % c]
//  repeat_channels_backward(int n, int c, int reps, long hw, const T* dy, T* dx) overwrites dx
//  resize_bilinear_forward(const ResizeGeom&, const T* x, T* y)            align_corners = false (PyTorch default)
//  resize_bilinear_backward(const ResizeGeom&, const T* dy, T* dx)         overwrites dx
//  mse(size_t n, const T* a, const T* b, T* loss, T* grad_a_or_null, T grad_scale)   loss = mean((a-b)^2)
//  total_variation(int n, int c, int h, int w, const T* z, T eps, T* loss, T* grad_or_null, T grad_scale)
//       loss = (1/n) sum_images sum_{c,i,j} sqrt(dh^2 + dv^2 + eps), forward differences, 0 past the border
//  softmax_cross_entropy(int n, int k, const T* logits, const int* targets, T* loss,
//       T* dlogits_or_null, T grad_scale)                                  loss = mean_i -log softmax(logits_i)[t_i];
//       a target outside [0, k) makes the loss and that row's gradient NaN (CrossEntropyLoss throws
//       first on the CPU, where it can read the targets)
//  argmax_rows(int n, int k, const T* logits, int* out)
//  adam_update(size_t n, T* param, const T* grad, T* m, T* v, const AdamStep<T>&)
//  adam_update_device(size_t n, T* param, const T* grad, T* m, T* v, const AdamStep<T>* s, const int* skip)
//       the scalars read from device memory; no update when *skip != 0 (graph-captured steps)
//  fill(size_t n, T* p, T value);  axpy(size_t n, T a, const T* x, T* y) (y += a x);  scale(size_t n, T a, T* x)
//  u8_to_signed(size_t n, const unsigned char* src, T* dst)                dst = src / 127.5 - 1
//  count_nonfinite(size_t n, const T* x, int* out)                         *out = number of NaN/Inf (device int)
//  sum(size_t n, const T* x, T* out)                                       deterministic
#include <cstddef>
#include <string>

#include "../core/device.hpp"
#include "../core/error.hpp"

namespace dtn {

// Convolution geometry of y = conv(x, w): x [n, c_in, h_in, w_in], w [c_out, c_in, kh, kw],
// y [n, c_out, h_out, w_out]; symmetric zero padding, equal strides.
struct ConvGeom {
  int n = 0, c_in = 0, h_in = 0, w_in = 0;
  int c_out = 0, kh = 0, kw = 0, stride = 1, pad = 0;
  int h_out = 0, w_out = 0;
  static int out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }
};

// A convolution whose kernel covers the whole unpadded input, so that it has one output pixel
// (D's last layer, and g's first as a transposed convolution), is a plain matrix product over
// the flattened images: y [n, c_out] = x [n, c_in*kh*kw] w^T. Both backends run it as a GEMM.
inline bool conv_is_dense(const ConvGeom& g) {
  return g.pad == 0 && g.kh == g.h_in && g.kw == g.w_in && g.h_out == 1 && g.w_out == 1;
}
// A dense convolution's three passes as GEMMs, for a backend's row-major
// gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc), with ckk = c_in*kh*kw:
// y [n, c_out] = x [n, ckk] w^T; dx [n, ckk] = dy [n, c_out] w; dw [c_out, ckk] += dy^T x.
// The bias and its gradient are each backend's own.
template <class Gemm, class T>
void dense_conv_forward(const Gemm& gemm, const ConvGeom& g, const T* x, const T* w, T* y) {
  const int ckk = g.c_in * g.kh * g.kw;
  gemm(false, true, g.n, g.c_out, ckk, T(1), x, ckk, w, ckk, T(0), y, g.c_out);
}
template <class Gemm, class T>
void dense_conv_backward_data(const Gemm& gemm, const ConvGeom& g, const T* dy, const T* w, T* dx) {
  const int ckk = g.c_in * g.kh * g.kw;
  gemm(false, false, g.n, ckk, g.c_out, T(1), dy, g.c_out, w, ckk, T(0), dx, ckk);
}
template <class Gemm, class T>
void dense_conv_backward_filter(const Gemm& gemm, const ConvGeom& g, const T* x, const T* dy, T* dw) {
  const int ckk = g.c_in * g.kh * g.kw;
  gemm(true, false, g.c_out, ckk, g.n, T(1), dy, g.c_out, x, ckk, T(1), dw, ckk);
}

// conv2d_backward and conv_transpose2d_backward (see the list above) for a backend B, shared by
// the backends: each is a weight-gradient pass (filter) and an input-gradient pass (data). When
// both are wanted, both(filter, data) runs them (the CPU one after the other; the GPU may put
// them on two streams); else the one wanted runs.
template <class Filter, class Data, class Both>
void run_backward_passes(bool want_dx, bool want_dw, Filter& filter, Data& data, Both& both) {
  if (want_dx && want_dw) {
    both(filter, data);
    return;
  }
  if (want_dw) filter();
  if (want_dx) data();
}
template <class B, class T, class Both>
void conv2d_backward_passes(const ConvGeom& g, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db, Both&& both) {
  auto filter = [&] { B::conv2d_backward_filter(g, x, dy, dw, db); };
  auto data = [&] { B::conv2d_backward_data(g, dy, w, dx); };
  run_backward_passes(dx != nullptr, dw != nullptr, filter, data, both);
}
template <class B, class T, class Both>
void conv_transpose2d_backward_passes(const ConvGeom& g, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db,
                                      Both&& both) {
  auto filter = [&] {
    B::conv2d_backward_filter(g, dy, x, dw, static_cast<T*>(nullptr));
    if (db) B::bias_backward(g.n, g.c_in, static_cast<long>(g.h_in) * g.w_in, dy, db);
  };
  auto data = [&] { B::conv2d_forward(g, dy, w, static_cast<const T*>(nullptr), dx); };
  run_backward_passes(dx != nullptr, dw != nullptr, filter, data, both);
}

struct BnGeom {
  int n = 0, c = 0;
  long hw = 0;
  double eps = 1e-5, momentum = 0.1;
};

// Segment sizes that must tile a batch of `total` samples: each >= 1, summing to total. Throws
// Error naming `where`; batch() describes the batch in the message (called only then).
template <class Error, class I, class Describe>
void check_segment_sizes(const I* sizes, std::size_t count, long long total, const std::string& where,
                         const Describe& batch) {
  long long sum = 0;
  for (std::size_t z = 0; z < count; ++z) {
    if (sizes[z] < 1) throw Error(where + ": a batch segment of " + std::to_string(sizes[z]) + " samples");
    sum += sizes[z];
  }
  if (sum != total) throw Error(where + ": batch segments of " + std::to_string(sum) + " samples in all, " + batch());
}

// The segment list of the segmented batch-norm ops: count >= 1 batches of sizes[z] >= 1 samples,
// g.n in all. Both backends check it before any work (argument_error naming `op`), as a call that
// bypasses Network::forward's check (nn/contract.hpp, the same rule) could otherwise normalise
// over no samples or past the batch.
inline void check_bn_segments(const BnGeom& g, int count, const int* sizes, const std::string& op) {
  if (count < 1 || sizes == nullptr) throw argument_error(op + ": " + std::to_string(count) + " batch segments");
  check_segment_sizes<argument_error>(sizes, static_cast<std::size_t>(count), g.n, op,
                                      [&] { return "for a batch of " + std::to_string(g.n); });
}

struct PoolGeom {
  int n = 0, c = 0, h_in = 0, w_in = 0, k = 2, stride = 2, h_out = 0, w_out = 0;
};

struct ResizeGeom {
  int n = 0, c = 0, h_in = 0, w_in = 0, h_out = 0, w_out = 0;
};

// One Adam step's scalars. bias_correction1 = 1 - beta1^t, bias_correction2 = 1 - beta2^t.
// weight_decay is L2 added to the gradient (PyTorch torch.optim.Adam semantics).
// one_minus_beta1/2 = 1 - beta1/2 computed in double, then rounded to T, as PyTorch passes them:
// in float, 1 - float(0.999) is 0.00099998713, 1.3e-5 off 0.001, and the second moment with it.
template <class T>
struct AdamStep {
  T lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, one_minus_beta1, one_minus_beta2;
};

template <class Dev>
struct Backend {
  static_assert(always_false<Dev>::value,
                "dtn: no backend for this device in this translation unit. For dtn::Cuda, include "
                "<dtn/cuda.cuh> and compile with nvcc (link the CMake target dtn::cuda).");
};

}  // namespace dtn
