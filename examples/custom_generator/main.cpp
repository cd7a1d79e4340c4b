// custom_generator: the Domain Transfer Network with networks of your own.
//
// Shows, in one small program that needs no data files:
//   * f, g and D written as dtn::Sequential<...> types of your own choosing (a g with LeakyReLU
//     and an extra 3x3 convolution that refines the image, a D with LeakyReLU);
//   * two layer types written here, outside the library, that obey the layer contract of
//     <dtn/nn/contract.hpp>: ChannelBias (a learnable per-channel bias) and Scale<Num, Den>
//     (multiplication by the constant Num/Den), checked against central differences in double
//     with dtn::testing::gradcheck_layer;
//   * f pretrained on the source domain with a head of its own, saved, and loaded into the trainer;
//   * dtn::DomainTransfer<MyF, MyG, MyD> trained for a few steps on generated images: source =
//     coloured squares and discs (3 x 16 x 16), target = gray ones (1 x 16 x 16);
//   * a checkpoint saved, loaded into a fresh trainer, and the two trainers continuing in step.
//
//   custom_generator [--out DIR] [--steps N]      (defaults: out/custom_generator, 20)
//
// Exit status 0 when every check passes, 1 otherwise. See docs/custom-networks.md.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <dtn/dtn.hpp>
#include <dtn/io/checkpoint.hpp>
#include <dtn/testing/gradcheck.hpp>
#include <dtn/train/domain_transfer.hpp>

namespace my {

// ---- A layer with a parameter: y[n, c, ...] = x[n, c, ...] + b[c].
// Written only with Backend<Dev> operations and Copy, so the same type runs on the CPU and,
// compiled by nvcc with <dtn/cuda.cuh>, on the GPU.
template <class T, class Dev>
class ChannelBiasLayer {
 public:
  static constexpr const char* kind = "ChannelBias";

  // Validates the per-sample input shape (no batch dimension), declares the parameters and
  // returns the per-sample output shape.
  dtn::Shape setup(const dtn::Shape& in) {
    if (in.rank() != 3 && in.rank() != 1) dtn::throw_shape(kind, "a [C, H, W] or [C] input", in);
    c_ = static_cast<int>(in[0]);
    hw_ = static_cast<long>(in.numel() / static_cast<std::size_t>(c_));
    bias_.shape = dtn::Shape{c_};
    bias_.role = dtn::ParamRole::bias;  // initialised like a bias (0 with InitScheme::dcgan)
    bias_.fan_in = c_;
    return in;
  }
  // Every tensor, by its local name; the network calls it "<net>.<index>.bias".
  template <class F>
  void for_each_param(F&& f) {
    f("bias", bias_);
  }
  void forward(dtn::View<const T, Dev> x, dtn::View<T, Dev> y, bool /*train*/) {
    dtn::Copy<Dev, Dev>::run(y.data, x.data, x.size() * sizeof(T));
    dtn::Backend<Dev>::bias_add(static_cast<int>(x.shape[0]), c_, hw_, bias_.value.data, y.data);
  }
  // Parameter gradients ACCUMULATE (only when param_grads: a frozen network passes false);
  // dx is overwritten, and may be empty (dx.data == nullptr) when nobody needs it.
  void backward(dtn::View<const T, Dev> x, dtn::View<const T, Dev> /*y*/, dtn::View<const T, Dev> dy,
                dtn::View<T, Dev> dx, bool param_grads) {
    if (param_grads) dtn::Backend<Dev>::bias_backward(static_cast<int>(x.shape[0]), c_, hw_, dy.data, bias_.grad.data);
    if (dx.data) dtn::Copy<Dev, Dev>::run(dx.data, dy.data, dy.size() * sizeof(T));
  }

 private:
  int c_ = 0;
  long hw_ = 1;
  dtn::Param<T, Dev> bias_;
};

// ---- A layer without parameters: y = (Num / Den) x.
template <class T, class Dev, int Num, int Den>
class ScaleLayer {
  static_assert(Den != 0, "Scale: the denominator must not be 0");

 public:
  static constexpr const char* kind = "Scale";
  dtn::Shape setup(const dtn::Shape& in) { return in; }
  template <class F>
  void for_each_param(F&&) {}
  void forward(dtn::View<const T, Dev> x, dtn::View<T, Dev> y, bool) {
    dtn::Copy<Dev, Dev>::run(y.data, x.data, x.size() * sizeof(T));
    dtn::Backend<Dev>::scale(y.size(), factor(), y.data);
  }
  void backward(dtn::View<const T, Dev>, dtn::View<const T, Dev>, dtn::View<const T, Dev> dy, dtn::View<T, Dev> dx,
                bool) {
    if (!dx.data) return;
    dtn::Copy<Dev, Dev>::run(dx.data, dy.data, dy.size() * sizeof(T));
    dtn::Backend<Dev>::scale(dx.size(), factor(), dx.data);
  }

 private:
  static T factor() { return static_cast<T>(Num) / static_cast<T>(Den); }
};

// The layer SPECS: what goes into Sequential<...>. Each binds to its layer for a value type
// and a device through the member template `layer<T, Dev>`.
struct ChannelBias {
  template <class T, class Dev>
  using layer = ChannelBiasLayer<T, Dev>;
};
template <int Num, int Den = 1>
struct Scale {
  template <class T, class Dev>
  using layer = ScaleLayer<T, Dev, Num, Den>;
};

// ---- The three networks, for 16 x 16 images.
// f: source image (3 x 16 x 16) -> 32 features (32 x 1 x 1). It is pretrained below on the source
// domain (with the head FHead: square or disc?) and then handed to the trainer, which keeps it frozen.
using F = dtn::Sequential<dtn::Conv2d<8, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU,    // 8 x 8 x 8
                          dtn::Conv2d<16, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU,   // 16 x 4 x 4
                          dtn::Conv2d<32, 4, 1, 0>, dtn::ReLU>;                     // 32 x 1 x 1
using FHead = dtn::Sequential<dtn::Flatten, dtn::Linear<2>>;                        // 2 logits
// g: features -> gray image (1 x 16 x 16). LeakyReLU instead of the paper's ReLU, and a 3x3
// convolution after the last upsampling that refines the image; its bias is the ChannelBias
// layer above, and Scale<1, 2> halves the pre-activation so tanh starts in its linear range.
using G = dtn::Sequential<dtn::ConvTranspose2d<32, 4, 1, 0>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>,  // 32 x 4 x 4
                          dtn::ConvTranspose2d<16, 4, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>,  // 16 x 8 x 8
                          dtn::ConvTranspose2d<8, 4, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>,   // 8 x 16 x 16
                          dtn::Conv2d<1, 3, 1, 1, /*Bias=*/false>, ChannelBias, Scale<1, 2>,          // 1 x 16 x 16
                          dtn::Tanh>;
// D: gray image -> 3 logits (0 = G(source), 1 = G(target), 2 = real target).
using D = dtn::Sequential<dtn::Conv2d<16, 3, 2, 1>, dtn::LeakyReLU<1, 5>,                        // 16 x 8 x 8
                          dtn::Conv2d<32, 3, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>,      // 32 x 4 x 4
                          dtn::Conv2d<3, 4, 1, 0>>;                                              // 3 x 1 x 1

using Trainer = dtn::DomainTransfer<F, G, D>;  // float on the CPU

// ---- Generated data: one filled square or disc per image on a black (-1) background.
// Source images are coloured (each channel its own intensity), target images gray.
// labels (optional) receives 0 for a square, 1 for a disc.
void shapes(dtn::Tensor<float>& out, int n, int channels, dtn::Rng& rng, dtn::Tensor<int>* labels = nullptr) {
  const int s = 16;
  out.resize(dtn::Shape{n, channels, s, s});
  if (labels) labels->resize(dtn::Shape{n});
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = -1.0f;
  for (int k = 0; k < n; ++k) {
    const bool disc = rng.uniform() < 0.5;
    if (labels) (*labels)[static_cast<std::size_t>(k)] = disc ? 1 : 0;
    const double r = rng.uniform(2.5, 5.5);
    const double cy = rng.uniform(r, s - r), cx = rng.uniform(r, s - r);
    std::vector<float> colour(static_cast<std::size_t>(channels));
    for (auto& v : colour) v = static_cast<float>(rng.uniform(-0.2, 1.0));
    for (int y = 0; y < s; ++y)
      for (int x = 0; x < s; ++x) {
        const double dy = y + 0.5 - cy, dx = x + 0.5 - cx;
        const bool inside = disc ? dy * dy + dx * dx <= r * r : std::fabs(dy) <= r && std::fabs(dx) <= r;
        if (!inside) continue;
        for (int c = 0; c < channels; ++c)
          out[static_cast<std::size_t>(((k * channels + c) * s + y) * s + x)] = colour[static_cast<std::size_t>(c)];
      }
  }
}

int failures = 0;
void check(bool ok, const std::string& what) {
  std::printf("  [%s] %s\n", ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failures;
}

bool finite(const dtn::DtnLosses& l) {
  for (double v : {l.d, l.d_source, l.d_target_fake, l.d_target_real, l.gang, l.constancy, l.tid, l.tv, l.g})
    if (!std::isfinite(v)) return false;
  return true;
}

template <class T, class Dev>
bool same(dtn::View<T, Dev> a, dtn::View<T, Dev> b) {
  return dtn::to_vector(a) == dtn::to_vector(b);
}

}  // namespace my

int main(int argc, char** argv) {
  std::string out_dir = "out/custom_generator";
  int steps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (a == "--steps" && i + 1 < argc) {
      // The whole value, in int's range ("2x", "1.5" and "1e9" are refused, not read as 2, 1, 1).
      const std::string v = argv[++i];
      const auto r = std::from_chars(v.data(), v.data() + v.size(), steps);
      if (v.empty() || r.ec != std::errc{} || r.ptr != v.data() + v.size()) steps = 0;
    } else {
      std::fprintf(stderr, "usage: %s [--out DIR] [--steps N]\n", argv[0]);
      return 2;
    }
  }
  if (steps < 1) {
    std::fprintf(stderr, "custom_generator: --steps must be a positive integer\n");
    return 2;
  }

  try {
    // 1. The user's layers: analytic gradients against central differences, in double.
    // gradcheck_layer's bound (documented in dtn/testing/gradcheck.hpp): 1e-6 relative.
    std::printf("gradient checks of the user's layers (double precision):\n");
    const auto gb = dtn::testing::gradcheck_layer<my::ChannelBias>(dtn::Shape{3, 4, 4}, 2);
    my::check(gb.checked > 0 && gb.max_error < 1e-6, "ChannelBias: max error " + std::to_string(gb.max_error));
    const auto gs = dtn::testing::gradcheck_layer<my::Scale<-3, 4>>(dtn::Shape{2, 3, 3}, 2);
    my::check(gs.checked > 0 && gs.max_error < 1e-6, "Scale<-3, 4>: max error " + std::to_string(gs.max_error));

    // 2. Pretrain f on the source domain (square or disc?) and save it, as one would with a real f.
    std::filesystem::create_directories(out_dir);
    const std::string f_path = out_dir + "/f.safetensors";
    dtn::Rng data_rng(2024);
    dtn::Tensor<float> xs, xt;
    dtn::Tensor<int> labels;
    {
      dtn::Net<my::F> f(dtn::Shape{3, 16, 16}, "f", dtn::InitScheme::pytorch, 7);
      dtn::Net<my::FHead> head(f.output_sample_shape(), "f_head", dtn::InitScheme::pytorch, 8);
      dtn::Adam<float, dtn::Cpu> opt_f(f, dtn::AdamConfig{3e-3, 0.9, 0.999, 1e-8, 0.0});
      dtn::Adam<float, dtn::Cpu> opt_head(head, dtn::AdamConfig{3e-3, 0.9, 0.999, 1e-8, 0.0});
      dtn::CrossEntropyLoss<float, dtn::Cpu> ce;
      std::printf("\npretraining f (square or disc):\n");
      double first = 0, last = 0;
      const int pre_steps = 5 * steps;
      for (int i = 1; i <= pre_steps; ++i) {
        my::shapes(xs, 32, 3, data_rng, &labels);
        f.zero_grad();
        head.zero_grad();
        ce.compute(head.forward(f.forward(xs.view())), labels.view());
        f.backward(head.backward(ce.grad()), /*need_input_grad=*/false);  // the gradient crosses networks
        opt_f.step();
        opt_head.step();
        last = ce.value();
        if (i == 1) first = last;
        if (i == 1 || i % 20 == 0 || i == pre_steps) std::printf("  step %3d  cross-entropy %.4f\n", i, last);
      }
      my::check(std::isfinite(first) && std::isfinite(last), "pretraining losses finite");
      // With the default 100 steps the loss falls from ~ln 2 to ~0.1; half is a wide margin.
      if (pre_steps >= 100) my::check(last < 0.5 * first, "pretraining: the cross-entropy at least halved");
      dtn::io::save_network(f_path, f, pre_steps);
    }

    // 3. The trainer on the user's networks.
    dtn::DtnConfig cfg;
    cfg.alpha = 15;    // L_CONST
    cfg.beta = 15;     // L_TID
    cfg.gamma = 0.05;  // a little total variation: smoother generated images
    cfg.seed = 1;
    const dtn::Shape source{3, 16, 16}, target{1, 16, 16};
    my::Trainer tr(source, target, cfg);
    dtn::io::load_network(f_path, tr.f());  // the pretrained f (checks the architecture)
    std::printf("\nnetworks:\n  f %s\n  g %s\n  d %s\n", tr.f().signature().c_str(), tr.g().signature().c_str(),
                tr.d().signature().c_str());
    std::printf("  trainable parameters: f %zu (frozen), g %zu, d %zu\n", tr.f().num_parameters(),
                tr.g().num_parameters(), tr.d().num_parameters());

    const int batch = 16;
    std::printf("\n step      L_D   L_GANG  L_CONST    L_TID     L_TV      L_G\n");
    bool all_finite = true;
    const std::vector<float> f_before = dtn::to_vector(tr.f().parameters());
    for (int i = 1; i <= steps; ++i) {
      my::shapes(xs, batch, 3, data_rng);
      my::shapes(xt, batch, 1, data_rng);
      const dtn::DtnLosses l = tr.step(xs.view(), xt.view());
      all_finite = all_finite && my::finite(l);
      if (i == 1 || i % 5 == 0 || i == steps)
        std::printf("%5d %8.4f %8.4f %8.2e %8.4f %8.4f %8.4f\n", i, l.d, l.gang, l.constancy, l.tid, l.tv, l.g);
    }
    std::printf("\n");
    my::check(all_finite, "every loss term finite in all " + std::to_string(steps) + " steps");
    my::check(tr.steps() == steps, "trainer counted " + std::to_string(tr.steps()) + " steps");
    my::check(dtn::to_vector(tr.f().parameters()) == f_before, "f is frozen: its parameters did not change");

    // G(x) for a few source images, in evaluation mode (running batch-norm statistics).
    my::shapes(xs, 4, 3, data_rng);
    const std::vector<float> gx = dtn::to_vector(tr.transfer(xs.view()));
    bool in_range = gx.size() == 4u * 16u * 16u;
    for (float v : gx) in_range = in_range && std::isfinite(v) && v >= -1.0f && v <= 1.0f;
    my::check(in_range, "transfer() gives 4 x 1 x 16 x 16 images in [-1, 1]");

    // 4. Checkpoint: save, load into a fresh trainer (other seed), and continue both in step.
    const std::string path = out_dir + "/custom_generator.safetensors";
    tr.save(path, {{"example", "custom_generator"}});
    dtn::DtnConfig other = cfg;
    other.seed = 77;  // different initial weights: everything must come from the file
    my::Trainer fresh(source, target, other);
    const auto meta = fresh.load(path);
    std::printf("checkpoint %s (step %s)\n", path.c_str(), meta.at("step").c_str());
    my::check(meta.at("example") == "custom_generator", "the caller's metadata came back");
    my::check(fresh.steps() == tr.steps(), "the step count came back");
    my::check(my::same(fresh.g().parameters(), tr.g().parameters()) && my::same(fresh.g().buffers(), tr.g().buffers()) &&
                  my::same(fresh.d().parameters(), tr.d().parameters()) &&
                  my::same(fresh.f().parameters(), tr.f().parameters()),
              "f, g and D (parameters and batch-norm statistics) are identical after loading");
    my::shapes(xs, batch, 3, data_rng);
    my::shapes(xt, batch, 1, data_rng);
    const dtn::DtnLosses a = tr.step(xs.view(), xt.view());
    const dtn::DtnLosses b = fresh.step(xs.view(), xt.view());
    my::check(a.d == b.d && a.g == b.g && my::same(fresh.g().parameters(), tr.g().parameters()),
              "one more step gives the same losses and the same g on both trainers");

    // A checkpoint refuses to load into other networks, with a message that says why.
    using OtherG = dtn::Sequential<dtn::ConvTranspose2d<32, 4, 1, 0>, dtn::BatchNorm2d, dtn::ReLU,
                                   dtn::ConvTranspose2d<16, 4, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,
                                   dtn::ConvTranspose2d<1, 4, 2, 1>, dtn::Tanh>;
    dtn::DomainTransfer<my::F, OtherG, my::D> mismatched(source, target, cfg);
    bool refused = false;
    try {
      mismatched.load(path);
    } catch (const dtn::io_error& e) {
      refused = std::string(e.what()).find("written for the network") != std::string::npos;
    }
    my::check(refused, "loading into a trainer with another g is refused (dtn::io_error)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "custom_generator: %s\n", e.what());
    return 1;
  }
  std::printf("\n%s\n", my::failures == 0 ? "custom_generator: all checks passed" : "custom_generator: FAILED");
  return my::failures == 0 ? 0 : 1;
}
