#pragma once
// Parameters: each layer declares its tensors (shape, how to initialise, trainable or a buffer
// such as batch norm's running statistics); the network packs all of them into flat arenas, so
// one fused optimizer step, one memset for zero_grad and one checkpoint record per tensor.
#include <cmath>
#include <string>

#include "../core/rng.hpp"
#include "../core/tensor.hpp"

namespace dtn {

// How weights are initialised.
enum class InitScheme {
  pytorch,  // PyTorch's defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases
  dcgan     // N(0, 0.02) for weights, 0 for biases, batch norm scale N(1, 0.02)
};

enum class ParamRole { weight, bias, bn_scale, bn_shift, running_mean, running_var };

template <class T, class Dev>
struct Param {
  Shape shape;
  ParamRole role = ParamRole::weight;
  long fan_in = 1;          // PyTorch's fan_in for this tensor (used by the pytorch scheme)
  View<T, Dev> value;       // set by the network after packing
  View<T, Dev> grad;        // empty for buffers
  bool trainable() const { return role != ParamRole::running_mean && role != ParamRole::running_var; }
};

// Declares a layer's weight and bias the way PyTorch initialises them: both from the weight's
// fan_in, the bias one value per output.
template <class T, class Dev>
void declare_weight_and_bias(Param<T, Dev>& weight, Shape weight_shape, long fan_in, Param<T, Dev>& bias,
                             int outputs) {
  weight.shape = weight_shape;
  weight.role = ParamRole::weight;
  weight.fan_in = fan_in;
  bias.shape = Shape{outputs};
  bias.role = ParamRole::bias;
  bias.fan_in = fan_in;
}

// Writes initial values for one parameter into host memory.
template <class T>
void init_values(ParamRole role, long fan_in, InitScheme scheme, Rng& rng, T* out, std::size_t n) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in > 0 ? fan_in : 1));
  for (std::size_t i = 0; i < n; ++i) {
    double v = 0;
    switch (role) {
      case ParamRole::weight: v = scheme == InitScheme::pytorch ? rng.uniform(-bound, bound) : rng.normal(0, 0.02); break;
      case ParamRole::bias: v = scheme == InitScheme::pytorch ? rng.uniform(-bound, bound) : 0.0; break;
      case ParamRole::bn_scale: v = scheme == InitScheme::pytorch ? 1.0 : rng.normal(1.0, 0.02); break;
      case ParamRole::bn_shift: v = 0.0; break;
      case ParamRole::running_mean: v = 0.0; break;
      case ParamRole::running_var: v = 1.0; break;
    }
    out[i] = static_cast<T>(v);
  }
}

}  // namespace dtn
