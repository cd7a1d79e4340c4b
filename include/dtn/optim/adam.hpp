#pragma once
// Adam over a network's flat parameter arena: one fused update per step.
// Semantics of torch.optim.Adam (weight_decay is L2 added to the gradient, bias-corrected
// moments, eps added after the square root). The state (step count, m, v) can be read and
// restored for exact resume.
#include <cmath>
#include <cstdint>

#include "../backend/backend.hpp"
#include "../core/tensor.hpp"

namespace dtn {

struct AdamConfig {
  double lr = 2e-4;
  double beta1 = 0.5;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

template <class T, class Dev>
class Adam {
 public:
  Adam(View<T, Dev> params, View<T, Dev> grads, AdamConfig cfg = {}) : params_(params), grads_(grads), cfg_(cfg) {
    if (params.size() != grads.size())
      throw shape_error("Adam: " + std::to_string(params.size()) + " parameters but " + std::to_string(grads.size()) +
                        " gradients");
    if (!(cfg.beta1 >= 0 && cfg.beta1 < 1) || !(cfg.beta2 >= 0 && cfg.beta2 < 1) || !(cfg.eps > 0 && std::isfinite(cfg.eps)) ||
        !(cfg.weight_decay >= 0 && std::isfinite(cfg.weight_decay)))
      throw argument_error("Adam: need lr >= 0, 0 <= beta1, beta2 < 1, eps > 0, weight_decay >= 0, all finite");
    check_lr(cfg.lr);
    m_.resize(params.shape);
    v_.resize(params.shape);
    m_.zero();
    v_.zero();
  }
  // Adam over all trainable parameters of a network.
  template <class Net>
  explicit Adam(Net& net, AdamConfig cfg = {}) : Adam(net.parameters(), net.gradients(), cfg) {}

  void step() {
    ++t_;
    Backend<Dev>::adam_update(params_.size(), params_.data, grads_.data, m_.data(), v_.data(), scalars(t_));
  }

  // The scalars of step number t (1-based): learning rate, betas and bias corrections.
  AdamStep<T> scalars(std::int64_t t) const {
    AdamStep<T> s;
    s.lr = static_cast<T>(cfg_.lr);
    s.beta1 = static_cast<T>(cfg_.beta1);
    s.beta2 = static_cast<T>(cfg_.beta2);
    s.eps = static_cast<T>(cfg_.eps);
    s.weight_decay = static_cast<T>(cfg_.weight_decay);
    // beta^t by repeated multiplication rather than std::pow: the result then does not depend on
    // whether the compiler folds pow at compile time (correctly rounded) or calls libm at run
    // time, which would break bitwise-exact resume.
    double p1 = 1, p2 = 1;
    for (std::int64_t i = 0; i < t; ++i) {
      p1 *= cfg_.beta1;
      p2 *= cfg_.beta2;
    }
    s.bias_correction1 = static_cast<T>(1.0 - p1);
    s.bias_correction2 = static_cast<T>(1.0 - p2);
    s.one_minus_beta1 = static_cast<T>(1.0 - cfg_.beta1);
    s.one_minus_beta2 = static_cast<T>(1.0 - cfg_.beta2);
    return s;
  }
  // A step whose scalars are read from device memory (write scalars(steps() + 1) there first)
  // and which does nothing when *skip != 0. It does not advance steps(): call advance() once the
  // host knows the step was applied. Used by graph-captured training steps.
  void step_device(const AdamStep<T>* scalars_on_device, const int* skip_on_device) {
    Backend<Dev>::adam_update_device(params_.size(), params_.data, grads_.data, m_.data(), v_.data(), scalars_on_device,
                                     skip_on_device);
  }
  void advance() { ++t_; }

  const AdamConfig& config() const { return cfg_; }
  void set_lr(double lr) {
    check_lr(lr);
    cfg_.lr = lr;
  }
  std::int64_t steps() const { return t_; }
  // State for checkpoints.
  View<T, Dev> first_moment() { return m_.view(); }
  View<T, Dev> second_moment() { return v_.view(); }
  View<const T, Dev> first_moment() const { return m_.view(); }
  View<const T, Dev> second_moment() const { return v_.view(); }
  void set_steps(std::int64_t t) {
    if (t < 0) throw argument_error("Adam::set_steps: negative step count");
    t_ = t;
  }

 private:
  static void check_lr(double lr) {
    if (!(lr >= 0 && std::isfinite(lr)))
      throw argument_error("Adam: the learning rate must be finite and >= 0, got " + std::to_string(lr));
  }
  View<T, Dev> params_, grads_;
  AdamConfig cfg_;
  Tensor<T, Dev> m_, v_;
  std::int64_t t_ = 0;
};

}  // namespace dtn
