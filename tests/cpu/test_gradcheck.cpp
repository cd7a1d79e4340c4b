// Every layer and every loss goes through the numerical gradient check (double precision).
// The bound and why it is 1e-6: see include/dtn/testing/gradcheck.hpp.
#include <doctest/doctest.h>

#include <dtn/dtn.hpp>
#include <dtn/testing/gradcheck.hpp>
#include <limits>
#include <string>

using dtn::Shape;
using dtn::testing::GradCheckReport;

namespace {
constexpr double kBound = 1e-6;

template <class Spec>
void check(Shape sample, int batch, bool train = true) {
  GradCheckReport r = dtn::testing::gradcheck_layer<Spec>(sample, batch, 3, train);
  INFO("worst: " << r.worst);
  CHECK(r.checked > 0);
  CHECK(r.max_error < kBound);
}
template <class NetSpec>
void check_net(Shape sample, int batch) {
  GradCheckReport r = dtn::testing::gradcheck_network<NetSpec>(sample, batch, 5, true);
  INFO("worst: " << r.worst);
  CHECK(r.checked > 0);
  CHECK(r.max_error < kBound);
}
}  // namespace

TEST_CASE("gradcheck: Conv2d 3x3 stride 1 pad 1") { check<dtn::Conv2d<4, 3, 1, 1>>(Shape{3, 6, 6}, 2); }
TEST_CASE("gradcheck: Conv2d 3x3 stride 1 pad 1 through Winograd F(2x2, 3x3) (f's layers)") {
  dtn::ConvGeom g;
  g.n = 2, g.c_in = 4, g.h_in = g.h_out = 6, g.w_in = g.w_out = 4, g.c_out = 5, g.kh = g.kw = 3, g.stride = 1, g.pad = 1;
  REQUIRE(dtn::cpu::winograd::fits(g));  // the forward and data passes below run through it
  check<dtn::Conv2d<5, 3, 1, 1>>(Shape{4, 6, 4}, 2);
}
TEST_CASE("gradcheck: Conv2d 3x3 stride 2 pad 1 (D's layers)") { check<dtn::Conv2d<5, 3, 2, 1>>(Shape{2, 7, 8}, 3); }
TEST_CASE("gradcheck: Conv2d 3x3 stride 2 pad 1 through Winograd F(2x2, 2x2) per parity (D.3's and D.6's layers)") {
  // All three passes through winograd_s2k3.hpp (the layer above, with an odd height, goes through
  // im2col + GEMM).
  dtn::ConvGeom g;
  g.n = 2, g.c_in = 4, g.h_in = 4, g.w_in = 8, g.c_out = 5, g.kh = g.kw = 3, g.stride = 2, g.pad = 1;
  g.h_out = 2, g.w_out = 4;
  REQUIRE(dtn::cpu::winograd_s2k3::fits(g));
  check<dtn::Conv2d<5, 3, 2, 1>>(Shape{4, 4, 8}, 2);
}
TEST_CASE("gradcheck: Conv2d 4x4 valid, no bias") { check<dtn::Conv2d<3, 4, 1, 0, false>>(Shape{4, 4, 4}, 2); }
TEST_CASE("gradcheck: ConvTranspose2d 4x4 stride 1 pad 0 (g's first layer)") {
  check<dtn::ConvTranspose2d<3, 4, 1, 0>>(Shape{5, 1, 1}, 3);
}
TEST_CASE("gradcheck: ConvTranspose2d 4x4 stride 2 pad 1") { check<dtn::ConvTranspose2d<2, 4, 2, 1>>(Shape{3, 3, 4}, 2); }
TEST_CASE("gradcheck: 4x4 stride 2 pad 1 through Winograd F(2x2, 2x2) per parity (g.3's and g.6's layers)") {
  // The transposed convolution's forward is the data pass of the convolution from its output to
  // its input, its input gradient that convolution's forward and its weight gradient that
  // convolution's filter pass: all three through winograd_s2.hpp.
  dtn::ConvGeom g;
  g.n = 2, g.c_in = 4, g.h_in = 4, g.w_in = 8, g.c_out = 5, g.kh = g.kw = 4, g.stride = 2, g.pad = 1;
  g.h_out = 2, g.w_out = 4;
  REQUIRE(dtn::cpu::winograd_s2::fits(g));
  check<dtn::ConvTranspose2d<4, 4, 2, 1>>(Shape{5, 2, 4}, 2);  // that geometry, channels as g's
  check<dtn::Conv2d<5, 4, 2, 1>>(Shape{4, 4, 8}, 2);           // and as a convolution
}
TEST_CASE("gradcheck: Linear") { check<dtn::Linear<5>>(Shape{7}, 4); }
TEST_CASE("gradcheck: Linear on a [C, H, W] input (flattened)") { check<dtn::Linear<3>>(Shape{2, 2, 2}, 3); }
TEST_CASE("gradcheck: BatchNorm2d, training mode") { check<dtn::BatchNorm2d>(Shape{3, 4, 4}, 4); }
TEST_CASE("gradcheck: BatchNorm2d fused with the activation after it (training mode)") {
  // Sequential runs these pairs as one fused pass (nn/contract.hpp).
  check_net<dtn::Sequential<dtn::BatchNorm2d, dtn::ReLU>>(Shape{3, 4, 4}, 4);
  check_net<dtn::Sequential<dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>>>(Shape{2, 3, 5}, 3);
  check_net<dtn::Sequential<dtn::BatchNorm2d, dtn::Tanh>>(Shape{3, 2, 2}, 5);
}
TEST_CASE("gradcheck: BatchNorm2d on a batch of segments (each its own statistics), alone and fused") {
  const std::vector<std::int64_t> segments = {3, 1, 2};
  for (std::uint64_t seed : {2u, 7u}) {
    GradCheckReport a = dtn::testing::gradcheck_network<dtn::Sequential<dtn::BatchNorm2d>>(Shape{3, 4, 4}, segments, seed);
    GradCheckReport b = dtn::testing::gradcheck_network<dtn::Sequential<dtn::Conv2d<3, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU>>(
        Shape{2, 4, 4}, segments, seed);
    INFO("worst: " << a.worst << " / " << b.worst);
    CHECK(a.checked > 0);
    CHECK(b.checked > 0);
    CHECK(a.max_error < kBound);
    CHECK(b.max_error < kBound);
  }
}
TEST_CASE("gradcheck: BatchNorm2d, evaluation mode in a frozen network (input gradient)") {
  // A frozen f with batch norm: the trainer runs it in evaluation mode and back-propagates
  // through it. Running statistics set away from (0, 1) so the check is not trivial.
  using Net1 = dtn::Net<dtn::Sequential<dtn::Conv2d<3, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU>, double, dtn::Cpu>;
  Net1 net(Shape{2, 5, 5}, "f", dtn::InitScheme::pytorch, 4);
  dtn::Rng rng(21);
  for (auto& e : net.entries()) {
    auto v = e.param->value;
    for (std::size_t i = 0; i < v.size(); ++i)
      v.data[i] += e.name == "f.1.running_var" ? rng.uniform(0.5, 2.0) : rng.uniform(-0.5, 0.5);
  }
  net.eval();
  net.freeze();
  std::vector<double> x(3 * 2 * 25);
  for (auto& v : x) v = rng.uniform(-1, 1);
  dtn::Tensor<double> r(Shape{3, 3, 5, 5});
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = rng.uniform(-1, 1);
  auto f = [&](const std::vector<double>& xv, std::vector<double>* grad) {
    auto xt = dtn::from_vector(Shape{3, 2, 5, 5}, xv);
    auto y = net.forward(xt.view());
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += r[i] * y.data[i];
    if (grad) *grad = dtn::to_vector(net.backward(r.view()));
    return s;
  };
  for (bool fusion : {true, false}) {  // batch norm and ReLU as one pass, and as two
    CAPTURE(fusion);
    net.set_fusion(fusion);
    GradCheckReport rep = dtn::testing::gradcheck_function(f, x);
    INFO(rep.worst);
    CHECK(rep.checked == static_cast<int>(x.size()));
    CHECK(rep.max_error < kBound);
  }
  // Unfrozen, evaluation mode: parameter gradients are refused with a clear message.
  net.freeze(false);
  auto xt = dtn::from_vector(Shape{3, 2, 5, 5}, x);
  net.forward(xt.view());
  CHECK_THROWS_AS(net.backward(r.view()), dtn::error);
}

TEST_CASE("gradcheck: MaxPool2d 2") { check<dtn::MaxPool2d<2>>(Shape{2, 6, 6}, 2); }
TEST_CASE("gradcheck: MaxPool2d 4 and 3-stride-2") {
  check<dtn::MaxPool2d<4>>(Shape{2, 4, 4}, 3);
  check<dtn::MaxPool2d<3, 2>>(Shape{2, 7, 7}, 2);
}
TEST_CASE("gradcheck: ReLU, LeakyReLU(0.2), Tanh") {
  check<dtn::ReLU>(Shape{3, 4, 4}, 2);
  check<dtn::LeakyReLU<1, 5>>(Shape{3, 4, 4}, 2);
  check<dtn::Tanh>(Shape{3, 4, 4}, 2);
}
TEST_CASE("gradcheck: Flatten, RepeatChannels, ResizeBilinear 28->32 and 5->3") {
  check<dtn::Flatten>(Shape{2, 3, 3}, 2);
  check<dtn::RepeatChannels<3>>(Shape{1, 5, 5}, 2);
  check<dtn::ResizeBilinear<32>>(Shape{1, 28, 28}, 1);
  check<dtn::ResizeBilinear<3, 4>>(Shape{2, 5, 7}, 2);
}

TEST_CASE("gradcheck: MSE loss") {
  dtn::Rng rng(5);
  std::vector<double> a(40), b(40);
  for (auto& v : a) v = rng.uniform(-1, 1);
  for (auto& v : b) v = rng.uniform(-1, 1);
  dtn::MSELoss<double, dtn::Cpu> mse;
  auto bt = dtn::from_vector(Shape{40}, b);
  auto f = [&](const std::vector<double>& x, std::vector<double>* g) {
    auto xt = dtn::from_vector(Shape{40}, x);
    mse.compute(xt.view(), bt.view(), 0.7);
    if (g) *g = dtn::to_vector(mse.grad());
    return 0.7 * mse.value();
  };
  GradCheckReport r = dtn::testing::gradcheck_function(f, a);
  INFO(r.worst);
  CHECK(r.checked > 0);
  CHECK(r.max_error < kBound);
}

TEST_CASE("gradcheck: total variation loss (B = 1)") {
  dtn::Rng rng(6);
  std::vector<double> z(2 * 1 * 5 * 6);
  for (auto& v : z) v = rng.uniform(-1, 1);
  dtn::TotalVariationLoss<double, dtn::Cpu> tv(1e-8);
  auto f = [&](const std::vector<double>& x, std::vector<double>* g) {
    auto xt = dtn::from_vector(Shape{2, 1, 5, 6}, x);
    tv.compute(xt.view(), 1.3);
    if (g) *g = dtn::to_vector(tv.grad());
    return 1.3 * tv.value();
  };
  GradCheckReport r = dtn::testing::gradcheck_function(f, z);
  INFO(r.worst);
  CHECK(r.checked > 0);
  CHECK(r.max_error < kBound);
}

TEST_CASE("gradcheck: softmax cross-entropy, K = 3 (ternary D) and K = 10") {
  for (int k : {3, 10}) {
    dtn::Rng rng(7 + k);
    const int n = 5;
    std::vector<double> logits(static_cast<std::size_t>(n * k));
    for (auto& v : logits) v = rng.uniform(-3, 3);
    std::vector<int> t(n);
    for (auto& v : t) v = static_cast<int>(rng.below(static_cast<std::uint64_t>(k)));
    auto tt = dtn::from_vector(Shape{n}, t);
    dtn::CrossEntropyLoss<double, dtn::Cpu> ce;
    auto f = [&](const std::vector<double>& x, std::vector<double>* g) {
      auto xt = dtn::from_vector(Shape{n, k}, x);
      ce.compute(xt.view(), tt.view(), 2.0);
      if (g) *g = dtn::to_vector(ce.grad());
      return 2.0 * ce.value();
    };
    GradCheckReport r = dtn::testing::gradcheck_function(f, logits);
    INFO("K=" << k << " " << r.worst);
    CHECK(r.checked > 0);
    CHECK(r.max_error < kBound);
  }
}

TEST_CASE("gradcheck: a whole small network (gradient crosses every layer kind in sequence)") {
  using Small = dtn::Sequential<dtn::Conv2d<4, 3, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>, dtn::MaxPool2d<2>,
                                dtn::Flatten, dtn::Linear<3>, dtn::Tanh>;
  GradCheckReport r = dtn::testing::gradcheck_network<Small>(Shape{2, 8, 8}, 4, 9, true, 300);
  INFO(r.worst);
  CHECK(r.checked > 100);
  CHECK(r.max_error < kBound);
}

// The checker itself: a wrong gradient fails the bound, and so does a NaN, wherever it comes among
// the checked coordinates (a NaN comparison is false, so a plain running maximum would skip it).
TEST_CASE("gradcheck: the report fails on a wrong or NaN gradient, wherever it comes") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  GradCheckReport good;
  good.add(1.0, 1.0, "a");
  good.add(-2.0, -2.0 + 1e-9, "b");
  CHECK(good.max_error < kBound);
  GradCheckReport wrong;
  wrong.add(1.0, 1.0, "a");
  wrong.add(3.0, 2.0, "b");
  wrong.add(1.0, 1.0, "c");
  CHECK_FALSE(wrong.max_error < kBound);
  CHECK(wrong.worst.rfind("b:", 0) == 0);
  for (int at = 0; at < 3; ++at) {
    CAPTURE(at);
    GradCheckReport r;
    for (int i = 0; i < 3; ++i) r.add(i == at ? nan : 1.0, 1.0, std::string(1, static_cast<char>('a' + i)));
    CHECK_FALSE(r.max_error < kBound);
    CHECK(r.worst.rfind(std::string(1, static_cast<char>('a' + at)) + ":", 0) == 0);
  }
}
