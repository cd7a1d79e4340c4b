// The GPU's flat reductions and maps (reduce.cuh, loss.cuh, adam.cuh, elementwise.cuh) run on
// the host: the same *_on sequences, terms and element ops the kernels run, with an executor
// that does what the kernels' grids do: reduce() runs reduce_thread_sum for every (block, thread) of the first pass
// and reduce_final_thread_sum for every thread of the second, each block summed with block_sum's
// tree (block_tree.hpp); map() calls op(i) for every i. Compared with Backend<Cpu>. Needs no GPU.
// Sizes go past one block (256 terms) and past the first pass's cap of 1024 blocks (262,144
// terms), where each thread takes several terms. Not checked here: the launches, block_sum
// itself and the memory model (tests/cuda/ covers those on a GPU).
//
// Bounds. Losses: relative error 1e-6 (the parity tests' kRound) for the loss and relative L2
// 1e-6 for gradients: both sides evaluate the same double formulas and round once to float; they
// differ in the order of the double sums (~1e-16 relative) and, where the host compiler contracts
// a multiply-add of the CPU reference into an FMA (FMA targets), in one double rounding, so a
// stored float differs by at most an ulp (~6e-8 relative) in rare elements. exp and log are the
// host's on both sides here. Sum: the same. Adam: relative L2 1e-6 for m, v and the parameters:
// the same float operations in the same order; an FMA the host compiler may form on the CPU side
// changes one float rounding per multiply-add (~1.2e-7 relative). Parameters start far smaller
// than one update so that their comparison measures the update. argmax and count_nonfinite:
// exact. Element-wise maps, axpy and the byte conversion: relative L2 1e-6, the same float
// formulas on both sides, where the host compiler may contract a multiply-add on one side only
// (~1.2e-7 relative per element); fill and scale: exact.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <dtn/cuda.cuh>

#include "../cuda/parity.cuh"
#include "block_tree.hpp"

namespace {

namespace cd = dtn::cuda::detail;
using Cpu = dtn::Backend<dtn::Cpu>;
constexpr unsigned kThreads = static_cast<unsigned>(cd::kThreads);

// DeviceFlatExec's two members, one block and one thread at a time.
struct HostFlatExec {
  template <class Acc, class Out, class Term, class Finish>
  void reduce(std::size_t n, const Term& term, Out* out, const Finish& finish) const {
    const unsigned parts = cd::reduce_parts(n);
    std::vector<Acc> partials(parts), v(kThreads);
    for (unsigned b = 0; b < parts; ++b) {
      for (unsigned t = 0; t < kThreads; ++t) v[t] = cd::reduce_thread_sum<Acc>(n, term, parts, b, t);
      partials[b] = host_tree::block_sum(v);
    }
    for (unsigned t = 0; t < kThreads; ++t) v[t] = cd::reduce_final_thread_sum(parts, partials.data(), t);
    *out = finish(host_tree::block_sum(v));
  }
  template <class Op>
  void map(std::size_t n, const Op& op) const {
    for (std::size_t i = 0; i < n; ++i) op(i);
  }
};

// Counts how often the reduction asks for each term.
struct VisitTerm {
  int* visits;
  DTN_HD long long operator()(std::size_t i) const {
    ++visits[i];
    return 1;
  }
};

// Relative error of a scalar loss (parity::rel_l2 of one element: a NaN on either side fails).
double rel_err(float a, float ref) { return parity::rel_l2({a}, {ref}); }

// Term counts under test: empty, one, around one block, around the 1024-block cap, beyond it.
const std::size_t kSizes[] = {0, 1, 255, 256, 257, 5000, 262144, 262145, 300001};

}  // namespace

TEST_CASE("GPU reductions, run on the host: every term exactly once, the capped block count, sum and non-finite count as on the CPU") {
  for (const std::size_t n : kSizes) {
    CAPTURE(n);
    const unsigned parts = cd::reduce_parts(n);
    CHECK(parts == std::min<std::size_t>((n + kThreads - 1) / kThreads, cd::kMaxPartials));
    std::vector<int> visits(n, 0);
    int count = -1;
    HostFlatExec{}.reduce<long long>(n, VisitTerm{visits.data()}, &count, cd::ScaleTo<long long, int>{1});
    CHECK(count == static_cast<int>(n));
    CHECK(std::count(visits.begin(), visits.end(), 1) == static_cast<long>(n));

    auto x = parity::random_vector(n, 41 + n);
    float s = NAN, s_ref = NAN;
    cd::sum_on(HostFlatExec{}, n, x.data(), &s);
    Cpu::sum(n, x.data(), &s_ref);
    if (n == 0) {
      CHECK(s == 0.0f);
      CHECK(s_ref == 0.0f);
    } else {
      CHECK(std::fabs(static_cast<double>(s) - s_ref) <= 1e-6 * std::fabs(static_cast<double>(s_ref)) + 1e-30);
    }

    for (std::size_t i = 3; i < n; i += 9973) x[i] = i % 2 ? INFINITY : NAN;
    int bad = -1, bad_ref = -2;
    cd::count_nonfinite_on(HostFlatExec{}, n, x.data(), &bad);
    Cpu::count_nonfinite(n, x.data(), &bad_ref);
    CHECK(bad == bad_ref);
    CHECK(bad == static_cast<int>(n > 3 ? (n - 4) / 9973 + 1 : 0));
  }
}

TEST_CASE("GPU mean squared error, run on the host, matches the CPU backend (with and without the gradient)") {
  for (const std::size_t n : kSizes) {
    if (n == 0) continue;  // a mean over nothing: the losses' callers refuse it
    CAPTURE(n);
    const auto a = parity::random_vector(n, 51), b = parity::random_vector(n, 52);
    float loss = NAN, loss_ref = NAN;
    std::vector<float> grad(n, NAN), grad_ref(n, -7.0f);
    cd::mse_on(HostFlatExec{}, n, a.data(), b.data(), &loss, grad.data(), 0.5f);
    Cpu::mse(n, a.data(), b.data(), &loss_ref, grad_ref.data(), 0.5f);
    CHECK(rel_err(loss, loss_ref) <= 1e-6);
    CHECK(parity::rel_l2(grad, grad_ref) <= 1e-6);
    float loss2 = NAN;
    cd::mse_on(HostFlatExec{}, n, a.data(), b.data(), &loss2, static_cast<float*>(nullptr), 1.0f);
    CHECK(loss2 == loss);
  }
}

TEST_CASE("GPU total variation, run on the host, matches the CPU backend (borders, 1x1 images, past the block cap)") {
  struct Case {
    int n, c, h, w;
  };
  // G's output at batch 2; odd sizes; single pixels (all terms sqrt(eps)); 307,200 terms.
  for (const Case k : {Case{2, 1, 32, 32}, Case{3, 2, 7, 9}, Case{4, 1, 1, 1}, Case{2, 3, 1, 5}, Case{300, 1, 32, 32}}) {
    CAPTURE(k.n);
    CAPTURE(k.c);
    CAPTURE(k.h);
    CAPTURE(k.w);
    const std::size_t total = static_cast<std::size_t>(k.n) * k.c * k.h * k.w;
    const auto z = parity::random_vector(total, 61);
    float loss = NAN, loss_ref = NAN;
    std::vector<float> grad(total, NAN), grad_ref(total, -7.0f);
    cd::total_variation_on(HostFlatExec{}, k.n, k.c, k.h, k.w, z.data(), 1e-4f, &loss, grad.data(), 2.0f);
    Cpu::total_variation(k.n, k.c, k.h, k.w, z.data(), 1e-4f, &loss_ref, grad_ref.data(), 2.0f);
    CHECK(rel_err(loss, loss_ref) <= 1e-6);
    CHECK(parity::rel_l2(grad, grad_ref) <= 1e-6);
  }
}

TEST_CASE("GPU softmax cross-entropy, run on the host, matches the CPU backend (10 classes, D's 3, past the block cap)") {
  struct Case {
    int n, k;
    float scale;
  };
  for (const Case c : {Case{37, 10, 0.75f}, Case{64, 3, 1.0f}, Case{1, 10, 1.0f}, Case{262145, 3, 15.0f}}) {
    CAPTURE(c.n);
    CAPTURE(c.k);
    const std::size_t nk = static_cast<std::size_t>(c.n) * c.k;
    // Logits spread over [-8, 8): exp's range matters for the max shift.
    const auto logits = parity::random_vector(nk, 71, -8, 8);
    std::vector<int> targets(static_cast<std::size_t>(c.n));
    for (std::size_t i = 0; i < targets.size(); ++i) targets[i] = static_cast<int>((i * 7 + 3) % static_cast<std::size_t>(c.k));
    float loss = NAN, loss_ref = NAN;
    std::vector<float> d(nk, NAN), d_ref(nk, -7.0f);
    cd::softmax_cross_entropy_on(HostFlatExec{}, c.n, c.k, logits.data(), targets.data(), &loss, d.data(), c.scale);
    Cpu::softmax_cross_entropy(c.n, c.k, logits.data(), targets.data(), &loss_ref, d_ref.data(), c.scale);
    CHECK(rel_err(loss, loss_ref) <= 1e-6);
    CHECK(parity::rel_l2(d, d_ref) <= 1e-6);
    float loss2 = NAN;
    cd::softmax_cross_entropy_on(HostFlatExec{}, c.n, c.k, logits.data(), targets.data(), &loss2,
                                 static_cast<float*>(nullptr), 1.0f);
    CHECK(loss2 == loss);
  }
}

TEST_CASE("GPU softmax cross-entropy, run on the host: a target below 0 or at least k gives NaN in the loss and in its row only, as the CPU backend") {
  const int n = 9, k = 10;
  const auto logits = parity::random_vector(static_cast<std::size_t>(n) * k, 81, -4, 4);
  std::vector<int> targets = {0, 9, 10, 3, -1, 5, 6, 7, 8};
  float loss = 0.0f, loss_ref = 0.0f;
  std::vector<float> d(logits.size(), -5.0f), d_ref(logits.size(), -7.0f);
  cd::softmax_cross_entropy_on(HostFlatExec{}, n, k, logits.data(), targets.data(), &loss, d.data(), 1.0f);
  Cpu::softmax_cross_entropy(n, k, logits.data(), targets.data(), &loss_ref, d_ref.data(), 1.0f);
  CHECK(std::isnan(loss));
  CHECK(std::isnan(loss_ref));
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    const bool bad = targets[static_cast<std::size_t>(i)] < 0 || targets[static_cast<std::size_t>(i)] >= k;
    const std::vector<float> row(d.begin() + i * k, d.begin() + (i + 1) * k), row_ref(d_ref.begin() + i * k, d_ref.begin() + (i + 1) * k);
    if (bad) {
      CHECK(std::all_of(row.begin(), row.end(), [](float v) { return std::isnan(v); }));
      CHECK(std::all_of(row_ref.begin(), row_ref.end(), [](float v) { return std::isnan(v); }));
    } else {
      CHECK(parity::rel_l2(row, row_ref) <= 1e-6);
    }
  }
}

TEST_CASE("GPU argmax over rows, run on the host, matches the CPU backend bit for bit, ties and NaN included") {
  const int n = 1000, k = 10;
  auto logits = parity::random_vector(static_cast<std::size_t>(n) * k, 91);
  for (std::size_t i = 0; i < logits.size(); i += 13) logits[i] = 0.875f;  // ties: the first wins
  logits[25] = NAN;                                                        // inside a row
  logits[30] = NAN;                                                        // first of a row
  std::vector<int> out(static_cast<std::size_t>(n), -1), out_ref(static_cast<std::size_t>(n), -2);
  cd::argmax_rows_on(HostFlatExec{}, n, k, logits.data(), out.data());
  Cpu::argmax_rows(n, k, logits.data(), out_ref.data());
  CHECK(out == out_ref);
}

TEST_CASE("GPU Adam update, run on the host, matches the CPU backend (weight decay on, and a first step from zero moments)") {
  const std::size_t n = 70001;
  // Parameters far smaller than one update (lr 0.05), so that comparing them compares the update;
  // a weight decay large enough that it moves the gradient.
  const auto p0 = parity::random_vector(n, 101, -1e-4, 1e-4), g = parity::random_vector(n, 102);
  const auto m0 = parity::random_vector(n, 103, -0.1, 0.1), v0 = parity::random_vector(n, 104, 0.0, 0.01);
  struct Case {
    const char* name;
    dtn::AdamConfig cfg;
    int step;
    bool zero_moments;
  };
  for (const Case c : {Case{"DTN's betas, step 3, weight decay 500", {0.05, 0.5, 0.999, 1e-8, 500.0}, 3, false},
                       Case{"PyTorch's default betas, first step", {0.05, 0.9, 0.999, 1e-8, 0.0}, 1, true}}) {
    CAPTURE(std::string(c.name));
    // The scalars an optimizer passes (1 - beta1/2 rounded once from double).
    dtn::Tensor<float> pt(dtn::Shape{static_cast<long>(n)}), gt(dtn::Shape{static_cast<long>(n)});
    const dtn::AdamStep<float> s = dtn::Adam<float, dtn::Cpu>(pt.view(), gt.view(), c.cfg).scalars(c.step);
    std::vector<float> p = p0, m = c.zero_moments ? std::vector<float>(n, 0.0f) : m0, v = c.zero_moments ? std::vector<float>(n, 0.0f) : v0;
    std::vector<float> p_ref = p, m_ref = m, v_ref = v;
    cd::adam_update_on(HostFlatExec{}, n, p.data(), g.data(), m.data(), v.data(), s);
    Cpu::adam_update(n, p_ref.data(), g.data(), m_ref.data(), v_ref.data(), s);
    CHECK(parity::rel_l2(m, m_ref) <= 1e-6);
    CHECK(parity::rel_l2(v, v_ref) <= 1e-6);
    CHECK(parity::rel_l2(p, p_ref) <= 1e-6);
    if (c.zero_moments) {
      // From zero moments: m = (1 - beta1) g and v = (1 - beta2) g^2 with 1 - beta rounded from
      // double (0.001f, not 1 - 0.999f), products only, so exact.
      std::size_t off = 0;
      for (std::size_t i = 0; i < n; ++i)
        if (m[i] != 0.1f * g[i] || v[i] != 0.001f * g[i] * g[i]) ++off;
      CHECK(off == 0);
    }
  }
}

TEST_CASE("GPU element-wise maps, fill, axpy, scale and the byte conversion, run on the host, match the CPU backend") {
  const std::size_t n = 70001;
  const auto x = parity::random_vector(n, 111, -3, 3), dy = parity::random_vector(n, 112);
  // The activations: the same functors on both sides, through each side's own index wiring.
  const auto activation = [&](auto op, const char* name) {
    CAPTURE(std::string(name));
    std::vector<float> y(n, NAN), y_ref(n, -7.0f), dx(n, NAN), dx_ref(n, -7.0f);
    HostFlatExec{}.map(n, cd::MapForwardOp<decltype(op), float>{op, x.data(), y.data()});
    Cpu::map_forward(op, n, x.data(), y_ref.data());
    CHECK(parity::rel_l2(y, y_ref) <= 1e-6);
    HostFlatExec{}.map(n, cd::MapBackwardOp<decltype(op), float>{op, x.data(), y_ref.data(), dy.data(), dx.data()});
    Cpu::map_backward(op, n, x.data(), y_ref.data(), dy.data(), dx_ref.data());
    CHECK(parity::rel_l2(dx, dx_ref) <= 1e-6);
  };
  activation(dtn::ops::Relu{}, "ReLU");
  activation(dtn::ops::LeakyRelu{0.2}, "LeakyReLU 0.2");
  activation(dtn::ops::Tanh{}, "tanh");

  std::vector<float> f(n, NAN);
  HostFlatExec{}.map(n, cd::FillOp<float>{f.data(), 0.375f});
  CHECK(std::count(f.begin(), f.end(), 0.375f) == static_cast<long>(n));

  std::vector<float> a = dy, a_ref = dy;
  HostFlatExec{}.map(n, cd::AxpyOp<float>{-1.5f, x.data(), a.data()});
  Cpu::axpy(n, -1.5f, x.data(), a_ref.data());
  CHECK(parity::rel_l2(a, a_ref) <= 1e-6);

  std::vector<float> s = x, s_ref = x;
  HostFlatExec{}.map(n, cd::ScaleOp<float>{0.9f, s.data()});
  Cpu::scale(n, 0.9f, s_ref.data());
  CHECK(parity::same_bits(s, s_ref));

  std::vector<unsigned char> bytes(n);
  for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<unsigned char>(i * 37 % 256);
  std::vector<float> u(n, NAN), u_ref(n, -7.0f);
  HostFlatExec{}.map(n, cd::U8ToSignedOp<float>{bytes.data(), u.data()});
  Cpu::u8_to_signed(n, bytes.data(), u_ref.data());
  CHECK(parity::rel_l2(u, u_ref) <= 1e-6);
  CHECK(u[0] == -1.0f);  // byte 0
}
