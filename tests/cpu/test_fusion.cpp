// Batch norm fused with the activation after it (nn/contract.hpp, layers/batch_norm.hpp): the
// fused pair must give what the two layers give one after the other, bit for bit, in every mode,
// and must only be formed where that holds.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <dtn/dtn.hpp>
#include <limits>
#include <string>
#include <vector>

using dtn::Shape;

namespace {

// Pairs at the front, in the middle and at the end of a network, with each fusable activation.
using Mixed = dtn::Sequential<dtn::BatchNorm2d, dtn::ReLU, dtn::Conv2d<4, 3, 1, 1>, dtn::BatchNorm2d,
                              dtn::LeakyReLU<1, 5>, dtn::Conv2d<3, 3, 2, 1>, dtn::BatchNorm2d, dtn::Tanh>;

template <class T>
bool same_bits(const T* a, const T* b, std::size_t n) {
  return std::memcmp(a, b, n * sizeof(T)) == 0;
}
template <class T>
bool same_bits(dtn::View<const T, dtn::Cpu> a, dtn::View<const T, dtn::Cpu> b) {
  return a.shape == b.shape && same_bits(a.data, b.data, a.size());
}
template <class T>
dtn::Tensor<T, dtn::Cpu> uniform(Shape s, std::uint64_t seed, double scale = 1) {
  dtn::Rng rng(seed);
  dtn::Tensor<T, dtn::Cpu> t(s);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<T>(scale * rng.uniform(-1, 1));
  return t;
}

// Which kinds a LayerHook sees in a forward pass.
struct Kinds : dtn::LayerHook {
  std::vector<std::string> seen;
  void begin(const dtn::LayerEvent& e) override { seen.push_back(std::to_string(e.layer) + ":" + e.kind); }
  void end(const dtn::LayerEvent&) override {}
};
template <class NetT>
std::vector<std::string> forward_kinds(NetT& net, const dtn::Tensor<float, dtn::Cpu>& x) {
  Kinds k;
  dtn::ScopedLayerHook on(k);
  net.forward(x.view());
  return k.seen;
}

template <class T>
void check_fused_equals_unfused() {
  dtn::Net<Mixed, T> fused(Shape{2, 6, 6}, "m", dtn::InitScheme::pytorch, 11);
  dtn::Net<Mixed, T> plain(Shape{2, 6, 6}, "m", dtn::InitScheme::pytorch, 11);
  plain.set_fusion(false);
  REQUIRE(fused.fusion());
  REQUIRE_FALSE(plain.fusion());
  // Batch norm's scale and shift away from (1, 0), the same in both, so that a good share of
  // its outputs are negative (where ReLU, LeakyReLU and their gradients differ from identity).
  {
    auto a = fused.parameters(), b = plain.parameters();
    dtn::Rng rng(5);
    for (std::size_t i = 0; i < a.size(); ++i) a.data[i] = b.data[i] = a.data[i] + static_cast<T>(rng.uniform(-0.5, 0.5));
  }
  auto x = uniform<T>(Shape{3, 2, 6, 6}, 1, 2.0);
  for (int step = 0; step < 2; ++step) {  // two steps: the running statistics update twice
    CAPTURE(step);
    auto yf = fused.forward(x.view());
    auto yp = plain.forward(x.view());
    REQUIRE(same_bits(yf, yp));
    auto dy = uniform<T>(yf.shape, 20 + step);
    fused.zero_grad();
    plain.zero_grad();
    CHECK(same_bits(fused.backward(dy.view()), plain.backward(dy.view())));
    CHECK(same_bits<T>(fused.gradients(), plain.gradients()));
    CHECK(same_bits<T>(fused.buffers(), plain.buffers()));
    // Without the input gradient (layer 0 is a fused batch norm: dx null).
    fused.zero_grad();
    plain.zero_grad();
    CHECK(fused.backward(dy.view(), false).data == nullptr);
    plain.backward(dy.view(), false);
    CHECK(same_bits<T>(fused.gradients(), plain.gradients()));
  }
  // Evaluation mode in a frozen network (the trainer's f): running statistics, input gradient.
  for (auto* n : {&fused, &plain}) {
    n->eval();
    n->freeze();
  }
  auto yf = fused.forward(x.view());
  REQUIRE(same_bits(yf, plain.forward(x.view())));
  auto dy = uniform<T>(yf.shape, 30);
  CHECK(same_bits(fused.backward(dy.view()), plain.backward(dy.view())));

  // Not a vacuous comparison: on such inputs a ReLU pair clips a good share of its values.
  dtn::Net<dtn::Sequential<dtn::BatchNorm2d, dtn::ReLU>, T> pair(Shape{2, 6, 6}, "r");
  auto y = pair.forward(x.view());
  std::size_t zeros = 0;
  for (std::size_t i = 0; i < y.size(); ++i) zeros += y.data[i] == T(0);
  CHECK(zeros > y.size() / 4);
  CHECK(zeros < 3 * y.size() / 4);
}

}  // namespace

TEST_CASE("activation gradients from the output equal those from the input, bit for bit, NaN and zeros too") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float den = std::numeric_limits<float>::denorm_min();
  std::vector<float> xs = {0.0f, -0.0f, den, -den, 1e-30f, -1e-30f, 1.0f, -1.0f, 3.5f, -7.25f, inf, -inf, nan};
  dtn::Rng rng(3);
  for (int i = 0; i < 200; ++i) xs.push_back(static_cast<float>(rng.uniform(-4, 4)));
  const std::vector<float> gs = {1.0f, -2.5f, 0.0f, -0.0f, inf, nan};
  auto check_op = [&](const auto& op, const char* name) {
    CAPTURE(name);
    int compared = 0;
    for (float x : xs)
      for (float g : gs) {
        const float y = op.forward(x);
        const float a = op.backward(x, y, g), b = op.grad_from_output(y, g);
        CAPTURE(x);
        CAPTURE(g);
        CHECK(same_bits(&a, &b, 1));
        ++compared;
      }
    CHECK(compared == static_cast<int>(xs.size() * gs.size()));
  };
  check_op(dtn::ops::Relu{}, "ReLU");
  check_op(dtn::ops::LeakyRelu{0.2}, "LeakyReLU(0.2)");
  check_op(dtn::ops::LeakyRelu{0.0}, "LeakyReLU(0)");
  check_op(dtn::ops::Tanh{}, "Tanh");
  // A negative slope maps negative inputs to positive outputs: the output no longer tells the
  // side of zero, which is why the layer declines fusion then (see the next test).
  const dtn::ops::LeakyRelu neg{-0.5};
  const float x = -2.0f, y = neg.forward(x);
  CHECK(neg.backward(x, y, 1.0f) != neg.grad_from_output(y, 1.0f));
}

TEST_CASE("batch norm fuses with the activation after it only where the result is exact") {
  using Fusable = dtn::Sequential<dtn::BatchNorm2d, dtn::ReLU, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>,
                                  dtn::BatchNorm2d, dtn::Tanh, dtn::BatchNorm2d, dtn::LeakyReLU<0, 1>>;
  // Not fused: a negative slope; batch norm followed by something that is not an activation;
  // an activation first; two batch norms (the first pairs with nothing, the second with ReLU).
  using Not = dtn::Sequential<dtn::ReLU, dtn::BatchNorm2d, dtn::LeakyReLU<-1, 5>, dtn::BatchNorm2d,
                              dtn::MaxPool2d<2>, dtn::BatchNorm2d, dtn::BatchNorm2d, dtn::ReLU>;
  dtn::Net<Fusable> a(Shape{2, 4, 4}, "a");
  dtn::Net<Not> b(Shape{2, 4, 4}, "b");
  auto x = uniform<float>(Shape{2, 2, 4, 4}, 2);
  CHECK(forward_kinds(a, x) == std::vector<std::string>{"0:BatchNorm2d+ReLU", "2:BatchNorm2d+LeakyReLU",
                                                         "4:BatchNorm2d+Tanh", "6:BatchNorm2d+LeakyReLU"});
  CHECK(forward_kinds(b, x) == std::vector<std::string>{"0:ReLU", "1:BatchNorm2d", "2:LeakyReLU", "3:BatchNorm2d",
                                                        "4:MaxPool2d", "5:BatchNorm2d", "6:BatchNorm2d+ReLU"});
  a.set_fusion(false);
  CHECK(forward_kinds(a, x).size() == 8);
  // Fusion changes neither the parameter names nor the signature (checkpoints stay compatible).
  dtn::Net<Fusable> c(Shape{2, 4, 4}, "a");
  CHECK(a.signature() == c.signature());
  CHECK(c.entries()[4].name == "a.2.weight");
}

TEST_CASE("fused batch norm + activation equals the two layers, bit for bit (float and double)") {
  SUBCASE("float") { check_fused_equals_unfused<float>(); }
  SUBCASE("double") { check_fused_equals_unfused<double>(); }
}

TEST_CASE("fusion is decided at forward(): backward follows the forward it belongs to") {
  // Turning fusion off between forward and backward must not make backward read batch norm's
  // output, which a fused forward never wrote.
  using Pair = dtn::Sequential<dtn::Conv2d<3, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU>;
  dtn::Net<Pair> n1(Shape{2, 5, 5}, "p", dtn::InitScheme::pytorch, 4), n2(Shape{2, 5, 5}, "p", dtn::InitScheme::pytorch, 4);
  auto x = uniform<float>(Shape{2, 2, 5, 5}, 7);
  auto y1 = n1.forward(x.view());
  n2.forward(x.view());
  auto dy = uniform<float>(y1.shape, 8);
  n1.set_fusion(false);  // after the fused forward
  CHECK(same_bits(n1.backward(dy.view()), n2.backward(dy.view())));
  CHECK(same_bits<float>(n1.gradients(), n2.gradients()));
}
