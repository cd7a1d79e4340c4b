// Per-layer timing hooks (nn/profile.hpp): every layer pass of every network is reported once,
// with its network, index, kind and direction; the hook is per thread and scoped; times add up.
#include <doctest/doctest.h>

#include <chrono>
#include <dtn/dtn.hpp>
#include <string>
#include <thread>
#include <vector>

using dtn::Shape;

namespace {
using D = dtn::Sequential<dtn::Conv2d<4, 3, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>, dtn::Conv2d<3, 4, 1, 0>>;
using F = dtn::Sequential<dtn::Conv2d<4, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU, dtn::Conv2d<6, 3, 1, 1>,
                          dtn::MaxPool2d<4>, dtn::ReLU>;
using G = dtn::Sequential<dtn::ConvTranspose2d<8, 4, 1, 0>, dtn::BatchNorm2d, dtn::ReLU,
                          dtn::ConvTranspose2d<1, 4, 2, 1>, dtn::Tanh>;

// Records the order of begin/end calls.
struct Recorder : dtn::LayerHook {
  std::vector<std::string> calls;
  void begin(const dtn::LayerEvent& e) override { calls.push_back("begin " + describe(e)); }
  void end(const dtn::LayerEvent& e) override { calls.push_back("end " + describe(e)); }
  static std::string describe(const dtn::LayerEvent& e) {
    return *e.net + "." + std::to_string(e.layer) + " " + e.kind + (e.backward ? " bwd" : " fwd");
  }
};

dtn::Tensor<float, dtn::Cpu> uniform(Shape s, std::uint64_t seed) {
  dtn::Rng rng(seed);
  std::vector<float> v(s.numel());
  for (float& x : v) x = static_cast<float>(rng.uniform(-1, 1));
  return dtn::from_vector(s, v);
}
}  // namespace

TEST_CASE("a layer hook sees every pass of every layer, in order, begin before end") {
  dtn::Net<D> d(Shape{1, 8, 8}, "d");
  auto x = uniform(Shape{2, 1, 8, 8}, 1);
  Recorder rec;
  auto record = [&](bool fusion) {
    d.set_fusion(fusion);
    rec.calls.clear();
    {
      dtn::ScopedLayerHook on(rec);
      auto y = d.forward(x.view());
      auto dy = uniform(y.shape, 2);
      d.backward(dy.view(), true);
    }
    return rec.calls;
  };
  const std::vector<std::string> layer_by_layer = {
      "begin d.0 Conv2d fwd",    "end d.0 Conv2d fwd",    "begin d.1 BatchNorm2d fwd", "end d.1 BatchNorm2d fwd",
      "begin d.2 LeakyReLU fwd", "end d.2 LeakyReLU fwd", "begin d.3 Conv2d fwd",      "end d.3 Conv2d fwd",
      "begin d.3 Conv2d bwd",    "end d.3 Conv2d bwd",    "begin d.2 LeakyReLU bwd",   "end d.2 LeakyReLU bwd",
      "begin d.1 BatchNorm2d bwd", "end d.1 BatchNorm2d bwd", "begin d.0 Conv2d bwd",  "end d.0 Conv2d bwd"};
  CHECK(record(false) == layer_by_layer);
  // Fused (the default): batch norm and the activation are one pass, under batch norm's index.
  const std::vector<std::string> fused = {
      "begin d.0 Conv2d fwd", "end d.0 Conv2d fwd", "begin d.1 BatchNorm2d+LeakyReLU fwd",
      "end d.1 BatchNorm2d+LeakyReLU fwd", "begin d.3 Conv2d fwd", "end d.3 Conv2d fwd", "begin d.3 Conv2d bwd",
      "end d.3 Conv2d bwd", "begin d.1 BatchNorm2d+LeakyReLU bwd", "end d.1 BatchNorm2d+LeakyReLU bwd",
      "begin d.0 Conv2d bwd", "end d.0 Conv2d bwd"};
  const std::vector<std::string> calls = record(true);
  CHECK(calls == fused);

  // Out of scope, no hook: nothing more is recorded, and the slot is empty again.
  CHECK(dtn::layer_hook() == nullptr);
  d.forward(x.view());
  CHECK(rec.calls.size() == fused.size());
}

TEST_CASE("layer hooks are per thread and nest: the inner scope restores the outer hook") {
  Recorder outer, inner;
  dtn::ScopedLayerHook a(outer);
  {
    dtn::ScopedLayerHook b(inner);
    CHECK(dtn::layer_hook() == &inner);
    dtn::LayerHook* other = &inner;
    std::thread([&] { other = dtn::layer_hook(); }).join();
    CHECK(other == nullptr);  // another thread has none
  }
  CHECK(dtn::layer_hook() == &outer);
}

TEST_CASE("HostLayerProfile over a DTN step: every network's layers, call counts, times that add up") {
  dtn::DtnConfig cfg;
  cfg.seed = 3;
  dtn::DomainTransfer<F, G, D> trainer(Shape{3, 8, 8}, Shape{1, 8, 8}, cfg);
  auto xs = uniform(Shape{4, 3, 8, 8}, 5), xt = uniform(Shape{4, 1, 8, 8}, 6);
  trainer.step(xs.view(), xt.view());  // warm-up, outside the profile
  dtn::HostLayerProfile prof;
  const auto t0 = std::chrono::steady_clock::now();
  {
    dtn::ScopedLayerHook on(prof);
    trainer.step(xs.view(), xt.view());
    trainer.step(xs.view(), xt.view());
  }
  const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const dtn::LayerTimes& t = prof.times();
  REQUIRE_FALSE(t.empty());
  // Per step: f forward on both batches and on G(xs) (3), backward once (L_CONST); g (two
  // networks sharing one name) forward on both batches, backward on both; D forward on three
  // batches in its update and two in g's, backward as often.
  long f_fwd = 0, f_bwd = 0, g_fwd = 0, g_bwd = 0, d_fwd = 0, d_bwd = 0;
  for (const auto& r : t.rows()) {
    CAPTURE(r.net + "." + std::to_string(r.layer) + " " + r.kind);
    CHECK(r.ms >= 0);
    if (r.layer == 0) {
      (r.net == "f" ? (r.backward ? f_bwd : f_fwd) : r.net == "g" ? (r.backward ? g_bwd : g_fwd)
                                                                   : (r.backward ? d_bwd : d_fwd)) = r.calls;
      CHECK(r.kind == (r.net == "g" ? std::string("ConvTranspose2d") : std::string("Conv2d")));
    }
  }
  CHECK(f_fwd == 2 * 3);
  CHECK(f_bwd == 2 * 1);
  CHECK(g_fwd == 2 * 2);
  CHECK(g_bwd == 2 * 2);
  CHECK(d_fwd == 2 * 5);
  CHECK(d_bwd == 2 * 5);
  // Every layer of every network appears (f 6, g 5, D 4 layers, forward; backward too except
  // where no pass ran: all do here), less the activations run inside batch norm (g.2, D.2).
  CHECK(t.rows().size() == 2 * (6 + 5 + 4 - 2));
  CHECK(t.total_ms() <= wall);
  double by_kind = 0;
  for (const auto& kv : t.by_kind()) by_kind += kv.second;
  CHECK(by_kind == doctest::Approx(t.total_ms()));
  const std::vector<std::string> table = t.table(2);
  REQUIRE(table.size() == t.rows().size());
  CHECK(table[0].find(" ms ") != std::string::npos);
}
