// Forward results of each layer against small cases computed independently in the test
// (naive loops written from the definitions, or values worked out by hand).
#include <doctest/doctest.h>

#include <cmath>
#include <dtn/dtn.hpp>

using dtn::Shape;

namespace {
// Naive direct convolution from the definition (cross-correlation, zero padding).
std::vector<double> naive_conv(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
                               int n, int ci, int h, int wd, int co, int k, int s, int p, int& ho, int& wo) {
  ho = (h + 2 * p - k) / s + 1;
  wo = (wd + 2 * p - k) / s + 1;
  std::vector<double> y(static_cast<std::size_t>(n * co * ho * wo));
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < co; ++o)
      for (int oh = 0; oh < ho; ++oh)
        for (int ow = 0; ow < wo; ++ow) {
          double acc = b[static_cast<std::size_t>(o)];
          for (int c = 0; c < ci; ++c)
            for (int a = 0; a < k; ++a)
              for (int bb = 0; bb < k; ++bb) {
                const int ih = oh * s - p + a, iw = ow * s - p + bb;
                if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
                acc += x[static_cast<std::size_t>(((i * ci + c) * h + ih) * wd + iw)] *
                       w[static_cast<std::size_t>(((o * ci + c) * k + a) * k + bb)];
              }
          y[static_cast<std::size_t>(((i * co + o) * ho + oh) * wo + ow)] = acc;
        }
  return y;
}

template <class Spec, class T = double>
struct One {
  dtn::Net<dtn::Sequential<Spec>, T, dtn::Cpu> net;
  explicit One(Shape s) : net(s, "t") {}
  void set(const std::string& name, const std::vector<T>& v) {
    for (auto& e : net.entries())
      if (e.name == "t.0." + name) {
        REQUIRE(e.param->value.size() == v.size());
        std::copy(v.begin(), v.end(), e.param->value.data);
        return;
      }
    FAIL("no parameter " << name);
  }
};
}  // namespace

TEST_CASE("Conv2d forward equals a naive loop on a 5x5 image (stride 1 and 2, padding 0 and 1)") {
  dtn::Rng rng(1);
  const int n = 2, ci = 3, h = 5, wd = 5, co = 4, k = 3;
  std::vector<double> x(static_cast<std::size_t>(n * ci * h * wd)), w(static_cast<std::size_t>(co * ci * k * k)),
      b(static_cast<std::size_t>(co));
  for (auto& v : x) v = rng.uniform(-1, 1);
  for (auto& v : w) v = rng.uniform(-1, 1);
  for (auto& v : b) v = rng.uniform(-1, 1);
  auto xt = dtn::from_vector(Shape{n, ci, h, wd}, x);
  int ho = 0, wo = 0;
  {
    One<dtn::Conv2d<co, k, 1, 1>> l(Shape{ci, h, wd});
    l.set("weight", w);
    l.set("bias", b);
    auto ref = naive_conv(x, w, b, n, ci, h, wd, co, k, 1, 1, ho, wo);
    auto y = dtn::to_vector(l.net.forward(xt.view()));
    REQUIRE(y.size() == ref.size());
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == doctest::Approx(ref[i]).epsilon(1e-12));
  }
  {
    One<dtn::Conv2d<co, k, 2, 0>> l(Shape{ci, h, wd});
    l.set("weight", w);
    l.set("bias", b);
    auto ref = naive_conv(x, w, b, n, ci, h, wd, co, k, 2, 0, ho, wo);
    CHECK(ho == 2);
    auto y = dtn::to_vector(l.net.forward(xt.view()));
    REQUIRE(y.size() == ref.size());
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == doctest::Approx(ref[i]).epsilon(1e-12));
  }
}

TEST_CASE("ConvTranspose2d forward scatters each input pixel times the kernel (by hand)") {
  // One input channel, one output channel, 2x2 input, kernel 2x2 ones... stride 2, pad 0:
  // each input pixel becomes a 2x2 block of its value times the kernel.
  One<dtn::ConvTranspose2d<1, 2, 2, 0>> l(Shape{1, 2, 2});
  l.set("weight", {1, 2, 3, 4});
  l.set("bias", {0.5});
  auto x = dtn::from_vector<double>(Shape{1, 1, 2, 2}, {1, 2, 3, 4});
  auto y = dtn::to_vector(l.net.forward(x.view()));
  const std::vector<double> expect = {1, 2, 2, 4,  3, 4, 6, 8,  3, 6, 4, 8,  9, 12, 12, 16};
  REQUIRE(y.size() == 16);
  for (int i = 0; i < 16; ++i) CHECK(y[static_cast<std::size_t>(i)] == doctest::Approx(expect[static_cast<std::size_t>(i)] + 0.5));
  // g's first layer: 1x1 input, 4x4 kernel, stride 1, pad 0 gives the kernel times the input.
  One<dtn::ConvTranspose2d<2, 4, 1, 0, false>> g0(Shape{1, 1, 1});
  std::vector<double> wk(32);
  for (int i = 0; i < 32; ++i) wk[static_cast<std::size_t>(i)] = i;
  g0.set("weight", wk);
  auto x1 = dtn::from_vector<double>(Shape{1, 1, 1, 1}, {-2});
  auto y1 = dtn::to_vector(g0.net.forward(x1.view()));
  REQUIRE(y1.size() == 32);
  for (int i = 0; i < 32; ++i) CHECK(y1[static_cast<std::size_t>(i)] == doctest::Approx(-2.0 * i));
}

TEST_CASE("ConvTranspose2d is the adjoint of Conv2d: <conv(x), y> == <x, convT(y)>") {
  dtn::Rng rng(2);
  One<dtn::Conv2d<3, 4, 2, 1, false>> c(Shape{2, 8, 8});
  One<dtn::ConvTranspose2d<2, 4, 2, 1, false>> t(Shape{3, 4, 4});
  std::vector<double> w(3 * 2 * 16);
  for (auto& v : w) v = rng.uniform(-1, 1);
  c.set("weight", w);
  t.set("weight", w);  // Conv2d [out=3, in=2] is ConvTranspose2d [in=3, out=2]
  dtn::Tensor<double> x(Shape{2, 2, 8, 8}), y(Shape{2, 3, 4, 4});
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(-1, 1);
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = rng.uniform(-1, 1);
  auto cx = dtn::to_vector(c.net.forward(x.view()));
  auto ty = dtn::to_vector(t.net.forward(y.view()));
  double a = 0, b = 0;
  for (std::size_t i = 0; i < cx.size(); ++i) a += cx[i] * y[i];
  for (std::size_t i = 0; i < ty.size(); ++i) b += ty[i] * x[i];
  CHECK(a == doctest::Approx(b).epsilon(1e-12));
}

TEST_CASE("Linear, MaxPool2d, activations, RepeatChannels by hand") {
  One<dtn::Linear<2>> lin(Shape{3});
  lin.set("weight", {1, 2, 3, -1, 0, 1});
  lin.set("bias", {0.5, -0.5});
  auto x = dtn::from_vector<double>(Shape{1, 3}, {1, 1, 2});
  auto y = dtn::to_vector(lin.net.forward(x.view()));
  CHECK(y[0] == doctest::Approx(9.5));
  CHECK(y[1] == doctest::Approx(0.5));

  One<dtn::MaxPool2d<2>> mp(Shape{1, 4, 4});
  auto xp = dtn::from_vector<double>(Shape{1, 1, 4, 4}, {1, 5, 2, 0, 3, 4, -1, 7, 0, 0, 9, 8, -2, 1, 3, 2});
  auto yp = dtn::to_vector(mp.net.forward(xp.view()));
  CHECK(yp == std::vector<double>{5, 7, 1, 9});

  One<dtn::LeakyReLU<1, 5>> lr(Shape{4});
  auto xa = dtn::from_vector<double>(Shape{1, 4}, {-1, 2, -0.5, 0});
  CHECK(dtn::to_vector(lr.net.forward(xa.view())) == std::vector<double>{-0.2, 2, -0.1, 0});
  One<dtn::ReLU> re(Shape{4});
  CHECK(dtn::to_vector(re.net.forward(xa.view())) == std::vector<double>{0, 2, 0, 0});
  One<dtn::Tanh> th(Shape{4});
  auto yt = dtn::to_vector(th.net.forward(xa.view()));
  REQUIRE(yt.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) CHECK(yt[i] == doctest::Approx(std::tanh(dtn::to_vector(xa.view())[i])));

  One<dtn::RepeatChannels<3>> rep(Shape{1, 1, 2});
  auto xr = dtn::from_vector<double>(Shape{2, 1, 1, 2}, {1, 2, 3, 4});
  CHECK(dtn::to_vector(rep.net.forward(xr.view())) == std::vector<double>{1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4});
}

TEST_CASE("ResizeBilinear matches PyTorch's align_corners=False on a 2x2 -> 4x4 case") {
  // F.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=4, mode='bilinear', align_corners=False)
  // = rows [1, 1.25, 1.75, 2], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5], [3, 3.25, 3.75, 4]
  // (source coordinate (i + 0.5) / 2 - 0.5, clamped at 0).
  One<dtn::ResizeBilinear<4>> rs(Shape{1, 2, 2});
  auto x = dtn::from_vector<double>(Shape{1, 1, 2, 2}, {1, 2, 3, 4});
  auto y = dtn::to_vector(rs.net.forward(x.view()));
  const std::vector<double> expect = {1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4};
  REQUIRE(y.size() == expect.size());
  for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == doctest::Approx(expect[i]));
}

// Non-square, with the height and width scaled differently (up in both; down in one, up in the
// other), so that a height/width mix-up in the layer shows. Expected values: PyTorch 2.x,
// F.interpolate(x, size=..., mode='bilinear', align_corners=False) in float32 (hence the 1e-6
// relative tolerance: float32 rounding of a few operations on values < 50).
TEST_CASE("ResizeBilinear matches PyTorch on non-square sizes: 2x3 -> 3x5 and 5x3 -> 3x4") {
  {
    One<dtn::ResizeBilinear<3, 5>> rs(Shape{1, 2, 3});
    auto x = dtn::from_vector<double>(Shape{1, 1, 2, 3}, {1, 2, 4, 3, 7, 5});
    auto y = dtn::to_vector(rs.net.forward(x.view()));
    const std::vector<double> expect = {1.0, 1.4000000953674316, 2.0, 3.200000286102295, 4.0,
                                        2.0, 3.000000238418579, 4.5, 4.5, 4.5,
                                        3.0, 4.600000381469727, 7.0, 5.799999713897705, 5.0};
    REQUIRE(y.size() == expect.size());
    for (std::size_t i = 0; i < y.size(); ++i) {
      CAPTURE(i);
      CHECK(y[i] == doctest::Approx(expect[i]).epsilon(1e-6));
    }
  }
  {
    One<dtn::ResizeBilinear<3, 4>> rs(Shape{1, 5, 3});
    std::vector<double> xv(15);
    for (int k = 0; k < 15; ++k) xv[static_cast<std::size_t>(k)] = std::pow(static_cast<double>(k), 1.5);
    auto x = dtn::from_vector<double>(Shape{1, 1, 5, 3}, xv);
    auto y = dtn::to_vector(rs.net.forward(x.view()));
    const std::vector<double> expect = {1.7320506572723389, 2.7328522205352783, 4.187982559204102, 5.612398147583008,
                                        14.696938514709473, 17.086515426635742, 20.060443878173828, 22.627416610717773,
                                        36.71281051635742,  39.88544845581055,  43.7743034362793,   47.08308792114258};
    REQUIRE(y.size() == expect.size());
    for (std::size_t i = 0; i < y.size(); ++i) {
      CAPTURE(i);
      CHECK(y[i] == doctest::Approx(expect[i]).epsilon(1e-6));
    }
  }
}

TEST_CASE("BatchNorm2d: batch statistics in training, running statistics in evaluation") {
  One<dtn::BatchNorm2d> bn(Shape{1, 1, 2});
  bn.set("weight", {2});
  bn.set("bias", {1});
  // channel values 1, 3, 5, 7: mean 4, biased var 5, unbiased var 20/3
  auto x = dtn::from_vector<double>(Shape{2, 1, 1, 2}, {1, 3, 5, 7});
  auto y = dtn::to_vector(bn.net.forward(x.view()));
  const double s = 1.0 / std::sqrt(5.0 + 1e-5);
  const std::vector<double> xs = {1, 3, 5, 7};
  REQUIRE(y.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) CHECK(y[i] == doctest::Approx(2 * (xs[i] - 4) * s + 1));
  // running stats after one step with momentum 0.1 from (0, 1)
  auto buf = dtn::to_vector(bn.net.buffers());
  CHECK(buf[0] == doctest::Approx(0.4));
  CHECK(buf[1] == doctest::Approx(0.9 + 0.1 * 20.0 / 3.0));
  bn.net.eval();
  auto ye = dtn::to_vector(bn.net.forward(x.view()));
  REQUIRE(ye.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) CHECK(ye[i] == doctest::Approx(2 * (xs[i] - 0.4) / std::sqrt(buf[1] + 1e-5) + 1));
}

TEST_CASE("float32 and float64 networks agree on the same parameters") {
  using Spec = dtn::Sequential<dtn::Conv2d<8, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,
                               dtn::ConvTranspose2d<2, 4, 2, 1>, dtn::Tanh>;
  dtn::Net<Spec, float> f(Shape{3, 8, 8}, "n", dtn::InitScheme::dcgan, 4);
  dtn::Net<Spec, double> d(Shape{3, 8, 8}, "n", dtn::InitScheme::dcgan, 4);
  auto pf = dtn::to_vector(f.parameters());
  auto pd = dtn::to_vector(d.parameters());
  REQUIRE(pf.size() == pd.size());
  for (std::size_t i = 0; i < pf.size(); ++i) CHECK(pf[i] == doctest::Approx(static_cast<float>(pd[i])));
  dtn::Rng rng(3);
  dtn::Tensor<float> xf(Shape{4, 3, 8, 8});
  dtn::Tensor<double> xd(Shape{4, 3, 8, 8});
  for (std::size_t i = 0; i < xf.size(); ++i) xd[i] = xf[i] = static_cast<float>(rng.uniform(-1, 1));
  auto yf = dtn::to_vector(f.forward(xf.view()));
  auto yd = dtn::to_vector(d.forward(xd.view()));
  double num = 0, den = 0;
  for (std::size_t i = 0; i < yf.size(); ++i) {
    num += (yf[i] - yd[i]) * (yf[i] - yd[i]);
    den += yd[i] * yd[i];
  }
  // float32 has a 6e-8 unit roundoff; a few hundred accumulations give ~1e-6 relative.
  CHECK(std::sqrt(num / den) < 1e-5);
}
