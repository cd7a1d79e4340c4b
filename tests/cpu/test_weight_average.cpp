// dtn::WeightAverage: the bias-corrected exponential average of a network's weights against a
// double-precision sum over the iterates, its edge cases (first update, decay 0), refusals, and
// its checkpoint entries through DomainTransfer::save (resume bitwise, missing entries refused).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <dtn/dtn.hpp>
#include <dtn/optim/average.hpp>
#include <limits>
#include <map>
#include <string>
#include <vector>

using dtn::Shape;

namespace {
using Small = dtn::Sequential<dtn::Conv2d<3, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::Conv2d<2, 3, 1, 1>>;

// Sets every parameter and buffer of `net` to uniform values in [-1, 1) (buffers in [0.5, 1.5),
// positive like a running variance) and returns them in double.
std::vector<double> randomize(dtn::Net<Small>& net, std::uint64_t seed) {
  dtn::Rng rng(seed);
  std::vector<double> all;
  dtn::View<float, dtn::Cpu> p = net.parameters(), b = net.buffers();
  for (std::size_t i = 0; i < p.size(); ++i) {
    p.data[i] = static_cast<float>(rng.uniform(-1, 1));
    all.push_back(p.data[i]);
  }
  for (std::size_t i = 0; i < b.size(); ++i) {
    b.data[i] = static_cast<float>(rng.uniform(0.5, 1.5));
    all.push_back(b.data[i]);
  }
  return all;
}
template <class NetT>
std::vector<float> weights(NetT& net) {
  std::vector<float> v = dtn::to_vector(net.parameters());
  const std::vector<float> b = dtn::to_vector(net.buffers());
  v.insert(v.end(), b.begin(), b.end());
  return v;
}
}  // namespace

TEST_CASE("WeightAverage: after t updates, sum_i (1 - d) d^(t-i) w_i / (1 - d^t) of the iterates") {
  for (double decay : {0.5, 0.9, 0.99}) {
    CAPTURE(decay);
    dtn::Net<Small> net(Shape{2, 6, 6}, "net", dtn::InitScheme::pytorch, 1);
    dtn::WeightAverage<dtn::Net<Small>> avg(net, decay);
    CHECK(avg.network().name() == "net_avg");
    CHECK_FALSE(avg.network().is_training());
    std::vector<std::vector<double>> iterates;
    for (int t = 1; t <= 12; ++t) {
      iterates.push_back(randomize(net, static_cast<std::uint64_t>(100 + t)));
      avg.update(net);
      CHECK(avg.updates() == t);
      // The reference in double, straight from the definition.
      const double norm = 1.0 - std::pow(decay, t);
      const std::vector<float> got = weights(avg.network());
      REQUIRE(got.size() == iterates[0].size());
      double worst = 0;
      for (std::size_t k = 0; k < got.size(); ++k) {
        double ref = 0;
        for (int i = 1; i <= t; ++i) ref += (1 - decay) * std::pow(decay, t - i) * iterates[static_cast<std::size_t>(i - 1)][k];
        ref /= norm;
        worst = std::max(worst, std::fabs(static_cast<double>(got[k]) - ref));
      }
      // Each update rounds a convex combination of values of magnitude <= 1.5 in float: two
      // roundings (the scale and the axpy) of at most 2^-24 * 1.5 each, and the error of the
      // previous average carried on with weight < 1. So after t updates at most t * 2 * 1.5 * 2^-24
      // (1.1e-6 at t = 12), and the weights' own float rounding in the coefficients adds less.
      CHECK(worst <= 12 * 2 * 1.5 * std::ldexp(1.0, -24));
    }
  }
}

TEST_CASE("WeightAverage: the first update copies the iterate, and decay 0 keeps the last one (bitwise)") {
  dtn::Net<Small> net(Shape{2, 6, 6}, "net", dtn::InitScheme::pytorch, 2);
  dtn::WeightAverage<dtn::Net<Small>> avg(net, 0.999);
  CHECK(weights(avg.network()) == weights(net));  // before any update: a copy of the weights
  randomize(net, 7);
  avg.update(net);
  CHECK(weights(avg.network()) == weights(net));
  dtn::WeightAverage<dtn::Net<Small>> last(net, 0.0, "g_last");
  for (int t = 0; t < 3; ++t) {
    randomize(net, static_cast<std::uint64_t>(20 + t));
    last.update(net);
    CHECK(weights(last.network()) == weights(net));
  }
  CHECK(last.network().name() == "g_last");
}

TEST_CASE("WeightAverage: the averaged network computes with the average (evaluation mode)") {
  dtn::Net<Small> net(Shape{2, 6, 6}, "net", dtn::InitScheme::pytorch, 3);
  dtn::WeightAverage<dtn::Net<Small>> avg(net, 0.9);
  randomize(net, 31);
  avg.update(net);
  randomize(net, 32);
  avg.update(net);
  // A network loaded with the averaged weights gives the same output as avg.network().
  dtn::Net<Small> copy(Shape{2, 6, 6}, "copy");
  copy.load_state_from(avg.network());
  copy.train(false);
  dtn::Tensor<float> x(Shape{2, 2, 6, 6});
  dtn::Rng rng(5);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.uniform(-1, 1));
  const std::vector<float> a = dtn::to_vector(avg.network().forward(x.view()));
  const std::vector<float> b = dtn::to_vector(copy.forward(x.view()));
  CHECK(a == b);
  CHECK(a != dtn::to_vector(net.forward(x.view())));
}

TEST_CASE("WeightAverage: a decay outside 0 <= d < 1 and another network's shape are refused, saying why") {
  dtn::Net<Small> net(Shape{2, 6, 6}, "g");
  for (double bad : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    CAPTURE(bad);
    try {
      dtn::WeightAverage<dtn::Net<Small>> avg(net, bad);
      FAIL("the decay should have been refused");
    } catch (const dtn::argument_error& e) {
      CHECK(std::string(e.what()).find("dtn::WeightAverage g_avg: the decay must be in [0, 1), got ") == 0);
    }
  }
  dtn::WeightAverage<dtn::Net<Small>> avg(net, 0.9);
  dtn::Net<Small> wider(Shape{4, 6, 6}, "wide");  // 4 input channels: a larger first convolution
  try {
    avg.update(wider);
    FAIL("a network of another shape should have been refused");
  } catch (const dtn::shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("dtn::WeightAverage g_avg: network wide has ") == 0);
    CHECK(m.find("parameters") != std::string::npos);
  }
  CHECK(avg.updates() == 0);
}

namespace {
using F = dtn::Sequential<dtn::Conv2d<4, 3, 1, 1>, dtn::MaxPool2d<8>, dtn::ReLU>;
using G = dtn::Sequential<dtn::ConvTranspose2d<4, 4, 1, 0>, dtn::BatchNorm2d, dtn::ReLU, dtn::ConvTranspose2d<1, 4, 2, 1>,
                          dtn::Tanh>;
using D = dtn::Sequential<dtn::Conv2d<4, 3, 2, 1>, dtn::LeakyReLU<1, 5>, dtn::Conv2d<3, 4, 1, 0>>;
using Trainer = dtn::DomainTransfer<F, G, D>;
using GAvg = dtn::WeightAverage<Trainer::GNet>;

void batch(int i, dtn::Tensor<float>& xs, dtn::Tensor<float>& xt) {
  xs.resize(Shape{3, 3, 8, 8});
  xt.resize(Shape{3, 1, 8, 8});
  dtn::Rng rng(static_cast<std::uint64_t>(40 + i));
  for (std::size_t k = 0; k < xs.size(); ++k) xs[k] = static_cast<float>(rng.uniform(-1, 1));
  for (std::size_t k = 0; k < xt.size(); ++k) xt[k] = static_cast<float>(rng.uniform(-1, 1));
}
}  // namespace

TEST_CASE("WeightAverage: in DomainTransfer's checkpoint, resumed training averages as if uninterrupted (bitwise)") {
  dtn::DtnConfig cfg;
  cfg.seed = 4;
  dtn::Tensor<float> xs, xt;
  Trainer full(Shape{3, 8, 8}, Shape{1, 8, 8}, cfg);
  GAvg full_avg(full.g(), 0.8);
  for (int i = 0; i < 5; ++i) {
    batch(i, xs, xt);
    full.step(xs.view(), xt.view());
    full_avg.update(full.g());
  }
  const std::string path = "dtn_weight_average_test.safetensors";
  {
    Trainer first(Shape{3, 8, 8}, Shape{1, 8, 8}, cfg);
    GAvg avg(first.g(), 0.8);
    for (int i = 0; i < 2; ++i) {
      batch(i, xs, xt);
      first.step(xs.view(), xt.view());
      avg.update(first.g());
    }
    std::map<std::string, std::string> meta{{"data.position", "2"}};
    std::vector<dtn::io::TensorRecord> tensors;
    avg.append_to(tensors, meta);
    first.save(path, meta, std::move(tensors));
  }
  // The file holds the averaged g under its own names, beside g's.
  const dtn::io::SafetensorsFile file = dtn::io::load_safetensors(path);
  CHECK(file.metadata.at("g_avg.updates") == "2");
  CHECK(file.metadata.at("data.position") == "2");
  bool has_avg = false, has_g = false;
  for (const auto& t : file.tensors) {
    has_avg = has_avg || t.name == "g_avg.1.running_var";
    has_g = has_g || t.name == "g.1.running_var";
  }
  CHECK(has_avg);
  CHECK(has_g);

  dtn::DtnConfig other = cfg;
  other.seed = 77;
  Trainer resumed(Shape{3, 8, 8}, Shape{1, 8, 8}, other);
  GAvg avg(resumed.g(), 0.8);
  resumed.load(file);  // the file read above: the trainer's state and the average from one read
  avg.load_from(file);
  CHECK(avg.updates() == 2);
  for (int i = 2; i < 5; ++i) {
    batch(i, xs, xt);
    resumed.step(xs.view(), xt.view());
    avg.update(resumed.g());
  }
  CHECK(avg.updates() == 5);
  CHECK(weights(avg.network()) == weights(full_avg.network()));
  CHECK(weights(resumed.g()) == weights(full.g()));
  CHECK(weights(avg.network()) != weights(full.g()));

  // transfer() through the average equals g's transfer once g holds the averaged weights.
  batch(9, xs, xt);
  const std::vector<float> via_avg = dtn::to_vector(full.transfer(xs.view(), full_avg.network()));
  CHECK_FALSE(full_avg.network().is_training());  // left in its mode
  full.g().load_state_from(full_avg.network());
  CHECK(dtn::to_vector(full.transfer(xs.view())) == via_avg);
  std::remove(path.c_str());
}

TEST_CASE("WeightAverage: a checkpoint without the average, or with a malformed count, is refused") {
  Trainer t(Shape{3, 8, 8}, Shape{1, 8, 8});
  GAvg avg(t.g(), 0.9);
  const std::string path = "dtn_weight_average_missing.safetensors";
  t.save(path);
  const std::string missing = "checkpoint " + path + ": no weight average \"g_avg\" (metadata has no g_avg.updates)";
  CHECK_THROWS_WITH_AS(avg.load_from(dtn::io::load_safetensors(path)), missing.c_str(), dtn::io_error);
  std::vector<dtn::io::TensorRecord> tensors;
  std::map<std::string, std::string> meta;
  avg.append_to(tensors, meta);
  meta["g_avg.updates"] = "-3";
  t.save(path, meta, std::move(tensors));
  const std::string malformed = "checkpoint " + path + ": g_avg.updates is \"-3\", not a non-negative integer";
  CHECK_THROWS_WITH_AS(avg.load_from(dtn::io::load_safetensors(path)), malformed.c_str(), dtn::io_error);
  // Extra tensors named like the trainer's own are refused before anything is written.
  std::vector<dtn::io::TensorRecord> clash;
  dtn::io::append_network(clash, t.g());
  CHECK_THROWS_WITH_AS(t.save(path, {}, std::move(clash)), doctest::Contains("two tensors are named g."),
                       dtn::argument_error);
  std::remove(path.c_str());
}
