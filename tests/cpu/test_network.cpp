// Sequential composition: names, signatures, shape errors that name the layer, freezing,
// gradients that cross networks, Adam, and a small classifier that must learn.
#include <doctest/doctest.h>

#include <cmath>
#include <dtn/dtn.hpp>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

using dtn::Shape;

namespace {
using G = dtn::Sequential<dtn::ConvTranspose2d<16, 4, 1, 0>, dtn::BatchNorm2d, dtn::ReLU,
                          dtn::ConvTranspose2d<1, 4, 2, 1>, dtn::Tanh>;
using D = dtn::Sequential<dtn::Conv2d<8, 3, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>, dtn::Conv2d<3, 4, 1, 0>>;

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dtn::error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("parameters have stable PyTorch-style names and one flat arena") {
  dtn::Net<G> g(Shape{8, 1, 1}, "g");
  std::vector<std::string> names;
  for (auto& e : g.entries()) names.push_back(e.name);
  const std::vector<std::string> expect = {"g.0.weight",       "g.0.bias",        "g.1.weight", "g.1.bias",
                                           "g.1.running_mean", "g.1.running_var", "g.3.weight", "g.3.bias"};
  CHECK(names == expect);
  // ConvTranspose2d weight [in, out, k, k] as in PyTorch
  CHECK(g.entries()[0].param->shape == Shape{8, 16, 4, 4});
  CHECK(g.num_parameters() == 8 * 16 * 16 + 16 + 16 + 16 + 16 * 1 * 16 + 1);
  CHECK(g.buffers().size() == 32);
  CHECK(g.output_sample_shape() == Shape{1, 8, 8});
  CHECK(g.signature().find("0:ConvTranspose2d,weight[8, 16, 4, 4]") != std::string::npos);
}

TEST_CASE("initialisation is seeded and follows the chosen scheme") {
  dtn::Net<D> a(Shape{1, 8, 8}, "d", dtn::InitScheme::pytorch, 11), b(Shape{1, 8, 8}, "d", dtn::InitScheme::pytorch, 11),
      c(Shape{1, 8, 8}, "d", dtn::InitScheme::pytorch, 12);
  CHECK(dtn::to_vector(a.parameters()) == dtn::to_vector(b.parameters()));
  CHECK(dtn::to_vector(a.parameters()) != dtn::to_vector(c.parameters()));
  // PyTorch default: conv weights within 1/sqrt(fan_in) = 1/3 for 1 x 3 x 3
  auto w = a.entries()[0].param->value;
  double mx = 0;
  for (std::size_t i = 0; i < w.size(); ++i) mx = std::max(mx, std::abs(static_cast<double>(w.data[i])));
  CHECK(mx <= 1.0 / 3.0);
  CHECK(mx > 0.2);
  // DCGAN: N(0, 0.02) weights, zero biases, batch-norm scale around 1
  dtn::Net<D> dc(Shape{1, 8, 8}, "d", dtn::InitScheme::dcgan, 11);
  auto wd = dc.entries()[0].param->value;
  double ss = 0;
  for (std::size_t i = 0; i < wd.size(); ++i) ss += wd.data[i] * wd.data[i];
  const double sd = std::sqrt(ss / static_cast<double>(wd.size()));
  CHECK(sd > 0.01);
  CHECK(sd < 0.04);
  CHECK(dc.entries()[1].param->value.data[0] == 0.0f);
}

TEST_CASE("shape errors name the network, the layer and both shapes") {
  dtn::Net<D> d(Shape{1, 32, 32}, "D");
  dtn::Tensor<float> wrong(Shape{4, 3, 32, 32});
  const std::string m = message_of([&] { d.forward(wrong.view()); });
  CHECK(m.find("D.0 (Conv2d)") != std::string::npos);
  CHECK(m.find("[N, 1, 32, 32]") != std::string::npos);
  CHECK(m.find("[4, 3, 32, 32]") != std::string::npos);
  CHECK_THROWS_AS(d.forward(wrong.view()), dtn::shape_error);
  // A network whose layers do not fit its input: the message names the offending layer.
  using Bad = dtn::Sequential<dtn::Conv2d<4, 3, 2, 0>, dtn::MaxPool2d<4>>;
  const std::string m2 = message_of([] { dtn::Net<Bad> b(Shape{1, 5, 5}, "bad"); });
  CHECK(m2.find("bad.1 (MaxPool2d") != std::string::npos);
  CHECK(m2.find("[4, 2, 2]") != std::string::npos);
  CHECK_THROWS_AS(dtn::Net<Bad>(Shape{1, 5, 5}, "bad"), dtn::shape_error);
  // Backward with a gradient of the wrong shape.
  dtn::Tensor<float> x(Shape{2, 1, 32, 32});
  x.zero();
  d.forward(x.view());
  dtn::Tensor<float> dy(Shape{2, 3});
  CHECK_THROWS_AS(d.backward(dy.view()), dtn::shape_error);
  // Losses on mismatched inputs.
  dtn::MSELoss<float, dtn::Cpu> mse;
  dtn::Tensor<float> a(Shape{3}), b(Shape{4});
  CHECK(message_of([&] { mse.compute(a.view(), b.view()); }).find("MSELoss") != std::string::npos);
  dtn::CrossEntropyLoss<float, dtn::Cpu> ce;
  auto t = dtn::constant_targets<dtn::Cpu>(5, 1);
  dtn::Tensor<float> logits(Shape{4, 3});
  CHECK(message_of([&] { ce.compute(logits.view(), t.view()); }).find("4 logit rows but 5 targets") != std::string::npos);
  using AdamF = dtn::Adam<float, dtn::Cpu>;
  using TVF = dtn::TotalVariationLoss<float, dtn::Cpu>;
  CHECK_THROWS_AS(AdamF(a.view(), b.view()), dtn::shape_error);
  dtn::Tensor<float> a2(Shape{3});
  dtn::AdamConfig bad;
  bad.beta1 = 1.5;
  CHECK_THROWS_AS(AdamF(a.view(), a2.view(), bad), dtn::argument_error);
  // Non-finite settings are refused too (an infinite rate made every parameter inf or NaN at the
  // first update), in the constructor and in set_lr.
  for (double x : {std::numeric_limits<double>::infinity(), std::nan(""), -1.0}) {
    CAPTURE(x);
    dtn::AdamConfig c;
    c.lr = x;
    CHECK_THROWS_AS(AdamF(a2.view(), a2.view(), c), dtn::argument_error);
    c = dtn::AdamConfig{};
    c.eps = x;
    CHECK_THROWS_AS(AdamF(a2.view(), a2.view(), c), dtn::argument_error);
    c = dtn::AdamConfig{};
    c.weight_decay = x;
    CHECK_THROWS_AS(AdamF(a2.view(), a2.view(), c), dtn::argument_error);
    AdamF ok(a2.view(), a2.view());
    CHECK_THROWS_WITH_AS(ok.set_lr(x), doctest::Contains("Adam: the learning rate must be finite and >= 0"), dtn::argument_error);
    CHECK(ok.config().lr == dtn::AdamConfig{}.lr);
  }
  CHECK_THROWS_AS(TVF(0.0f), dtn::argument_error);
  CHECK_THROWS_AS(TVF{std::numeric_limits<float>::infinity()}, dtn::argument_error);  // braces: TVF(name) declares
  CHECK_THROWS_AS(TVF{std::nanf("")}, dtn::argument_error);
  CHECK_THROWS_AS(dtn::Shape({1, 2, 3, 4, 5}), dtn::argument_error);
}

TEST_CASE("tensors, layers and losses refuse what does not fit, saying what was expected") {
  dtn::Tensor<float> t(Shape{4, 2});
  t.zero();
  CHECK(message_of([&] { t.view().slice(3, 2); }) == "dtn::View::slice: samples [3, 5) out of a batch of 4");
  CHECK_THROWS_AS(t.view().slice(-1, 1), dtn::argument_error);
  CHECK(t.view().slice(4, 0).shape == Shape{0, 2});  // an empty slice at the end is fine
  dtn::Tensor<float> u(Shape{3, 3});
  const auto copy_t_to_u = [&] { dtn::copy<float, dtn::Cpu, dtn::Cpu>(t.view(), u.view()); };
  CHECK(message_of(copy_t_to_u) == "dtn::copy: source [4, 2] and destination [3, 3] differ in size");
  CHECK_THROWS_AS(copy_t_to_u(), dtn::shape_error);
  CHECK(message_of([] { dtn::from_vector(Shape{2, 2}, std::vector<float>(3)); }) ==
        "dtn::from_vector: 3 values for shape [2, 2]");
  std::ostringstream os;
  os << Shape{2, 3, 1};
  CHECK(os.str() == "[2, 3, 1]");
  // A kernel larger than the padded input.
  using Big = dtn::Sequential<dtn::Conv2d<4, 5, 1, 1>>;
  const std::string m = message_of([] { dtn::Net<Big> n(Shape{1, 2, 3}, "big"); });
  CHECK(m.find("big.0 (Conv2d: expected an input of at least 3x3 pixels for kernel 5 and padding 1, got [1, 2, 3])") !=
        std::string::npos);
  // Cross-entropy over a single class is meaningless.
  dtn::CrossEntropyLoss<float, dtn::Cpu> ce;
  auto tg = dtn::constant_targets<dtn::Cpu>(4, 0);
  dtn::Tensor<float> one_class(Shape{4, 1});
  one_class.zero();
  const std::string m2 = message_of([&] { ce.compute(one_class.view(), tg.view()); });
  CHECK(m2.find("CrossEntropyLoss") != std::string::npos);
  CHECK(m2.find("K >= 2") != std::string::npos);
  // A class index outside [0, K) is named with its row, above and below the range (before, the
  // CPU loss read past the row's logits).
  dtn::Tensor<float> logits(Shape{3, 4});
  logits.zero();
  for (int bad : {4, -1, 1000}) {
    CAPTURE(bad);
    const auto t = dtn::from_vector<int>(Shape{3}, {0, 3, bad});
    const std::string m3 = message_of([&] { ce.compute(logits.view(), t.view()); });
    CHECK(m3 == "CrossEntropyLoss: target " + std::to_string(bad) + " of row 2 is outside [0, 4)");
    CHECK_THROWS_AS(ce.compute(logits.view(), t.view(), 1.0f, false), dtn::argument_error);
  }
  // Both ends of the range are classes.
  const auto ok = dtn::from_vector<int>(Shape{3}, {0, 3, 2});
  ce.compute(logits.view(), ok.view());
  CHECK(ce.value() == doctest::Approx(std::log(4.0)).epsilon(1e-6));
}

TEST_CASE("a gradient crosses networks: D's input gradient drives g, and a frozen net passes it through") {
  dtn::Net<G> g(Shape{8, 1, 1}, "g", dtn::InitScheme::pytorch, 1);
  dtn::Net<D> d(Shape{1, 8, 8}, "d", dtn::InitScheme::pytorch, 2);
  d.freeze();
  dtn::Tensor<float> z(Shape{4, 8, 1, 1});
  dtn::Rng rng(3);
  for (std::size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>(rng.normal());
  auto targets = dtn::constant_targets<dtn::Cpu>(4, 2);
  dtn::CrossEntropyLoss<float, dtn::Cpu> ce;
  const auto d_before = dtn::to_vector(d.parameters());
  dtn::Adam<float, dtn::Cpu> opt(g, dtn::AdamConfig{1e-2, 0.5, 0.999, 1e-8, 0});
  float first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    auto img = g.forward(z.view());
    auto logits = d.forward(img);
    ce.compute(logits, targets.view());
    if (step == 0) first = ce.value();
    last = ce.value();
    g.zero_grad();
    d.zero_grad();
    auto dimg = d.backward(ce.grad());
    g.backward(dimg, false);
    opt.step();
  }
  // g learned to make D say "class 2"; D itself never changed and got no gradients.
  CHECK(last < 0.5f * first);
  CHECK(dtn::to_vector(d.parameters()) == d_before);
  for (float v : dtn::to_vector(d.gradients())) REQUIRE(v == 0.0f);
}

namespace {
// Every step goes through this one function, as every step of a training run goes through one
// call site: with FMA contraction (-march=native), two inlined copies of the update may round
// differently, which is a property of the test's layout, not of resuming.
[[gnu::noinline]] void adam_step(dtn::Adam<double, dtn::Cpu>& opt) { opt.step(); }
}  // namespace

TEST_CASE("Adam in float takes 1 - beta in double, rounded once, as PyTorch does") {
  // In float, 1 - float(0.999) = 0.00099998713, 1.3e-5 off 0.001: the second moment (and the
  // early steps' sizes) were off by that until 2026-12-06, when a comparison of a whole DTN step
  // with PyTorch found it (tests/python/test_step_interop.py).
  dtn::Tensor<float> p = dtn::from_vector<float>(Shape{3}, {0.25f, -0.5f, 1.0f});
  dtn::Tensor<float> g = dtn::from_vector<float>(Shape{3}, {0.75f, -3e-3f, 12.5f});
  dtn::Adam<float, dtn::Cpu> opt(p.view(), g.view(), dtn::AdamConfig{1e-3, 0.9, 0.999, 1e-8, 0});
  opt.step();
  const auto m = dtn::to_vector(opt.first_moment());
  const auto v = dtn::to_vector(opt.second_moment());
  for (std::size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    const float gi = g[i];
    CHECK(m[i] == static_cast<float>(0.1) * gi);
    CHECK(v[i] == static_cast<float>(0.001) * gi * gi);
    // Bias-corrected, the first step is lr * g / (|g| + eps): the moments' factors cancel.
    CHECK(p[i] == doctest::Approx(std::vector<double>{0.25, -0.5, 1.0}[i] - 1e-3 * (gi > 0 ? 1 : -1)).epsilon(1e-6));
  }
}

TEST_CASE("Adam matches hand-computed torch.optim.Adam steps, and its state restores exactly") {
  dtn::Tensor<double> p = dtn::from_vector<double>(Shape{2}, {1.0, -2.0});
  dtn::Tensor<double> g(Shape{2});
  dtn::AdamConfig cfg{0.1, 0.9, 0.999, 1e-8, 0.01};
  dtn::Adam<double, dtn::Cpu> opt(p.view(), g.view(), cfg);
  // step 1: grad = (0.5, 0.5) + wd * p = (0.51, 0.48); m = 0.1 g, v = 0.001 g^2;
  // mhat = g, vhat = g^2 -> update = lr * sign(g) (up to eps)
  g[0] = 0.5;
  g[1] = 0.5;
  adam_step(opt);
  CHECK(p[0] == doctest::Approx(1.0 - 0.1 * 0.51 / (0.51 + 1e-8)).epsilon(1e-12));
  CHECK(p[1] == doctest::Approx(-2.0 - 0.1 * 0.48 / (0.48 + 1e-8)).epsilon(1e-12));
  // step 2 by hand for p[0]
  const double g2 = -1.0 + 0.01 * p[0];
  const double m = 0.9 * (0.1 * 0.51) + 0.1 * g2;
  const double v = 0.999 * (0.001 * 0.51 * 0.51) + 0.001 * g2 * g2;
  const double expect = p[0] - 0.1 * (m / (1 - 0.81)) / (std::sqrt(v / (1 - 0.999 * 0.999)) + 1e-8);
  g[0] = -1.0;
  g[1] = 0.25;
  // Save the state, step, restore into a fresh optimizer, step again: identical.
  const auto m_saved = dtn::to_vector(opt.first_moment());
  const auto v_saved = dtn::to_vector(opt.second_moment());
  const auto p_saved = dtn::to_vector(p.view());
  adam_step(opt);
  CHECK(p[0] == doctest::Approx(expect).epsilon(1e-12));
  const auto p_after = dtn::to_vector(p.view());
  std::copy(p_saved.begin(), p_saved.end(), p.data());
  dtn::Adam<double, dtn::Cpu> opt2(p.view(), g.view(), cfg);
  std::copy(m_saved.begin(), m_saved.end(), opt2.first_moment().data);
  std::copy(v_saved.begin(), v_saved.end(), opt2.second_moment().data);
  opt2.set_steps(1);
  adam_step(opt2);
  CHECK(dtn::to_vector(p.view()) == p_after);
}

TEST_CASE("a small classifier learns a generated data set (loss and accuracy reach stated levels)") {
  // Four classes of 12x12 images: a horizontal bar, a vertical bar, a diagonal, a square ring,
  // each at a random position with noise. Learnable by a small convnet in a few hundred steps.
  using C = dtn::Sequential<dtn::Conv2d<8, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,
                            dtn::Conv2d<16, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>, dtn::Flatten,
                            dtn::Linear<4>>;
  dtn::set_num_threads(2);
  dtn::Rng rng(42);
  auto make = [&](int n, dtn::Tensor<float>& x, dtn::Tensor<int>& y) {
    x.resize(Shape{n, 1, 12, 12});
    y.resize(Shape{n});
    for (int i = 0; i < n; ++i) {
      const int cls = static_cast<int>(rng.below(4));
      y[static_cast<std::size_t>(i)] = cls;
      float* img = x.data() + i * 144;
      for (int p = 0; p < 144; ++p) img[p] = static_cast<float>(rng.normal(0, 0.3));
      const int r = 2 + static_cast<int>(rng.below(6)), c = 2 + static_cast<int>(rng.below(6));
      for (int k = -2; k <= 2; ++k) {
        if (cls == 0) img[r * 12 + c + k] += 1.5f;
        if (cls == 1) img[(r + k) * 12 + c] += 1.5f;
        if (cls == 2) img[(r + k) * 12 + c + k] += 1.5f;
        if (cls == 3) {
          img[(r - 2) * 12 + c + k] += 1.5f;
          img[(r + 2) * 12 + c + k] += 1.5f;
          img[(r + k) * 12 + c - 2] += 1.5f;
          img[(r + k) * 12 + c + 2] += 1.5f;
        }
      }
    }
  };
  dtn::Net<C> net(Shape{1, 12, 12}, "c", dtn::InitScheme::pytorch, 7);
  dtn::Adam<float, dtn::Cpu> opt(net, dtn::AdamConfig{3e-3, 0.9, 0.999, 1e-8, 0});
  dtn::CrossEntropyLoss<float, dtn::Cpu> ce;
  dtn::Tensor<float> x;
  dtn::Tensor<int> y;
  float loss = 0;
  for (int step = 0; step < 200; ++step) {
    make(32, x, y);
    ce.compute(net.forward(x.view()), y.view());
    loss = 0.9f * loss + 0.1f * ce.value() * (step == 0 ? 10.0f : 1.0f);
    net.zero_grad();
    net.backward(ce.grad(), false);
    opt.step();
  }
  CHECK(loss < 0.15f);
  net.eval();
  make(400, x, y);
  auto logits = net.forward(x.view());
  std::vector<int> pred(400);
  dtn::Backend<dtn::Cpu>::argmax_rows(400, 4, logits.data, pred.data());
  int correct = 0;
  for (int i = 0; i < 400; ++i) correct += pred[static_cast<std::size_t>(i)] == y[static_cast<std::size_t>(i)];
  INFO("held-out accuracy " << correct / 4.0 << "%");
  CHECK(correct >= 380);  // >= 95% on fresh samples
}

TEST_CASE("load_state_from copies parameters and running statistics, so evaluation outputs match") {
  using Spec = dtn::Sequential<dtn::Conv2d<4, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>>;
  dtn::Net<Spec> trained(Shape{2, 4, 4}, "a", dtn::InitScheme::pytorch, 1);
  dtn::Net<Spec> fresh(Shape{2, 4, 4}, "b", dtn::InitScheme::pytorch, 2);
  dtn::Tensor<float> x(Shape{3, 2, 4, 4});
  for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i)) * 3 + 1);
  trained.train();
  for (int k = 0; k < 3; ++k) trained.forward(x.view());  // moves the running statistics off (0, 1)
  trained.eval();
  fresh.eval();
  const std::vector<float> want = dtn::to_vector(trained.forward(x.view()));
  CHECK(dtn::to_vector(fresh.forward(x.view())) != want);
  fresh.load_state_from(trained);
  CHECK(dtn::to_vector(fresh.parameters()) == dtn::to_vector(trained.parameters()));
  CHECK(dtn::to_vector(fresh.buffers()) == dtn::to_vector(trained.buffers()));
  CHECK(dtn::to_vector(fresh.forward(x.view())) == want);

  dtn::Net<Spec> other_input(Shape{2, 8, 8}, "c");
  CHECK_THROWS_WITH_AS(other_input.load_state_from(trained), doctest::Contains("cannot load the state of network a"),
                       dtn::shape_error);
}

TEST_CASE("share_parameters_of: two networks, one set of parameters, each its own caches") {
  using Spec = dtn::Sequential<dtn::Conv2d<4, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>>;
  const auto fill = [](dtn::Tensor<float>& t, double phase) {
    for (std::size_t i = 0; i < t.size(); ++i)
      t.data()[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i) + phase) * 2 + 0.5);
  };
  dtn::Tensor<float> xa(Shape{3, 2, 4, 4}), xb(Shape{2, 2, 4, 4}), dya(Shape{3, 4, 2, 2}), dyb(Shape{2, 4, 2, 2});
  fill(xa, 0.0), fill(xb, 1.0), fill(dya, 2.0), fill(dyb, 3.0);

  // Reference: one network, batch a then batch b, each forward directly followed by its backward.
  dtn::Net<Spec> ref(Shape{2, 4, 4}, "g", dtn::InitScheme::pytorch, 7);
  ref.forward(xa.view());
  const std::vector<float> dxa_ref = dtn::to_vector(ref.backward(dya.view()));
  ref.forward(xb.view());
  const std::vector<float> dxb_ref = dtn::to_vector(ref.backward(dyb.view()));

  // Shared: both forwards first, then both backwards (one network alone would back-propagate
  // batch b's caches twice).
  dtn::Net<Spec> owner(Shape{2, 4, 4}, "g", dtn::InitScheme::pytorch, 7);
  dtn::Net<Spec> other(Shape{2, 4, 4}, "g", dtn::InitScheme::pytorch, 99);  // its own init is dropped
  other.share_parameters_of(owner);
  CHECK(other.parameters().data == owner.parameters().data);
  CHECK(other.gradients().data == owner.gradients().data);
  CHECK(other.buffers().data == owner.buffers().data);
  CHECK(other.num_parameters() == owner.num_parameters());
  other.forward(xa.view());
  owner.forward(xb.view());
  const std::vector<float> dxa = dtn::to_vector(other.backward(dya.view()));
  const std::vector<float> dxb = dtn::to_vector(owner.backward(dyb.view()));
  CHECK(dxa == dxa_ref);
  CHECK(dxb == dxb_ref);
  // The gradients of both batches accumulated in the one arena, a's then b's as in ref: the
  // same float operations in the same order, so the same bits.
  CHECK(dtn::to_vector(owner.gradients()) == dtn::to_vector(ref.gradients()));
  // Both forwards moved the one set of running statistics (a's update, then b's, as in ref).
  CHECK(dtn::to_vector(owner.buffers()) == dtn::to_vector(ref.buffers()));
  other.zero_grad();  // zeroes the owner's arena
  for (float v : dtn::to_vector(owner.gradients())) CHECK(v == 0.f);
  // Loading state into the sharing network loads the owner.
  other.load_state_from(ref);
  CHECK(dtn::to_vector(owner.parameters()) == dtn::to_vector(ref.parameters()));

  CHECK_THROWS_AS(owner.share_parameters_of(owner), dtn::argument_error);
  CHECK_THROWS_AS(owner.share_parameters_of(other), dtn::argument_error);  // other already shares owner's
  dtn::Net<Spec> wrong_input(Shape{2, 8, 8}, "h");
  CHECK_THROWS_WITH_AS(wrong_input.share_parameters_of(owner), doctest::Contains("share_parameters_of g"),
                       dtn::shape_error);
}

TEST_CASE("CPU tensors growing or reassigned leave dtn::storage_moves unchanged (it tracks device storage)") {
  // A host pipeline that grows or reassigns its batches must not make a captured CUDA graph
  // recapture (dtn::cuda::GraphStep compares this count).
  const std::uint64_t start = dtn::storage_moves();
  dtn::Tensor<float> t(dtn::Shape{4});
  t.resize(dtn::Shape{4000});
  t = dtn::Tensor<float>(dtn::Shape{8});
  CHECK(t.size() == 8);
  CHECK(dtn::storage_moves() == start);
  CHECK_FALSE(dtn::Tensor<float>::counts_moves);
}

TEST_CASE("forward with segments: each segment is a batch of its own for batch norm, forward and backward") {
  using Spec = dtn::Sequential<dtn::Conv2d<4, 3, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>, dtn::Conv2d<3, 3, 1, 1>,
                               dtn::BatchNorm2d, dtn::Conv2d<2, 4, 1, 0>>;
  using NetD = dtn::Net<Spec, double>;
  const std::vector<std::int64_t> segs = {2, 3, 1};
  for (bool fusion : {true, false}) {
    CAPTURE(fusion);
    NetD joint(Shape{2, 8, 8}, "d", dtn::InitScheme::pytorch, 4), apart(Shape{2, 8, 8}, "d", dtn::InitScheme::pytorch, 4);
    joint.set_fusion(fusion);
    apart.set_fusion(fusion);
    dtn::Tensor<double> x(Shape{6, 2, 8, 8}), r(Shape{6, 2, 1, 1});
    dtn::Rng rng(17);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(-1, 1) + (i < 2 * 128 ? 0.5 : 0.0);
    for (std::size_t i = 0; i < r.size(); ++i) r[i] = rng.uniform(-1, 1);
    const std::vector<double> y = dtn::to_vector(joint.forward(x.view(), segs));
    const std::vector<double> dx = dtn::to_vector(joint.backward(r.view(), true));
    // The same batches one pass each: outputs and input gradients concatenated, parameter
    // gradients summed, running statistics moved once per batch in order.
    std::vector<double> y_ref, dx_ref;
    std::int64_t first = 0;
    for (std::int64_t n : segs) {
      const auto ys = dtn::to_vector(apart.forward(x.view().slice(first, n)));
      y_ref.insert(y_ref.end(), ys.begin(), ys.end());
      const auto ds = dtn::to_vector(apart.backward(dtn::View<const double, dtn::Cpu>(r.view().slice(first, n)), true));
      dx_ref.insert(dx_ref.end(), ds.begin(), ds.end());
      first += n;
    }
    auto close = [](const std::vector<double>& a, const std::vector<double>& b) {
      REQUIRE(a.size() == b.size());
      double worst = 0;
      for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
      return worst;
    };
    // double: only the order of additions in the parameter gradients differs
    CHECK(close(y, y_ref) < 1e-13);
    CHECK(close(dx, dx_ref) < 1e-13);
    CHECK(close(dtn::to_vector(joint.gradients()), dtn::to_vector(apart.gradients())) < 1e-12);
    CHECK(close(dtn::to_vector(joint.buffers()), dtn::to_vector(apart.buffers())) < 1e-13);
    // ... and the segments matter: the whole batch as one gives other outputs
    NetD whole(Shape{2, 8, 8}, "d", dtn::InitScheme::pytorch, 4);
    const std::vector<double> y_whole = dtn::to_vector(whole.forward(x.view()));
    CHECK(close(y_whole, y_ref) > 1e-3);
    // A plain forward() after a segmented one takes the batch as one again.
    CHECK(close(dtn::to_vector(joint.forward(x.view())), y_whole) == 0.0);
  }
}

TEST_CASE("forward with segments: segments that do not tile the batch are refused with both counts") {
  dtn::Net<D> d(Shape{1, 8, 8}, "d");
  dtn::Tensor<float> x(Shape{6, 1, 8, 8});
  x.zero();
  const std::string m = message_of([&] { d.forward(x.view(), {2, 3}); });
  CHECK(m.find("d: forward: batch segments of 5 samples in all, input [6, 1, 8, 8]") != std::string::npos);
  CHECK(message_of([&] { d.forward(x.view(), {6, 0}); }).find("a batch segment of 0 samples") != std::string::npos);
  CHECK(message_of([&] { d.forward(x.view(), {3, 3}); }).empty());
}

TEST_CASE("Backend<Cpu> segmented batch norm refuses a segment list that does not tile the batch, before any work") {
  dtn::BnGeom g;
  g.n = 6;
  g.c = 2;
  g.hw = 3;
  std::vector<float> x(36, 1.0f), y(36, 7.0f), gamma(2, 1.0f), beta(2, 0.0f), rm(2, 0.0f), rv(2, 1.0f), sm(6), si(6);
  std::vector<float> dg(2, 0.0f), db(2, 0.0f);
  using B = dtn::Backend<dtn::Cpu>;
  auto forward = [&](std::vector<int> sizes) {
    return message_of([&] {
      B::batchnorm_forward_train_segments(g, static_cast<int>(sizes.size()), sizes.data(), x.data(), gamma.data(),
                                          beta.data(), rm.data(), rv.data(), y.data(), sm.data(), si.data());
    });
  };
  auto backward = [&](std::vector<int> sizes) {
    return message_of([&] {
      B::batchnorm_backward_segments(g, static_cast<int>(sizes.size()), sizes.data(), x.data(), x.data(), gamma.data(),
                                     sm.data(), si.data(), y.data(), dg.data(), db.data());
    });
  };
  CHECK(forward({2, 3}) ==
        "dtn::Backend<Cpu>::batchnorm_forward_train_segments: batch segments of 5 samples in all, for a batch of 6");
  CHECK(forward({6, 0}) == "dtn::Backend<Cpu>::batchnorm_forward_train_segments: a batch segment of 0 samples");
  CHECK(forward({}) == "dtn::Backend<Cpu>::batchnorm_forward_train_segments: 0 batch segments");
  CHECK(backward({4, 4}) ==
        "dtn::Backend<Cpu>::batchnorm_backward_segments: batch segments of 8 samples in all, for a batch of 6");
  // Nothing was written by the refused calls: running statistics, outputs and gradients as before.
  CHECK(rm == std::vector<float>(2, 0.0f));
  CHECK(rv == std::vector<float>(2, 1.0f));
  CHECK(y == std::vector<float>(36, 7.0f));
  CHECK(dg == std::vector<float>(2, 0.0f));
  CHECK(forward({3, 3}).empty());
}
