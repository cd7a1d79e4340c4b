#pragma once
// Loss functors with value and gradient. Each keeps its scalar loss and its gradient in device
// buffers of its own; compute() does not synchronise with the host (so a training step can be
// captured as a CUDA graph); value() copies the scalar to the host.
//
//   MSELoss           mean((a - b)^2)                     (the distance d of L_CONST and L_TID)
//   TotalVariationLoss (1/N) sum sqrt(dh^2 + dv^2 + eps)   (L_TV with B = 1; see below)
//   CrossEntropyLoss  mean_i -log softmax(logits_i)[t_i]   (classifiers and the ternary D terms)
//
// The gradient is written already multiplied by grad_scale, so a weighted sum of losses (for
// example alpha * L_CONST) needs no extra pass.
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../backend/backend.hpp"
#include "../core/tensor.hpp"

namespace dtn {

template <class T, class Dev>
class LossBase {
 public:
  View<const T, Dev> loss() const { return loss_.view(); }
  View<const T, Dev> grad() const { return grad_.view(); }
  // The last computed loss, copied to the host (synchronises on a GPU).
  T value() const { return to_vector(loss_.view())[0]; }

 protected:
  LossBase() : loss_(Shape{1}) { loss_.zero(); }
  Tensor<T, Dev> loss_, grad_;
};

template <class T, class Dev>
class MSELoss : public LossBase<T, Dev> {
 public:
  static constexpr const char* kind = "MSELoss";
  // loss = mean((a - b)^2); grad (w.r.t. a) = grad_scale * 2 (a - b) / numel.
  void compute(View<const T, Dev> a, View<const T, Dev> b, T grad_scale = T(1), bool with_grad = true) {
    if (a.size() != b.size() || a.size() == 0)
      throw shape_error(std::string(kind) + ": inputs differ in size: " + a.shape.str() + " and " + b.shape.str());
    if (with_grad) this->grad_.resize(a.shape);
    Backend<Dev>::mse(a.size(), a.data, b.data, this->loss_.data(), with_grad ? this->grad_.data() : nullptr, grad_scale);
  }
  T operator()(View<const T, Dev> a, View<const T, Dev> b) {
    compute(a, b);
    return this->value();
  }
};

// Anisotropic total variation with B = 1, as written in the paper:
//   L_TV(z) = sum_{i,j} ((z_{i,j+1} - z_{i,j})^2 + (z_{i+1,j} - z_{i,j})^2)^{1/2}
// summed over channels and averaged over the batch. A difference past the last row or column is
// taken as 0. The root is not differentiable where both differences vanish (flat regions are
// common in generated digits), so we use sqrt(s + eps) with eps = 1e-8 by default: the value
// moves by at most sqrt(eps) = 1e-4 per pixel, and the gradient is bounded by 1/sqrt(eps)
// times the differences, which is 0 on flat regions (the minimal-norm subgradient).
template <class T, class Dev>
class TotalVariationLoss : public LossBase<T, Dev> {
 public:
  static constexpr const char* kind = "TotalVariationLoss";
  explicit TotalVariationLoss(T eps = T(1e-8)) : eps_(eps) {
    if (!(eps > T(0) && std::isfinite(static_cast<double>(eps))))
      throw argument_error("TotalVariationLoss: eps must be positive and finite");
  }
  void compute(View<const T, Dev> z, T grad_scale = T(1), bool with_grad = true) {
    if (z.shape.rank() != 4) throw_shape(kind, "an [N, C, H, W] image batch", z.shape);
    if (with_grad) this->grad_.resize(z.shape);
    Backend<Dev>::total_variation(static_cast<int>(z.shape[0]), static_cast<int>(z.shape[1]), static_cast<int>(z.shape[2]),
                                  static_cast<int>(z.shape[3]), z.data, eps_, this->loss_.data(),
                                  with_grad ? this->grad_.data() : nullptr, grad_scale);
  }
  T operator()(View<const T, Dev> z) {
    compute(z);
    return this->value();
  }
  T eps() const { return eps_; }

 private:
  T eps_;
};

template <class T, class Dev>
class CrossEntropyLoss : public LossBase<T, Dev> {
 public:
  static constexpr const char* kind = "CrossEntropyLoss";
  // logits [N, K] (or [N, K, 1, 1]); targets [N] class indices in [0, K) on the same device.
  // A target outside [0, K) throws argument_error on the CPU, naming its row; on a GPU the targets
  // are not read back (that would synchronise each step), and the loss and that row's gradient are
  // NaN instead, which the trainer's non-finite check reports.
  void compute(View<const T, Dev> logits, View<const int, Dev> targets, T grad_scale = T(1), bool with_grad = true) {
    const int n = static_cast<int>(logits.shape[0]);
    const int k = n > 0 ? static_cast<int>(logits.size() / static_cast<std::size_t>(n)) : 0;
    if (logits.shape.rank() < 2 || n == 0 || k < 2)
      throw_shape(kind, "logits [N, K] with K >= 2", logits.shape);
    if (targets.size() != static_cast<std::size_t>(n))
      throw shape_error(std::string(kind) + ": " + std::to_string(n) + " logit rows but " +
                        std::to_string(targets.size()) + " targets");
    if constexpr (std::is_same<Dev, Cpu>::value) {
      for (int i = 0; i < n; ++i)
        if (targets.data[i] < 0 || targets.data[i] >= k)
          throw argument_error(std::string(kind) + ": target " + std::to_string(targets.data[i]) + " of row " +
                               std::to_string(i) + " is outside [0, " + std::to_string(k) + ")");
    }
    if (with_grad) this->grad_.resize(logits.shape);
    Backend<Dev>::softmax_cross_entropy(n, k, logits.data, targets.data, this->loss_.data(),
                                        with_grad ? this->grad_.data() : nullptr, grad_scale);
  }
  T operator()(View<const T, Dev> logits, View<const int, Dev> targets) {
    compute(logits, targets);
    return this->value();
  }
};

// A device tensor of n copies of one class index (targets of the ternary D terms).
template <class Dev>
Tensor<int, Dev> constant_targets(int n, int cls) {
  std::vector<int> host(static_cast<std::size_t>(n), cls);
  Tensor<int, Dev> t(Shape{n});
  Copy<Dev, Cpu>::run(t.data(), host.data(), host.size() * sizeof(int));
  return t;
}

}  // namespace dtn
