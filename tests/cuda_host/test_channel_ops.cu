// The GPU's per-channel ops (batch norm train/eval/backward, bias add, bias gradient) run on the
// host: every (channel, slice, thread) of the kernels' grid goes through the same DTN_HD
// functions the kernels call (channel_thread_sum, channel_thread_map, channel_finish_one,
// channel_thread_finish_map) and the same stage sequences (bn_forward_train, bn_backward,
// bias_grad), with host arrays, and the
// results are compared with Backend<Cpu>. No GPU is needed: this runs wherever nvcc builds the
// CUDA backend (CI included), so the index arithmetic, the slice split, the functors and the
// scratch layout of code that otherwise runs only on a GPU are checked on every commit. Not
// checked here: the launches, block_sum and the memory model (tests/cuda/ covers those on a GPU).
//
// Bound: relative L2 error 1e-6, the parity tests' kRound. Both sides evaluate the same formulas
// in double and round once to float; only the order of the double sums differs (~1e-16
// relative), so outputs differ by at most an ulp of float (~6e-8 relative) in rare elements.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <dtn/cuda.cuh>

#include "../cuda/parity.cuh"
#include "block_tree.hpp"

namespace {

using dtn::cuda::detail::ChannelGrid;
using dtn::cuda::detail::kThreads;
using dtn::cuda::detail::PerSegment;
using dtn::cuda::detail::SegmentGrids;
using Cpu = dtn::Backend<dtn::Cpu>;

// The kernels' grid, run one thread at a time. partials() sums a block's threads with
// block_sum's tree (block_tree.hpp).
struct HostExec {
  template <class Acc, class Term>
  void partials(const ChannelGrid& g, const Term& term, Acc* out) const {
    std::vector<Acc> v(kThreads);
    for (unsigned ch = 0; ch < g.c; ++ch)
      for (unsigned s = 0; s < g.slices; ++s) {
        for (int t = 0; t < kThreads; ++t)
          v[static_cast<std::size_t>(t)] =
              dtn::cuda::detail::channel_thread_sum<Acc>(g, term, ch, s, static_cast<unsigned>(t));
        out[static_cast<std::size_t>(ch) * g.slices + s] = host_tree::block_sum(v);
      }
  }
  template <class Acc, class Finish>
  void finish(const ChannelGrid& g, const Acc* partials, const Finish& f) const {
    for (unsigned ch = 0; ch < g.c; ++ch) dtn::cuda::detail::channel_finish_one(g, partials, f, ch);
  }
  template <class Op>
  void map(const ChannelGrid& g, const Op& op) const {
    if (g.m == 0) return;
    for (unsigned ch = 0; ch < g.c; ++ch) {
      const auto f = op.at(ch);
      for (unsigned s = 0; s < g.slices; ++s)
        for (int t = 0; t < kThreads; ++t) dtn::cuda::detail::channel_thread_map(g, f, ch, s, static_cast<unsigned>(t));
    }
  }
  // Blocks one after another, as a GPU may run them: a block that wrote what a later block of its
  // channel reads would show here.
  template <class Acc, class Op>
  void finish_map(const ChannelGrid& g, const Acc* partials, const Op& op) const {
    for (unsigned ch = 0; ch < g.c; ++ch)
      for (unsigned s = 0; s < g.slices; ++s)
        for (int t = 0; t < kThreads; ++t)
          dtn::cuda::detail::channel_thread_finish_map(g, partials, op, ch, s, static_cast<unsigned>(t));
  }

  // The segmented stages: the (c, max slices, segments) grid, blocks past a segment's slice count
  // returning at once as the kernels' do. Blocks run in `order`: issued (the channel fastest,
  // then the slice, then the segment, as a GPU tends to issue them), reversed, or shuffled with
  // a seed (a GPU promises no order at all).
  enum class Order { issued, reversed, shuffled };
  Order order = Order::issued;
  unsigned seed = 0;
  template <class F>
  void blocks(const SegmentGrids& sg, F&& f) const {
    const std::size_t total = static_cast<std::size_t>(sg.g[0].c) * sg.max_slices * sg.count;
    std::vector<std::size_t> perm(total);
    for (std::size_t i = 0; i < total; ++i) perm[i] = order == Order::reversed ? total - 1 - i : i;
    if (order == Order::shuffled) std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
    for (const std::size_t b : perm) {
      const unsigned ch = static_cast<unsigned>(b % sg.g[0].c);
      const unsigned s = static_cast<unsigned>(b / sg.g[0].c % sg.max_slices);
      const unsigned z = static_cast<unsigned>(b / sg.g[0].c / sg.max_slices);
      f(ch, s, z);
    }
  }
  template <class Acc, class Term>
  void partials(const SegmentGrids& sg, const PerSegment<Term>& terms, Acc* out) const {
    blocks(sg, [&](unsigned ch, unsigned s, unsigned z) {
      const ChannelGrid& g = sg.g[z];
      if (s >= g.slices) return;
      std::vector<Acc> v(kThreads);
      for (int t = 0; t < kThreads; ++t)
        v[static_cast<std::size_t>(t)] =
            dtn::cuda::detail::channel_thread_sum<Acc>(g, terms.v[z], ch, s, static_cast<unsigned>(t));
      out[sg.first_partial[z] + static_cast<std::size_t>(ch) * g.slices + s] = host_tree::block_sum(v);
    });
  }
  template <class Acc, class Finish>
  void finish(const SegmentGrids& sg, const Acc* partials, const PerSegment<Finish>& f) const {
    for (unsigned ch = 0; ch < sg.g[0].c; ++ch) dtn::cuda::detail::channel_finish_one_seg(sg, partials, f.v, ch);
  }
  template <class Op>
  void map(const SegmentGrids& sg, const PerSegment<Op>& ops) const {
    blocks(sg, [&](unsigned ch, unsigned s, unsigned z) {
      if (s >= sg.g[z].slices) return;
      const auto f = ops.v[z].at(ch);
      for (int t = 0; t < kThreads; ++t) dtn::cuda::detail::channel_thread_map(sg.g[z], f, ch, s, static_cast<unsigned>(t));
    });
  }
  template <class Acc, class Op>
  void finish_map(const SegmentGrids& sg, const Acc* partials, const PerSegment<Op>& ops) const {
    blocks(sg, [&](unsigned ch, unsigned s, unsigned z) {
      for (int t = 0; t < kThreads; ++t)
        dtn::cuda::detail::channel_thread_finish_map_seg(sg, partials, ops.v, ch, s, z, static_cast<unsigned>(t));
    });
  }
};

// Counts the visits of each element (DTN_HD like the ops, though only ever run here).
struct CountTerm {
  int* visits;
  unsigned* channel_of;
  DTN_HD double operator()(std::size_t o, unsigned ch) const {
    ++visits[o];
    channel_of[o] = ch;
    return 1.0;
  }
};
struct CountMap {
  int* visits;
  unsigned* channel_of;
  struct At {
    int* visits;
    unsigned* channel_of;
    unsigned ch;
    DTN_HD void operator()(std::size_t o) const {
      ++visits[o];
      channel_of[o] = ch;
    }
  };
  DTN_HD At at(unsigned ch) const { return At{visits, channel_of, ch}; }
};

std::vector<float> normal_vector(std::size_t n, unsigned seed, double mean, double sd) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(mean, sd);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(d(rng));
  return v;
}

constexpr double kRound = 1e-6;

struct Shape3 {
  int n, c;
  long hw;
  unsigned slices;  // what channel_grid should choose
};
// One slice, hw = 1 (strided channels), three uneven slices, 4x4 planes of the example's g.1/D.7
// at batch 128, and the 64-slice cap.
const Shape3 kShapes[] = {{8, 16, 25, 1}, {32, 10, 1, 1}, {7, 3, 1501, 3}, {128, 4, 16, 1}, {2, 2, 140000, 64}};

std::string tag(const Shape3& s) {
  return "[" + std::to_string(s.n) + ", " + std::to_string(s.c) + ", " + std::to_string(s.hw) + "]";
}

}  // namespace

TEST_CASE("channel grid: slices tile each channel, every element visited once, by its own channel") {
  for (const Shape3& s : kShapes) {
    CAPTURE(tag(s));
    const ChannelGrid g = dtn::cuda::detail::channel_grid(s.n, s.c, s.hw, "test");
    CHECK(g.slices == s.slices);
    CHECK(static_cast<unsigned long long>(g.slices) * g.len >= g.m);
    const std::size_t total = static_cast<std::size_t>(s.n) * s.c * static_cast<std::size_t>(s.hw);
    std::vector<int> visits(total, 0);
    std::vector<unsigned> channel_of(total, ~0u);
    std::vector<double> partials(g.partials(), -1.0);
    HostExec{}.partials(g, CountTerm{visits.data(), channel_of.data()}, partials.data());
    long bad = 0;
    for (std::size_t i = 0; i < total; ++i)
      if (visits[i] != 1 || channel_of[i] != (i / static_cast<std::size_t>(s.hw)) % static_cast<std::size_t>(s.c)) ++bad;
    CHECK(bad == 0);
    double counted = 0;
    for (double p : partials) counted += p;
    CHECK(counted == static_cast<double>(total));

    std::fill(visits.begin(), visits.end(), 0);
    std::fill(channel_of.begin(), channel_of.end(), ~0u);
    HostExec{}.map(g, CountMap{visits.data(), channel_of.data()});
    bad = 0;
    for (std::size_t i = 0; i < total; ++i)
      if (visits[i] != 1 || channel_of[i] != (i / static_cast<std::size_t>(s.hw)) % static_cast<std::size_t>(s.c)) ++bad;
    CHECK(bad == 0);
  }
  // An empty batch: one empty slice per channel, nothing visited.
  const ChannelGrid empty = dtn::cuda::detail::channel_grid(0, 3, 5, "test");
  CHECK(empty.m == 0);
  CHECK(empty.slices == 1);
  // Out of range: a clear error naming the op.
  CHECK_THROWS_WITH_AS(dtn::cuda::detail::channel_grid(1 << 16, 2, 1L << 15, "batchnorm_backward"),
                       doctest::Contains("batchnorm_backward: unsupported shape [n 65536, c 2, hw 32768]"),
                       dtn::argument_error);
  CHECK_THROWS_AS(dtn::cuda::detail::channel_grid(4, 0, 5, "bias_add"), dtn::argument_error);
  CHECK_THROWS_AS(dtn::cuda::detail::channel_grid(-1, 2, 5, "bias_add"), dtn::argument_error);
}

// Each batch-norm test runs over every shape, plain (ops::Identity) and with each activation the
// layer fuses: body(act, shape, elements, channels).
template <class Body>
void for_each_case(Body&& body) {
  auto shapes = [&](const auto& act, const char* act_name) {
    CAPTURE(act_name);
    for (const Shape3& s : kShapes) {
      CAPTURE(tag(s));
      body(act, s, static_cast<std::size_t>(s.n) * s.c * static_cast<std::size_t>(s.hw), static_cast<std::size_t>(s.c));
    }
  };
  shapes(dtn::ops::Identity{}, "none");
  shapes(dtn::ops::Relu{}, "ReLU");
  shapes(dtn::ops::LeakyRelu{0.2}, "LeakyReLU(0.2)");
  shapes(dtn::ops::Tanh{}, "Tanh");
}

TEST_CASE("batch norm forward (train and eval) on the GPU's grid, run on the host, matches the CPU backend") {
  for_each_case([](const auto& act, const Shape3& s, std::size_t sz, std::size_t c) {
    using Act = std::decay_t<decltype(act)>;
    const auto x = normal_vector(sz, 1, 0.7, 2.0);  // a mean far from 0 exercises the two passes
    const auto gamma = parity::random_vector(c, 2, 0.5, 1.5), beta = parity::random_vector(c, 3);
    dtn::BnGeom bg;
    bg.n = s.n;
    bg.c = s.c;
    bg.hw = s.hw;
    bg.eps = 1e-5;
    bg.momentum = 0.1;

    // Train. Running statistics start equal on both sides; pure outputs start different.
    auto rm_ref = parity::random_vector(c, 4), rv_ref = parity::random_vector(c, 5, 0.5, 2);
    auto rm = rm_ref, rv = rv_ref;
    std::vector<float> y_ref(sz, 1.0f), y(sz, -7.0f), mean_ref(c, 1.0f), mean(c, -7.0f), inv_ref(c, 1.0f),
        inv(c, -7.0f);
    Cpu::batchnorm_forward_train(bg, x.data(), gamma.data(), beta.data(), rm_ref.data(), rv_ref.data(), y_ref.data(),
                                 mean_ref.data(), inv_ref.data(), act);
    const ChannelGrid g = dtn::cuda::detail::channel_grid(s.n, s.c, s.hw, "test");
    std::vector<double> scratch(dtn::cuda::detail::channel_scratch_bytes(g) / sizeof(double) + 1, std::nan(""));
    dtn::cuda::detail::bn_forward_train(HostExec{}, g, bg.eps, bg.momentum, x.data(), gamma.data(), beta.data(),
                                        rm.data(), rv.data(), y.data(), mean.data(), inv.data(), scratch.data(), act);
    CHECK(parity::rel_l2(y, y_ref) <= kRound);
    CHECK(parity::rel_l2(mean, mean_ref) <= kRound);
    CHECK(parity::rel_l2(inv, inv_ref) <= kRound);
    CHECK(parity::rel_l2(rm, rm_ref) <= kRound);
    CHECK(parity::rel_l2(rv, rv_ref) <= kRound);

    // Eval, with the running statistics just updated.
    std::vector<float> ye_ref(sz, 1.0f), ye(sz, -7.0f);
    Cpu::batchnorm_forward_eval(bg, x.data(), gamma.data(), beta.data(), rm_ref.data(), rv_ref.data(), ye_ref.data(),
                                act);
    HostExec{}.map(g, dtn::cuda::detail::BnEvalApply<float, Act>{x.data(), ye.data(), gamma.data(), beta.data(),
                                                                 rm_ref.data(), rv_ref.data(), bg.eps, act});
    CHECK(parity::rel_l2(ye, ye_ref) <= kRound);
  });
}

TEST_CASE("batch norm forward on the GPU's grid: one-pass shifted statistics far from 0, and in place") {
  // Data whose mean is 5e5 standard deviations from 0 (still 30 float steps to a deviation), and
  // each channel's first element (the shift k of the one-pass sums) 30 deviations from the mean:
  // against the CPU's two-pass statistics in double. Unshifted one-pass sums would lose about
  // (5e5)^2 * 1e-16 = 3e-5 of the variance here, 30 times the bound.
  for (const Shape3& s : kShapes) {
    CAPTURE(tag(s));
    const std::size_t sz = static_cast<std::size_t>(s.n) * s.c * static_cast<std::size_t>(s.hw);
    const std::size_t c = static_cast<std::size_t>(s.c);
    auto x = normal_vector(sz, 31, 1000.0, 0.002);
    for (std::size_t ch = 0; ch < c; ++ch) x[ch * static_cast<std::size_t>(s.hw)] = 1000.06f;
    const auto gamma = parity::random_vector(c, 32, 0.5, 1.5), beta = parity::random_vector(c, 33);
    dtn::BnGeom bg;
    bg.n = s.n;
    bg.c = s.c;
    bg.hw = s.hw;
    std::vector<float> rm_ref(c, 0.0f), rv_ref(c, 1.0f), y_ref(sz, 1.0f), mean_ref(c), inv_ref(c);
    Cpu::batchnorm_forward_train(bg, x.data(), gamma.data(), beta.data(), rm_ref.data(), rv_ref.data(), y_ref.data(),
                                 mean_ref.data(), inv_ref.data(), dtn::ops::Relu{});
    const ChannelGrid g = dtn::cuda::detail::channel_grid(s.n, s.c, s.hw, "test");
    std::vector<double> scratch(dtn::cuda::detail::channel_scratch_bytes(g) / sizeof(double) + 1, std::nan(""));
    // Out of place (the finishing map), then in place (y is x: a separate finish, then the map).
    std::vector<float> rm(c, 0.0f), rv(c, 1.0f), y(sz, -7.0f), mean(c, -7.0f), inv(c, -7.0f);
    dtn::cuda::detail::bn_forward_train(HostExec{}, g, bg.eps, bg.momentum, x.data(), gamma.data(), beta.data(),
                                        rm.data(), rv.data(), y.data(), mean.data(), inv.data(), scratch.data(),
                                        dtn::ops::Relu{});
    CHECK(parity::rel_l2(y, y_ref) <= kRound);
    CHECK(parity::rel_l2(mean, mean_ref) <= kRound);
    CHECK(parity::rel_l2(inv, inv_ref) <= kRound);
    CHECK(parity::rel_l2(rv, rv_ref) <= kRound);
    std::vector<float> rm2(c, 0.0f), rv2(c, 1.0f), xy = x, mean2(c, -7.0f), inv2(c, -7.0f);
    dtn::cuda::detail::bn_forward_train(HostExec{}, g, bg.eps, bg.momentum, xy.data(), gamma.data(), beta.data(),
                                        rm2.data(), rv2.data(), xy.data(), mean2.data(), inv2.data(), scratch.data(),
                                        dtn::ops::Relu{});
    CHECK(xy == y);  // the same arithmetic on the same sums: bitwise equal
    CHECK(mean2 == mean);
    CHECK(inv2 == inv);
    CHECK(rm2 == rm);
    CHECK(rv2 == rv);
  }
  // Why the in-place forward does not take the finishing map: run in place, block (ch, 0)
  // overwrites the k that block (ch, 1) then reads (shown on the 3-slice shape).
  const Shape3 s = kShapes[2];
  const std::size_t sz = static_cast<std::size_t>(s.n) * s.c * static_cast<std::size_t>(s.hw);
  const std::size_t c = static_cast<std::size_t>(s.c);
  const ChannelGrid g = dtn::cuda::detail::channel_grid(s.n, s.c, s.hw, "test");
  REQUIRE(g.slices == 3);
  const auto x = normal_vector(sz, 34, 5.0, 1.0);
  const std::vector<float> gamma(c, 1.0f), beta(c, 0.0f);
  std::vector<float> rm(c, 0.0f), rv(c, 1.0f), mean(c), inv(c), y(sz), xy = x;
  std::vector<dtn::cuda::detail::SumPair> partials(g.partials());
  HostExec{}.partials(g, dtn::cuda::detail::ShiftedSumsTerm<float>{x.data(), g.hw}, partials.data());
  using Op = dtn::cuda::detail::BnForwardOp<float, dtn::ops::Identity>;
  const double m = g.m;
  HostExec{}.finish_map(g, partials.data(),
                        Op{x.data(), y.data(), g.hw, m, 1e-5, 0.1, gamma.data(), beta.data(), rm.data(), rv.data(),
                           mean.data(), inv.data(), {}});
  HostExec{}.finish_map(g, partials.data(),
                        Op{xy.data(), xy.data(), g.hw, m, 1e-5, 0.1, gamma.data(), beta.data(), rm.data(), rv.data(),
                           mean.data(), inv.data(), {}});
  CHECK(xy != y);
}

TEST_CASE("batch norm backward (train and eval) on the GPU's grid, run on the host, matches the CPU backend") {
  for_each_case([](const auto& act, const Shape3& s, std::size_t sz, std::size_t c) {
    using Act = std::decay_t<decltype(act)>;
    const auto x = normal_vector(sz, 11, 0.3, 2.0), dy = parity::random_vector(sz, 12);
    // The fused activation's output, from a pre-activation of both signs (not read by Identity).
    std::vector<float> y = parity::random_vector(sz, 21, -2, 2);
    for (float& v : y) v = act.forward(v);
    const auto gamma = parity::random_vector(c, 13, 0.5, 1.5), mean = parity::random_vector(c, 14, -0.2, 0.2),
               inv = parity::random_vector(c, 15, 0.4, 0.8);
    dtn::BnGeom bg;
    bg.n = s.n;
    bg.c = s.c;
    bg.hw = s.hw;
    const ChannelGrid g = dtn::cuda::detail::channel_grid(s.n, s.c, s.hw, "test");
    std::vector<double> scratch(dtn::cuda::detail::channel_scratch_bytes(g) / sizeof(double) + 1, std::nan(""));

    // Gradients accumulate (start equal); dx is pure (starts different).
    auto dg_ref = parity::random_vector(c, 16), db_ref = parity::random_vector(c, 17);
    auto dg = dg_ref, db = db_ref;
    std::vector<float> dx_ref(sz, 1.0f), dx(sz, -7.0f);
    Cpu::batchnorm_backward(bg, x.data(), dy.data(), gamma.data(), mean.data(), inv.data(), dx_ref.data(),
                            dg_ref.data(), db_ref.data(), y.data(), act);
    dtn::cuda::detail::bn_backward(HostExec{}, g, x.data(), dy.data(), gamma.data(), mean.data(), inv.data(), dx.data(),
                                   dg.data(), db.data(), scratch.data(), y.data(), act);
    CHECK(parity::rel_l2(dx, dx_ref) <= kRound);
    CHECK(parity::rel_l2(dg, dg_ref) <= kRound);
    CHECK(parity::rel_l2(db, db_ref) <= kRound);

    // Without dx: the parameter gradients only.
    dtn::cuda::detail::bn_backward(HostExec{}, g, x.data(), dy.data(), gamma.data(), mean.data(), inv.data(),
                                   static_cast<float*>(nullptr), dg.data(), db.data(), scratch.data(), y.data(), act);
    Cpu::batchnorm_backward(bg, x.data(), dy.data(), gamma.data(), mean.data(), inv.data(), static_cast<float*>(nullptr),
                            dg_ref.data(), db_ref.data(), y.data(), act);
    CHECK(parity::rel_l2(dg, dg_ref) <= kRound);
    CHECK(parity::rel_l2(db, db_ref) <= kRound);

    // Evaluation mode: dx only, from the running variance.
    const auto rv = parity::random_vector(c, 22, 0.5, 2);
    std::vector<float> dxe_ref(sz, 1.0f), dxe(sz, -7.0f);
    Cpu::batchnorm_backward_eval(bg, dy.data(), gamma.data(), rv.data(), dxe_ref.data(), y.data(), act);
    HostExec{}.map(g, dtn::cuda::detail::BnEvalBackwardApply<float, Act>{dy.data(), dxe.data(), gamma.data(), rv.data(),
                                                                         y.data(), bg.eps, act});
    CHECK(parity::rel_l2(dxe, dxe_ref) <= kRound);
  });
}

TEST_CASE("the bias gradient and bias add on the GPU's grid, run on the host, match the CPU backend") {
  for (const Shape3& s : kShapes) {
    CAPTURE(tag(s));
    const std::size_t sz = static_cast<std::size_t>(s.n) * s.c * static_cast<std::size_t>(s.hw);
    const std::size_t c = static_cast<std::size_t>(s.c);
    const auto dy = parity::random_vector(sz, 12);
    const ChannelGrid g = dtn::cuda::detail::channel_grid(s.n, s.c, s.hw, "test");
    std::vector<double> scratch(dtn::cuda::detail::channel_scratch_bytes(g) / sizeof(double) + 1, std::nan(""));

    // Bias gradient (accumulates) and bias add.
    auto bg_ref = parity::random_vector(c, 18);
    auto bgrad = bg_ref;
    Cpu::bias_backward(s.n, s.c, s.hw, dy.data(), bg_ref.data());
    dtn::cuda::detail::bias_grad(HostExec{}, g, dy.data(), bgrad.data(), scratch.data());
    CHECK(parity::rel_l2(bgrad, bg_ref) <= kRound);

    const auto bias = parity::random_vector(c, 19);
    auto y_ref = parity::random_vector(sz, 20);
    auto y = y_ref;
    Cpu::bias_add(s.n, s.c, s.hw, bias.data(), y_ref.data());
    HostExec{}.map(g, dtn::cuda::detail::BiasAddOp<float>{bias.data(), y.data()});
    CHECK(parity::rel_l2(y, y_ref) == 0);  // one float addition per element on both sides
  }
}

namespace {

// Batch norm on a batch of segments (Network::forward's segments, DtnConfig::joint_batches): the
// segmented stages (one launch per stage for up to kMaxSegments segments) run by `ex` against
// the plain ops run on each segment in turn, on the host emulation of both. The same per-thread
// arithmetic on the same elements in the same order, so bit for bit equal: outputs, saved
// statistics, running statistics moved once per segment in order, parameter gradients
// accumulated in order; and the CPU backend's segmented form to float rounding.
void check_segments_bitwise(const HostExec& ex, const std::vector<int>& sizes, int c, long hw, bool in_place) {
  const int count = static_cast<int>(sizes.size());
  int n = 0;
  for (int k : sizes) n += k;
  const std::size_t sz = static_cast<std::size_t>(n) * c * static_cast<std::size_t>(hw), cz = static_cast<std::size_t>(c);
  // Segments of different means, so that statistics taken over the wrong samples would show.
  auto x = normal_vector(sz, 41, 0.5, 1.5);
  for (std::size_t i = 0; i < sz; ++i) x[i] += static_cast<float>(i / (cz * static_cast<std::size_t>(hw)) % 3);
  const auto gamma = parity::random_vector(cz, 42, 0.5, 1.5), beta = parity::random_vector(cz, 43);
  const auto dy = parity::random_vector(sz, 44);
  std::vector<double> scratch;
  auto scratch_fn = [&](std::size_t bytes) {
    scratch.assign(bytes / sizeof(double) + 1, std::nan(""));
    return static_cast<void*>(scratch.data());
  };
  const dtn::ops::LeakyRelu act{0.2};
  // Reference: the plain ops on each segment in turn.
  std::vector<float> rm_ref(cz, 0.1f), rv_ref(cz, 0.9f), y_ref(sz, -7.0f), mean_ref(cz * count), inv_ref(cz * count);
  std::size_t off = 0;
  for (int z = 0; z < count; ++z) {
    const ChannelGrid g = dtn::cuda::detail::channel_grid(sizes[z], c, hw, "test");
    dtn::cuda::detail::bn_forward_train(HostExec{}, g, 1e-5, 0.1, x.data() + off, gamma.data(), beta.data(),
                                        rm_ref.data(), rv_ref.data(), y_ref.data() + off, mean_ref.data() + z * cz,
                                        inv_ref.data() + z * cz, scratch_fn(dtn::cuda::detail::channel_scratch_bytes(g)),
                                        act);
    off += static_cast<std::size_t>(sizes[z]) * cz * static_cast<std::size_t>(hw);
  }
  std::vector<float> rm(cz, 0.1f), rv(cz, 0.9f), y(sz, 9.0f), mean(cz * count, 9.0f), inv(cz * count, 9.0f);
  std::vector<float> xy = x;
  float* out = in_place ? xy.data() : y.data();
  dtn::cuda::detail::bn_forward_train_segments(ex, scratch_fn, count, sizes.data(), c, hw, 1e-5, 0.1, xy.data(),
                                               gamma.data(), beta.data(), rm.data(), rv.data(), out, mean.data(),
                                               inv.data(), act);
  CHECK((in_place ? xy : y) == y_ref);
  CHECK(mean == mean_ref);
  CHECK(inv == inv_ref);
  CHECK(rm == rm_ref);
  CHECK(rv == rv_ref);
  dtn::BnGeom bg;
  bg.n = n;
  bg.c = c;
  bg.hw = hw;
  std::vector<float> rm_cpu(cz, 0.1f), rv_cpu(cz, 0.9f), y_cpu(sz), mean_cpu(cz * count), inv_cpu(cz * count);
  Cpu::batchnorm_forward_train_segments(bg, count, sizes.data(), x.data(), gamma.data(), beta.data(), rm_cpu.data(),
                                        rv_cpu.data(), y_cpu.data(), mean_cpu.data(), inv_cpu.data(), act);
  CHECK(parity::rel_l2(y_ref, y_cpu) <= kRound);
  CHECK(parity::rel_l2(rv_ref, rv_cpu) <= kRound);

  // Backward, with and without dx; dgamma and dbeta accumulate from equal starts.
  for (const bool with_dx : {true, false}) {
    CAPTURE(with_dx);
    auto dg_ref = parity::random_vector(cz, 45), db_ref = parity::random_vector(cz, 46);
    auto dg = dg_ref, db = db_ref;
    std::vector<float> dx_ref(sz, -7.0f), dx(sz, 9.0f);
    off = 0;
    for (int z = 0; z < count; ++z) {
      const ChannelGrid g = dtn::cuda::detail::channel_grid(sizes[z], c, hw, "test");
      dtn::cuda::detail::bn_backward(HostExec{}, g, x.data() + off, dy.data() + off, gamma.data(),
                                     mean_ref.data() + z * cz, inv_ref.data() + z * cz,
                                     with_dx ? dx_ref.data() + off : nullptr, dg_ref.data(), db_ref.data(),
                                     scratch_fn(dtn::cuda::detail::channel_scratch_bytes(g)), y_ref.data() + off, act);
      off += static_cast<std::size_t>(sizes[z]) * cz * static_cast<std::size_t>(hw);
    }
    dtn::cuda::detail::bn_backward_segments(ex, scratch_fn, count, sizes.data(), c, hw, x.data(), dy.data(),
                                            gamma.data(), mean.data(), inv.data(), with_dx ? dx.data() : nullptr,
                                            dg.data(), db.data(), y_ref.data(), act);
    CHECK(dg == dg_ref);
    CHECK(db == db_ref);
    if (with_dx) CHECK(dx == dx_ref);
  }
}

std::vector<unsigned> slices_of(const std::vector<int>& sizes, int c, long hw) {
  const SegmentGrids sg = dtn::cuda::detail::segment_grids(static_cast<int>(std::min<std::size_t>(sizes.size(), dtn::cuda::detail::kMaxSegments)),
                                                           sizes.data(), c, hw, "test");
  std::vector<unsigned> out;
  for (unsigned z = 0; z < sg.count; ++z) out.push_back(sg.g[z].slices);
  return out;
}

}  // namespace

// Six segments take two groups (4 + 2); blocks run issued and reversed.
TEST_CASE("batch norm on segments, one launch per stage: bitwise the plain ops segment by segment") {
  const std::vector<int> sizes = {3, 1, 7, 2, 5, 4};
  const int c = 3;
  const long hw = 1501;
  // 4096 elements per slice: 3 x 1501 takes 2 slices, 1 x 1501 one, 7 x 1501 three.
  CHECK(slices_of(sizes, c, hw) == std::vector<unsigned>{2, 1, 3, 1});
  for (const auto order : {HostExec::Order::issued, HostExec::Order::reversed})
    for (const bool in_place : {false, true}) {
      CAPTURE(static_cast<int>(order));
      CAPTURE(in_place);
      check_segments_bitwise(HostExec{order}, sizes, c, hw, in_place);
    }
  // Bad segment lists are refused, naming the op.
  CHECK_THROWS_WITH_AS(dtn::cuda::detail::segment_grids(5, sizes.data(), c, hw, "op"),
                       "dtn::Backend<Cuda>::op: 5 segments in one launch (1 to 4)", dtn::argument_error);
  const int bad[] = {2, 0};
  CHECK_THROWS_WITH_AS(dtn::cuda::detail::segment_grids(2, bad, c, hw, "op"),
                       "dtn::Backend<Cuda>::op: a segment of 0 images", dtn::argument_error);
}

// Slice counts from 1 to 16 side by side (blocks of the short segments return for most of the
// grid's slices) and a trailing group of one segment; blocks in three shuffled orders.
TEST_CASE("batch norm on segments: slice counts 1 to 16 in one launch, a group of one, blocks in any order") {
  const std::vector<int> sizes = {2, 40, 1, 64, 3};
  const int c = 3;
  const long hw = 1024;
  CHECK(slices_of(sizes, c, hw) == std::vector<unsigned>{1, 10, 1, 16});
  for (const unsigned seed : {1u, 2u, 3u})
    for (const bool in_place : {false, true}) {
      CAPTURE(seed);
      CAPTURE(in_place);
      check_segments_bitwise(HostExec{HostExec::Order::shuffled, seed}, sizes, c, hw, in_place);
    }
}

// One segment through the segmented stages: the plain op's grid, partials and scratch layout,
// and its results.
TEST_CASE("batch norm on one segment: the plain grid, partial layout and scratch, and its bits") {
  for (const int n : {1, 3, 17, 200})
    for (const long hw : {1L, 7L, 1024L, 1501L}) {
      CAPTURE(n);
      CAPTURE(hw);
      const ChannelGrid g = dtn::cuda::detail::channel_grid(n, 5, hw, "test");
      const SegmentGrids sg = dtn::cuda::detail::segment_grids(1, &n, 5, hw, "test");
      CHECK(sg.g[0].slices == g.slices);
      CHECK(sg.g[0].len == g.len);
      CHECK(sg.g[0].m == g.m);
      CHECK(sg.max_slices == g.slices);
      CHECK(sg.partials() == g.partials());
      CHECK(dtn::cuda::detail::seg_scratch_bytes(sg) == dtn::cuda::detail::channel_scratch_bytes(g));
      CHECK(sg.numel() == static_cast<std::size_t>(n) * 5 * static_cast<std::size_t>(hw));
    }
  for (const bool in_place : {false, true}) check_segments_bitwise(HostExec{}, {37}, 4, 1501, in_place);
}

// The segmented partial sums visit every element once, with its own channel, and each
// (segment, channel)'s slices lie in their own run of the partials: every slot written once,
// each channel's total its segment's n * hw.
TEST_CASE("batch norm on segments: the partial sums visit each element once and fill their own slots") {
  const std::vector<int> sizes = {3, 1, 9, 2};
  const int c = 4;
  const long hw = 1501;
  int n = 0;
  for (int k : sizes) n += k;
  const std::size_t sz = static_cast<std::size_t>(n) * c * static_cast<std::size_t>(hw);
  std::vector<int> visits(sz, 0);
  std::vector<unsigned> channel_of(sz, ~0u);
  const SegmentGrids sg = dtn::cuda::detail::segment_grids(4, sizes.data(), c, hw, "test");
  PerSegment<CountTerm> terms{};
  std::size_t off = 0;
  for (unsigned z = 0; z < 4; ++z) {
    terms.v[z] = CountTerm{visits.data() + off, channel_of.data() + off};
    off += sg.numel(z);
  }
  CHECK(off == sz);
  std::vector<double> partials(sg.partials(), -1.0);
  HostExec{HostExec::Order::shuffled, 7}.partials(sg, terms, partials.data());
  long bad = 0;
  for (std::size_t i = 0; i < sz; ++i)
    if (visits[i] != 1 || channel_of[i] != (i / static_cast<std::size_t>(hw)) % static_cast<std::size_t>(c)) ++bad;
  CHECK(bad == 0);
  CHECK(std::none_of(partials.begin(), partials.end(), [](double v) { return v < 0; }));
  for (unsigned z = 0; z < 4; ++z)
    for (unsigned ch = 0; ch < static_cast<unsigned>(c); ++ch) {
      CAPTURE(z);
      CAPTURE(ch);
      CHECK(dtn::cuda::detail::channel_total(sg.g[z], partials.data() + sg.first_partial[z], ch) ==
            static_cast<double>(sizes[z]) * static_cast<double>(hw));
    }
}
