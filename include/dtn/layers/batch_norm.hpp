#pragma once
// BatchNorm2d: per-channel normalisation with batch statistics in training mode and running
// statistics in evaluation mode (momentum 0.1, eps 1e-5, unbiased running variance: PyTorch's).
// A batch made of several batches one after the other (Network::forward with segments) is
// normalised segment by segment in training mode: each segment's own statistics, the running
// statistics updated once per segment in order, as separate forward passes would.
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../backend/backend.hpp"
#include "../nn/contract.hpp"
#include "../nn/param.hpp"
#include "../ops/functors.hpp"

namespace dtn {
namespace detail {
template <class L, class = void>
struct runs_after_batch_norm : std::false_type {};
template <class L>
struct runs_after_batch_norm<L, std::enable_if_t<L::fusable_after_batch_norm>> : std::true_type {};
}  // namespace detail

namespace layers {

template <class T, class Dev>
class BatchNorm2dLayer {
 public:
  static constexpr const char* kind = "BatchNorm2d";
  static constexpr double eps = 1e-5, momentum = 0.1;

  Shape setup(const Shape& in) {
    if (in.rank() != 3 && in.rank() != 1) throw_shape(kind, "a [C, H, W] or [C] input", in);
    c_ = static_cast<int>(in[0]);
    hw_ = static_cast<long>(in.numel() / static_cast<std::size_t>(c_));
    scale_.shape = shift_.shape = mean_.shape = var_.shape = Shape{c_};
    scale_.role = ParamRole::bn_scale;
    shift_.role = ParamRole::bn_shift;
    mean_.role = ParamRole::running_mean;
    var_.role = ParamRole::running_var;
    return in;
  }
  template <class F>
  void for_each_param(F&& f) {
    f("weight", scale_);
    f("bias", shift_);
    f("running_mean", mean_);
    f("running_var", var_);
  }
  // The sizes of the batches that the next forward's input holds one after the other (nn/contract.hpp);
  // one segment, the whole batch, unless Network::forward was given segments.
  void set_batch_segments(const std::vector<std::int64_t>& sizes) { segments_ = sizes; }

  void forward(View<const T, Dev> x, View<T, Dev> y, bool train) { forward_with(x, y, train, ops::Identity{}); }
  void backward(View<const T, Dev> x, View<const T, Dev> /*y*/, View<const T, Dev> dy, View<T, Dev> dx,
                bool param_grads) {
    backward_with(x, View<const T, Dev>(), dy, dx, param_grads, ops::Identity{});
  }

  // Fusion with the activation layer after it (nn/contract.hpp; Sequential does this on its
  // own): the activation runs inside batch norm's passes, y = act(BN(x)), and backward takes the
  // activation's output y and the gradient there. Batch norm's own output is never stored, and
  // each direction saves a pass over the tensor; the results are bit for bit those of the two
  // layers one after the other. Offered to activations whose gradient is a function of their
  // output (ops::*::grad_from_output; ReLU, LeakyReLU with a slope >= 0, Tanh): those declare
  // fusable_after_batch_norm = true.
  template <class Next>
  static constexpr bool fuses_with = detail::runs_after_batch_norm<Next>::value;
  template <class Next>
  void forward_fused(View<const T, Dev> x, View<T, Dev> y, bool train, const Next& next) {
    forward_with(x, y, train, next.op());
  }
  template <class Next>
  void backward_fused(View<const T, Dev> x, View<const T, Dev> y, View<const T, Dev> dy, View<T, Dev> dx,
                      bool param_grads, const Next& next) {
    backward_with(x, y, dy, dx, param_grads, next.op());
  }

 private:
  template <class Act>
  void forward_with(View<const T, Dev> x, View<T, Dev> y, bool train, const Act& act) {
    train_ = train;
    if (!train) {
      Backend<Dev>::batchnorm_forward_eval(geom(x.shape[0]), x.data, scale_.value.data, shift_.value.data,
                                           mean_.value.data, var_.value.data, y.data, act);
      return;
    }
    detail::check_batch_segments(segments_, x.shape, kind);
    trained_segments_.assign(segments_.begin(), segments_.end());
    const std::int64_t nseg = trained_segments_.size() > 1 ? static_cast<std::int64_t>(trained_segments_.size()) : 1;
    save_mean_.resize(Shape{nseg * c_});
    save_invstd_.resize(Shape{nseg * c_});
    if (nseg == 1) {
      Backend<Dev>::batchnorm_forward_train(geom(x.shape[0]), x.data, scale_.value.data, shift_.value.data,
                                            mean_.value.data, var_.value.data, y.data, save_mean_.data(),
                                            save_invstd_.data(), act);
    } else {
      Backend<Dev>::batchnorm_forward_train_segments(geom(x.shape[0]), static_cast<int>(nseg), trained_segments_.data(),
                                                     x.data, scale_.value.data, shift_.value.data, mean_.value.data,
                                                     var_.value.data, y.data, save_mean_.data(), save_invstd_.data(), act);
    }
  }
  // y: the activation's output (not read when Act is ops::Identity); dy: the gradient there.
  template <class Act>
  void backward_with(View<const T, Dev> x, View<const T, Dev> y, View<const T, Dev> dy, View<T, Dev> dx,
                      bool param_grads, const Act& act) {
    if (!train_) {
      // Evaluation mode is an affine map per channel with the running statistics, so
      // dx = gamma / sqrt(var + eps) * dy. This is what a frozen f with batch norm needs (the
      // trainer runs f in evaluation mode and back-propagates L_CONST through it).
      if (param_grads)
        throw error("BatchNorm2d: parameter gradients after an evaluation-mode forward are not supported "
                    "(freeze the network, or train it in training mode)");
      if (!dx.data) return;
      Backend<Dev>::batchnorm_backward_eval(geom(x.shape[0]), dy.data, scale_.value.data, var_.value.data, dx.data,
                                            y.data, act);
      return;
    }
    T* dgamma = scale_.grad.data;
    T* dbeta = shift_.grad.data;
    if (!param_grads) {
      // Frozen: the parameter gradients are computed into scratch and dropped.
      scratch_.resize(Shape{2 * c_});
      dgamma = scratch_.data();
      dbeta = scratch_.data() + c_;
    }
    if (trained_segments_.size() <= 1) {
      Backend<Dev>::batchnorm_backward(geom(x.shape[0]), x.data, dy.data, scale_.value.data, save_mean_.data(),
                                       save_invstd_.data(), dx.data, dgamma, dbeta, y.data, act);
    } else {  // segment by segment, as the forward pass was; dgamma and dbeta accumulate over them
      Backend<Dev>::batchnorm_backward_segments(geom(x.shape[0]), static_cast<int>(trained_segments_.size()),
                                                trained_segments_.data(), x.data, dy.data, scale_.value.data,
                                                save_mean_.data(), save_invstd_.data(), dx.data, dgamma, dbeta, y.data,
                                                act);
    }
  }

  BnGeom geom(std::int64_t n) const {
    BnGeom g;
    g.n = static_cast<int>(n);
    g.c = c_;
    g.hw = hw_;
    g.eps = eps;
    g.momentum = momentum;
    return g;
  }
  int c_ = 0;
  long hw_ = 1;
  bool train_ = true;
  Param<T, Dev> scale_, shift_, mean_, var_;
  std::vector<std::int64_t> segments_;  // the next forward's
  std::vector<int> trained_segments_;   // the last training forward's (as the backends take them)
  Tensor<T, Dev> save_mean_, save_invstd_, scratch_;  // save_*: one row of c_ per segment
};

}  // namespace layers

struct BatchNorm2d {
  template <class T, class Dev>
  using layer = layers::BatchNorm2dLayer<T, Dev>;
};

}  // namespace dtn
