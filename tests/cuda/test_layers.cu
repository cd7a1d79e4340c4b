// Layer- and network-level parity: the same device-generic networks (Sequential over
// Backend<Dev>) built on the CPU and on the GPU from the same seed, fed the same batch. Forward
// outputs, input gradients and every named parameter gradient (which locates a mismatch to one
// layer) are compared, then five training steps with Adam on both devices.
//
// Bound kNet = 1e-4 (relative L2): each op contributes at most the parity table's error (FP32
// sums: ~1e-5 in the worst case, rounding-level elsewhere) and these networks chain a handful of
// them; a wrong op (index, formula, accumulate-vs-overwrite) gives errors of 1e-2 or more. The
// only way rounding differences could grow past that is a ReLU or max-pool choice flipping on
// an input within ~1e-6 of the threshold, which the continuous random inputs make improbable
// (expected flips per test well below 0.1).
//
// Two quantities have no meaningful value to compare, and the tests say so where they skip them:
//  * the bias of a convolution followed by batch norm (net.0.bias here): batch norm subtracts the
//    per-channel batch mean, so its exact gradient is 0 and both devices return rounding noise.
//    Per-parameter gradient errors are therefore measured against the norm of the whole
//    gradient arena (each parameter's share of the total error), and the arena as a whole
//    against its own norm;
//  * after Adam steps, that same bias: Adam divides by sqrt(v), so noise-sized gradients still
//    move it by ~lr * sign(noise), differently on each device. The loss does not depend on it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <dtn/cuda.cuh>
#include <string>
#include <vector>

#include "parity.cuh"

namespace {

constexpr double kNet = 1e-4;

using Classifier = dtn::Sequential<dtn::Conv2d<8, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,
                                   dtn::Conv2d<8, 3, 2, 1>, dtn::LeakyReLU<1, 5>, dtn::MaxPool2d<2>, dtn::Flatten,
                                   dtn::Linear<5>>;
using Generator = dtn::Sequential<dtn::ConvTranspose2d<16, 4, 1, 0>, dtn::BatchNorm2d, dtn::ReLU,
                                  dtn::ConvTranspose2d<1, 4, 2, 1>, dtn::Tanh>;
using FusedPairs = dtn::Sequential<dtn::Conv2d<6, 3, 1, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>,
                                   dtn::Conv2d<4, 3, 2, 1>, dtn::BatchNorm2d, dtn::Tanh>;
using Preprocess = dtn::Sequential<dtn::ResizeBilinear<12>, dtn::RepeatChannels<3>, dtn::Conv2d<4, 3, 1, 1>>;

dtn::Shape batch_shape(int n, const dtn::Shape& sample) {
  dtn::Shape s;
  switch (sample.rank()) {
    case 1: s = dtn::Shape{n, sample[0]}; break;
    case 2: s = dtn::Shape{n, sample[0], sample[1]}; break;
    default: s = dtn::Shape{n, sample[0], sample[1], sample[2]}; break;
  }
  return s;
}

dtn::Tensor<float, dtn::Cpu> random_tensor(const dtn::Shape& s, std::uint64_t seed) {
  dtn::Rng rng(seed);
  dtn::Tensor<float, dtn::Cpu> t(s);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(rng.normal());
  return t;
}

template <class T, class DevA, class DevB>
double err(dtn::View<T, DevA> gpu, dtn::View<T, DevB> cpu) {
  return parity::rel_l2(dtn::to_vector(gpu), dtn::to_vector(cpu));
}

double norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

template <class T, class DevA, class DevB>
double diff_norm(dtn::View<T, DevA> gpu, dtn::View<T, DevB> cpu) {
  const auto g = dtn::to_vector(gpu), c = dtn::to_vector(cpu);
  double s = 0;
  for (std::size_t i = 0; i < c.size(); ++i) s += (static_cast<double>(g[i]) - c[i]) * (static_cast<double>(g[i]) - c[i]);
  return std::sqrt(s);
}

// Relative L2 error over all parameters except those named in `skip` (see the note at the top).
template <class NetG, class NetC>
double params_error(NetG& gpu, NetC& cpu, const std::vector<std::string>& skip) {
  std::vector<float> g, c;
  for (std::size_t i = 0; i < cpu.entries().size(); ++i) {
    const auto& ec = cpu.entries()[i];
    if (std::find(skip.begin(), skip.end(), ec.name) != skip.end()) continue;
    const auto vc = dtn::to_vector(ec.param->value), vg = dtn::to_vector(gpu.entries()[i].param->value);
    c.insert(c.end(), vc.begin(), vc.end());
    g.insert(g.end(), vg.begin(), vg.end());
  }
  return parity::rel_l2(g, c);
}

// fusion: batch norm and the activation after it as one pass (the default), or as two.
template <class Spec>
void network_parity(const char* what, const dtn::Shape& sample, int batch, bool fusion = true) {
  INFO("network: ", std::string(what));
  CAPTURE(fusion);
  dtn::Net<Spec, float, dtn::Cpu> cpu(sample, "net", dtn::InitScheme::pytorch, 5);
  dtn::Net<Spec, float, dtn::Cuda> gpu(sample, "net", dtn::InitScheme::pytorch, 5);
  cpu.set_fusion(fusion);
  gpu.set_fusion(fusion);
  REQUIRE(dtn::to_vector(gpu.parameters()) == dtn::to_vector(cpu.parameters()));

  const auto xc = random_tensor(batch_shape(batch, sample), 6);
  const auto xg = dtn::to<dtn::Cuda>(xc);
  const auto yc = cpu.forward(xc.view());
  const auto yg = gpu.forward(xg.view());
  REQUIRE(yg.shape == yc.shape);
  const double e_fwd = err(yg, yc);
  CHECK(e_fwd <= kNet);

  const auto dyc = random_tensor(yc.shape, 7);
  const auto dyg = dtn::to<dtn::Cuda>(dyc);
  cpu.zero_grad();
  gpu.zero_grad();
  const auto dxc = cpu.backward(dyc.view());
  const auto dxg = gpu.backward(dyg.view());
  const double e_dx = err(dxg, dxc);
  CHECK(e_dx <= kNet);
  const double e_grads = err(gpu.gradients(), cpu.gradients());
  CHECK(e_grads <= kNet);
  {
    // On the GPU too, fusion changes no bit: the same network with fusion the other way round.
    dtn::Net<Spec, float, dtn::Cuda> other(sample, "net", dtn::InitScheme::pytorch, 5);
    other.set_fusion(!fusion);
    CHECK(parity::same_bits(dtn::to_vector(other.forward(xg.view())), dtn::to_vector(yg)));
    other.zero_grad();
    CHECK(parity::same_bits(dtn::to_vector(other.backward(dyg.view())), dtn::to_vector(dxg)));
    CHECK(parity::same_bits(dtn::to_vector(other.gradients()), dtn::to_vector(gpu.gradients())));
    CHECK(parity::same_bits(dtn::to_vector(other.buffers()), dtn::to_vector(gpu.buffers())));
  }
  const double arena_norm = norm(dtn::to_vector(cpu.gradients()));
  for (std::size_t i = 0; i < cpu.entries().size(); ++i) {
    const auto& ec = cpu.entries()[i];
    const auto& eg = gpu.entries()[i];
    INFO("parameter ", ec.name);
    REQUIRE(eg.name == ec.name);
    if (ec.param->trainable()) {
      const double share = diff_norm(eg.param->grad, ec.param->grad) / arena_norm;
      CHECK(share <= kNet);
    } else {
      CHECK(err(eg.param->value, ec.param->value) <= kNet);  // batch-norm running statistics
    }
  }
  // Evaluation mode in a frozen network (how the trainer runs f): running statistics, input
  // gradient only.
  cpu.eval();
  gpu.eval();
  cpu.freeze();
  gpu.freeze();
  const auto ec = cpu.forward(xc.view());
  const auto eg = gpu.forward(xg.view());
  const double e_eval = err(eg, ec);
  CHECK(e_eval <= kNet);
  const double e_eval_dx = err(gpu.backward(dyg.view()), cpu.backward(dyc.view()));
  CHECK(e_eval_dx <= kNet);
  MESSAGE(std::string(what) << std::string(fusion ? "" : " (unfused)") << ": relative L2 error forward " << e_fwd
                            << ", input gradient " << e_dx << ", parameter gradients " << e_grads
                            << "; evaluation mode forward " << e_eval << ", input gradient " << e_eval_dx);
}

}  // namespace

TEST_CASE("network parity: forward, input gradient and every parameter gradient match the CPU") {
  network_parity<Classifier>("classifier (conv, batch norm, relu, max pool, leaky relu, flatten, linear)",
                             dtn::Shape{3, 16, 16}, 6);
  network_parity<Generator>("generator (transposed convs, batch norm, relu, tanh)", dtn::Shape{8, 1, 1}, 6);
  network_parity<Preprocess>("preprocessing (bilinear resize, channel repeat, conv)", dtn::Shape{1, 10, 10}, 4);
  network_parity<FusedPairs>("batch norm fused with leaky relu and tanh", dtn::Shape{2, 9, 9}, 5);
  // The same networks with batch norm and its activation as separate layers.
  network_parity<Classifier>("classifier", dtn::Shape{3, 16, 16}, 6, false);
  network_parity<Generator>("generator", dtn::Shape{8, 1, 1}, 6, false);
  network_parity<FusedPairs>("batch norm then leaky relu and tanh", dtn::Shape{2, 9, 9}, 5, false);
  // Convolutions on cuDNN (its heuristic algorithms) instead of the GEMM engine, the default.
  const parity::ConvGemmScope cudnn(false);
  network_parity<Classifier>("classifier on cuDNN", dtn::Shape{3, 16, 16}, 6);
  network_parity<Generator>("generator on cuDNN", dtn::Shape{8, 1, 1}, 6);
  network_parity<Preprocess>("preprocessing on cuDNN", dtn::Shape{1, 10, 10}, 4);
}

TEST_CASE("end to end: five Adam steps of a classifier and a generator give the same losses on both devices") {
  // Classifier with cross-entropy.
  dtn::Net<Classifier, float, dtn::Cpu> fc(dtn::Shape{3, 16, 16}, "f", dtn::InitScheme::pytorch, 11);
  dtn::Net<Classifier, float, dtn::Cuda> fg(dtn::Shape{3, 16, 16}, "f", dtn::InitScheme::pytorch, 11);
  const auto xc = random_tensor(dtn::Shape{16, 3, 16, 16}, 12);
  const auto xg = dtn::to<dtn::Cuda>(xc);
  std::vector<int> labels(16);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int>((i * 7) % 5);
  const auto tc = dtn::from_vector<int>(dtn::Shape{16}, labels);
  const auto tg = dtn::to<dtn::Cuda>(tc);
  const dtn::AdamConfig cfg{1e-3, 0.9, 0.999, 1e-8, 1e-4};
  dtn::Adam<float, dtn::Cpu> oc(fc, cfg);
  dtn::Adam<float, dtn::Cuda> og(fg, cfg);
  dtn::CrossEntropyLoss<float, dtn::Cpu> cec;
  dtn::CrossEntropyLoss<float, dtn::Cuda> ceg;

  // Generator with MSE towards a fixed image plus total variation (the L_TID and L_TV terms).
  dtn::Net<Generator, float, dtn::Cpu> gc(dtn::Shape{8, 1, 1}, "g", dtn::InitScheme::dcgan, 13);
  dtn::Net<Generator, float, dtn::Cuda> gg(dtn::Shape{8, 1, 1}, "g", dtn::InitScheme::dcgan, 13);
  const auto zc = random_tensor(dtn::Shape{8, 8, 1, 1}, 14);
  const auto zg = dtn::to<dtn::Cuda>(zc);
  const auto target_c = random_tensor(dtn::Shape{8, 1, 8, 8}, 15);
  const auto target_g = dtn::to<dtn::Cuda>(target_c);
  dtn::Adam<float, dtn::Cpu> ogc(gc, cfg);
  dtn::Adam<float, dtn::Cuda> ogg(gg, cfg);
  dtn::MSELoss<float, dtn::Cpu> msec;
  dtn::MSELoss<float, dtn::Cuda> mseg;
  dtn::TotalVariationLoss<float, dtn::Cpu> tvc;
  dtn::TotalVariationLoss<float, dtn::Cuda> tvg;
  dtn::Tensor<float, dtn::Cpu> gradc(dtn::Shape{8, 1, 8, 8});
  dtn::Tensor<float, dtn::Cuda> gradg(dtn::Shape{8, 1, 8, 8});

  for (int step = 0; step < 5; ++step) {
    CAPTURE(step);
    fc.zero_grad();
    fg.zero_grad();
    cec.compute(fc.forward(xc.view()), tc.view());
    ceg.compute(fg.forward(xg.view()), tg.view());
    fc.backward(cec.grad(), false);
    fg.backward(ceg.grad(), false);
    oc.step();
    og.step();
    const double lc = cec.value(), lg = ceg.value();
    CHECK(std::abs(lg - lc) <= kNet * std::abs(lc));

    gc.zero_grad();
    gg.zero_grad();
    const auto yc = gc.forward(zc.view());
    const auto yg = gg.forward(zg.view());
    msec.compute(yc, target_c.view());
    mseg.compute(yg, target_g.view());
    tvc.compute(yc, 0.1f);
    tvg.compute(yg, 0.1f);
    // d(L_TID + 0.1 L_TV)/dy on each device: the two loss gradients summed with axpy.
    dtn::copy(msec.grad(), gradc.view());
    dtn::copy(mseg.grad(), gradg.view());
    dtn::Backend<dtn::Cpu>::axpy(gradc.size(), 1.0f, tvc.grad().data, gradc.data());
    dtn::Backend<dtn::Cuda>::axpy(gradg.size(), 1.0f, tvg.grad().data, gradg.data());
    gc.backward(gradc.view(), false);
    gg.backward(gradg.view(), false);
    ogc.step();
    ogg.step();
    const double mc = msec.value() + 0.1 * tvc.value(), mg = mseg.value() + 0.1 * tvg.value();
    CHECK(std::abs(mg - mc) <= kNet * std::abs(mc));
    MESSAGE("step " << step << ": classifier loss cpu " << lc << " gpu " << lg << "; generator loss cpu " << mc
                    << " gpu " << mg);
  }
  // Every parameter but the biases in front of batch norm (no defined value; see the top).
  const double ef = params_error(fg, fc, {"f.0.bias"}), eg = params_error(gg, gc, {"g.0.bias"});
  CHECK(ef <= kNet);
  CHECK(eg <= kNet);
  MESSAGE("after 5 steps: parameter relative L2 error classifier " << ef << ", generator " << eg);
}

TEST_CASE("weight average: the GPU's average of the same iterates is the CPU's, up to float rounding") {
  // The same weights (parameters and batch-norm buffers) are written into a CPU and a GPU
  // network before each update, so the two averages differ only by the rounding of scale and
  // axpy (each in the parity table). Trained iterates would not do: the bias in front of batch
  // norm moves by Adam noise differently on each device (see the top), and the evaluation-mode
  // output depends on it.
  dtn::Net<Generator, float, dtn::Cpu> gc(dtn::Shape{8, 1, 1}, "g", dtn::InitScheme::dcgan, 21);
  dtn::Net<Generator, float, dtn::Cuda> gg(dtn::Shape{8, 1, 1}, "g", dtn::InitScheme::dcgan, 21);
  dtn::WeightAverage<dtn::Net<Generator, float, dtn::Cpu>> ac(gc, 0.7);
  dtn::WeightAverage<dtn::Net<Generator, float, dtn::Cuda>> ag(gg, 0.7);
  const int updates = 5;
  for (int t = 0; t < updates; ++t) {
    const auto p = random_tensor(dtn::Shape{static_cast<std::int64_t>(gc.parameters().size())}, 30 + t);
    auto b = random_tensor(dtn::Shape{static_cast<std::int64_t>(gc.buffers().size())}, 40 + t);
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = 0.5f + std::abs(b[i]);  // a running variance is positive
    const dtn::View<const float, dtn::Cpu> pv(p.view()), bv(b.view());
    dtn::copy(pv, gc.parameters());
    dtn::copy(pv, gg.parameters());
    dtn::copy(bv, gc.buffers());
    dtn::copy(bv, gg.buffers());
    ac.update(gc);
    ag.update(gg);
  }
  REQUIRE(ag.updates() == updates);
  std::vector<float> wc = dtn::to_vector(ac.network().parameters()), wg = dtn::to_vector(ag.network().parameters());
  const std::vector<float> bc = dtn::to_vector(ac.network().buffers()), bg = dtn::to_vector(ag.network().buffers());
  wc.insert(wc.end(), bc.begin(), bc.end());
  wg.insert(wg.end(), bg.begin(), bg.end());
  // Not the last iterate (else the averaging would go unseen).
  CHECK(dtn::to_vector(ac.network().parameters()) != dtn::to_vector(gc.parameters()));
  // Each side is within updates * 2 roundings of the exact average (values below ~5 in
  // magnitude: |N(0, 1)| samples), so the two within twice that: 2 * 5 * 2 * 5 * 2^-24.
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < wc.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(wg[i] - wc[i])));
    scale = std::max(scale, static_cast<double>(std::abs(wc[i])));
  }
  CHECK(scale <= 5.0);
  CHECK(worst <= 2.0 * updates * 2 * 5.0 * std::ldexp(1.0, -24));
  // The averaged networks, in evaluation mode, compute alike (the network bound of this file).
  const auto zc = random_tensor(dtn::Shape{8, 8, 1, 1}, 22);
  const auto zg = dtn::to<dtn::Cuda>(zc);
  const double ey = parity::rel_l2(dtn::to_vector(ag.network().forward(zg.view())),
                                   dtn::to_vector(ac.network().forward(zc.view())));
  CHECK(ey <= kNet);
  MESSAGE("average of " << updates << " iterates: largest weight difference " << worst << ", output error " << ey);
}

TEST_CASE("LayerProfile times every layer pass on the GPU with CUDA events") {
  dtn::Net<Classifier, float, dtn::Cuda> net(dtn::Shape{3, 16, 16}, "c");
  auto x = dtn::to<dtn::Cuda>(dtn::from_vector(dtn::Shape{4, 3, 16, 16}, std::vector<float>(4 * 3 * 256, 0.5f)));
  dtn::cuda::LayerProfile prof;
  {
    dtn::ScopedLayerHook on(prof);
    for (int rep = 0; rep < 2; ++rep) {
      auto y = net.forward(x.view());
      dtn::Tensor<float, dtn::Cuda> dy(y.shape);
      dtn::Backend<dtn::Cuda>::fill(dy.size(), dy.data(), 1.0f);
      net.backward(dy.view(), true);
    }
  }
  prof.collect();
  const dtn::LayerTimes& t = prof.times();
  const std::size_t depth = dtn::Net<Classifier, float, dtn::Cuda>::depth;
  // Every layer, forward and backward, the ReLU run inside batch norm's pass counted with it.
  CHECK(t.rows().size() == 2 * (depth - 1));
  bool fused_row = false;
  for (const auto& r : t.rows()) fused_row = fused_row || r.kind == "BatchNorm2d+ReLU";
  CHECK(fused_row);
  for (const auto& r : t.rows()) {
    CAPTURE(r.layer);
    CHECK(r.net == "c");
    CHECK(r.calls == 2);
    CHECK(r.ms >= 0);
  }
  CHECK(t.total_ms() > 0);
  // collect() recycles the events: a second round reuses them and adds to the same rows.
  {
    dtn::ScopedLayerHook on(prof);
    net.forward(x.view());
  }
  prof.collect();
  for (const auto& r : prof.times().rows()) CHECK(r.calls == (r.backward ? 2 : 3));
  // Passes queued during a graph capture are left out, and the capture is not disturbed.
  {
    cudaStream_t s = dtn::cuda::stream();
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    bool threw = false;
    try {
      dtn::ScopedLayerHook on(prof);
      net.forward(x.view());
    } catch (const std::exception& e) {
      threw = true;  // the capture still has to end, or every later test on this stream fails
      MESSAGE("forward pass under capture threw: " << e.what());
    }
    cudaGraph_t graph = nullptr;
    CHECK(cudaStreamEndCapture(s, &graph) == cudaSuccess);
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    CHECK_FALSE(threw);
  }
  prof.collect();
  for (const auto& r : prof.times().rows()) CHECK(r.calls == (r.backward ? 2 : 3));
}
