// Every op of Backend<Cuda> against Backend<Cpu> on the same random inputs (fixed seeds), one
// table entry per op and geometry. Adding an op or a geometry is one entry in cases().
//
// Bounds on the relative L2 error ||gpu - cpu|| / ||cpu||, fixed from the arithmetic before any
// run and never loosened to make a test pass:
//  * kExact (0, bit for bit): pure data movement or selection (max pooling, argmax, integer
//    counts, channel repeat).
//  * kRound = 1e-6: both backends evaluate the same formula (in double wherever the CPU reference
//    does), so results differ only in the last float rounding: a few ulps per element at most
//    (tanhf against libm, a fused multiply-add the host does not use), i.e. <= ~2.4e-7 relative.
//  * kSum = 1e-4: convolutions and GEMMs sum K products in FP32 (FMA math, no TF32) in a
//    different order than Eigen's. With zero-mean random data the rounding errors are
//    independent and grow like sqrt(K) * 2^-24 (< 1e-5 for the K <= 8192 used here); the bound
//    leaves a 10x margin for cuDNN's transform algorithms (Winograd, FFT), whose error constants
//    are larger than a direct sum's.
#include <doctest/doctest.h>

#include <dtn/cuda.cuh>

#include "parity.cuh"

using namespace parity;
using dtn::ConvGeom;

namespace {

constexpr double kExact = 0;
constexpr double kRound = 1e-6;
constexpr double kSum = 1e-4;

std::size_t xs(const ConvGeom& g) { return static_cast<std::size_t>(g.n) * g.c_in * g.h_in * g.w_in; }
std::size_t ws(const ConvGeom& g) { return static_cast<std::size_t>(g.c_out) * g.c_in * g.kh * g.kw; }
std::size_t ys(const ConvGeom& g) { return static_cast<std::size_t>(g.n) * g.c_out * g.h_out * g.w_out; }

// The three passes on cuDNN (its heuristic algorithm), switched on for the op only: the GEMM
// engine, the default, has cases of its own below.
void add_conv_cases(std::vector<Case>& cs, const std::string& tag, const ConvGeom& g) {
  cs.push_back(make_case("conv2d_forward " + tag, kSum, {in("x", xs(g)), in("w", ws(g)), in("b", g.c_out), out("y", ys(g))},
                         [g](auto B, auto& b) {
                           const ConvGemmScope cudnn(false);
                           decltype(B)::conv2d_forward(g, b.f(0), b.f(1), b.f(2), b.f(3));
                         }));
  cs.push_back(make_case("conv2d_forward nobias " + tag, kSum, {in("x", xs(g)), in("w", ws(g)), out("y", ys(g))},
                         [g](auto B, auto& b) {
                           const ConvGemmScope cudnn(false);
                           decltype(B)::conv2d_forward(g, b.f(0), b.f(1), static_cast<const float*>(nullptr), b.f(2));
                         }));
  cs.push_back(make_case("conv2d_backward_data " + tag, kSum, {in("dy", ys(g)), in("w", ws(g)), out("dx", xs(g))},
                         [g](auto B, auto& b) {
                           const ConvGemmScope cudnn(false);
                           decltype(B)::conv2d_backward_data(g, b.f(0), b.f(1), b.f(2));
                         }));
  cs.push_back(make_case("conv2d_backward_filter " + tag, kSum,
                         {in("x", xs(g)), in("dy", ys(g)), acc("dw", ws(g)), acc("db", g.c_out)},
                         [g](auto B, auto& b) {
                           const ConvGemmScope cudnn(false);
                           decltype(B)::conv2d_backward_filter(g, b.f(0), b.f(1), b.f(2), b.f(3));
                         }));
  cs.push_back(make_case("conv2d_backward_filter nobias " + tag, kSum, {in("x", xs(g)), in("dy", ys(g)), acc("dw", ws(g))},
                         [g](auto B, auto& b) {
                           const ConvGemmScope cudnn(false);
                           decltype(B)::conv2d_backward_filter(g, b.f(0), b.f(1), b.f(2), static_cast<float*>(nullptr));
                         }));
}

// The three passes on the GEMM engine, switched on for the op only (the CPU side ignores it),
// under a workspace limit (set_conv_workspace_limit) where one is given.
void add_conv_gemm_cases(std::vector<Case>& cs, const std::string& tag, const ConvGeom& g,
                         std::size_t limit = dtn::cuda::Context::no_workspace_limit) {
  // else these cases would test cuDNN again
  REQUIRE(dtn::cuda::detail::conv_gemm_supported(g, dtn::cuda::detail::conv_gemm_workspace_cap(limit)));
  cs.push_back(make_case("conv2d_forward GEMM engine " + tag, kSum,
                         {in("x", xs(g)), in("w", ws(g)), in("b", g.c_out), out("y", ys(g))}, [g, limit](auto B, auto& b) {
                           const ConvGemmScope on(true);
                           const WorkspaceLimitScope within(limit);
                           decltype(B)::conv2d_forward(g, b.f(0), b.f(1), b.f(2), b.f(3));
                         }));
  cs.push_back(make_case("conv2d_backward_data GEMM engine " + tag, kSum, {in("dy", ys(g)), in("w", ws(g)), out("dx", xs(g))},
                         [g, limit](auto B, auto& b) {
                           const ConvGemmScope on(true);
                           const WorkspaceLimitScope within(limit);
                           decltype(B)::conv2d_backward_data(g, b.f(0), b.f(1), b.f(2));
                         }));
  cs.push_back(make_case("conv2d_backward_filter GEMM engine " + tag, kSum,
                         {in("x", xs(g)), in("dy", ys(g)), acc("dw", ws(g)), acc("db", g.c_out)}, [g, limit](auto B, auto& b) {
                           const ConvGemmScope on(true);
                           const WorkspaceLimitScope within(limit);
                           decltype(B)::conv2d_backward_filter(g, b.f(0), b.f(1), b.f(2), b.f(3));
                         }));
}

// The three passes on cuDNN's graph API: autotuning, with its plan forced wherever one builds
// (the test of conv autotune in test_runtime.cu checks that it was taken).
void add_conv_graph_cases(std::vector<Case>& cs, const std::string& tag, const ConvGeom& g) {
  cs.push_back(make_case("conv2d_forward graph API " + tag, kSum,
                         {in("x", xs(g)), in("w", ws(g)), in("b", g.c_out), out("y", ys(g))}, [g](auto B, auto& b) {
                           const ConvAutotuneScope tuned(true);
                           const ConvGraphForcedScope forced(true);
                           decltype(B)::conv2d_forward(g, b.f(0), b.f(1), b.f(2), b.f(3));
                         }));
  cs.push_back(make_case("conv2d_backward_data graph API " + tag, kSum,
                         {in("dy", ys(g)), in("w", ws(g)), out("dx", xs(g))}, [g](auto B, auto& b) {
                           const ConvAutotuneScope tuned(true);
                           const ConvGraphForcedScope forced(true);
                           decltype(B)::conv2d_backward_data(g, b.f(0), b.f(1), b.f(2));
                         }));
  cs.push_back(make_case("conv2d_backward_filter graph API " + tag, kSum,
                         {in("x", xs(g)), in("dy", ys(g)), acc("dw", ws(g)), acc("db", g.c_out)}, [g](auto B, auto& b) {
                           const ConvAutotuneScope tuned(true);
                           const ConvGraphForcedScope forced(true);
                           decltype(B)::conv2d_backward_filter(g, b.f(0), b.f(1), b.f(2), b.f(3));
                         }));
}

// Both backward passes in one op, of a convolution and of a transposed convolution, with the
// weight gradient on the GPU's second lane (set_conv_overlap) on one engine: "gemm" (the
// default), "cudnn" (its heuristic choice) or "graph" (autotuned, graph-API plans forced). The
// first call of a geometry times nothing on "gemm" and runs the two passes side by side; on the
// others the input gradient's engine is still to be chosen, and it waits for the weight gradient.
void add_conv_pair_cases(std::vector<Case>& cs, const std::string& tag, const ConvGeom& g, const std::string& engine) {
  auto scopes = [engine](auto&& run) {
    const ConvOverlapScope overlap(true);
    const ConvGemmScope gemm(engine == "gemm");
    const ConvAutotuneScope tuned(engine == "graph");
    const ConvGraphForcedScope forced(engine == "graph");
    run();
  };
  cs.push_back(make_case("conv2d_backward (overlapped, " + engine + ") " + tag, kSum,
                         {in("x", xs(g)), in("dy", ys(g)), in("w", ws(g)), out("dx", xs(g)), acc("dw", ws(g)),
                          acc("db", g.c_out)},
                         [g, scopes](auto B, auto& b) {
                           scopes([&] { decltype(B)::conv2d_backward(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4), b.f(5)); });
                         }));
  // As a transposed convolution's: x has g's output shape, dy g's input shape.
  cs.push_back(make_case("conv_transpose2d_backward (overlapped, " + engine + ") " + tag, kSum,
                         {in("x", ys(g)), in("dy", xs(g)), in("w", ws(g)), out("dx", ys(g)), acc("dw", ws(g)),
                          acc("db", g.c_in)},
                         [g, scopes](auto B, auto& b) {
                           scopes([&] {
                             decltype(B)::conv_transpose2d_backward(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4), b.f(5));
                           });
                         }));
  // Only one of the two wanted: nothing to overlap, and the other output is left alone.
  cs.push_back(make_case("conv2d_backward, input gradient only (" + engine + ") " + tag, kSum,
                         {in("x", xs(g)), in("dy", ys(g)), in("w", ws(g)), out("dx", xs(g))},
                         [g, scopes](auto B, auto& b) {
                           scopes([&] {
                             decltype(B)::conv2d_backward(g, b.f(0), b.f(1), b.f(2), b.f(3), static_cast<float*>(nullptr),
                                                          static_cast<float*>(nullptr));
                           });
                         }));
  cs.push_back(make_case("conv_transpose2d_backward, weight gradient only (" + engine + ") " + tag, kSum,
                         {in("x", ys(g)), in("dy", xs(g)), in("w", ws(g)), acc("dw", ws(g)), acc("db", g.c_in)},
                         [g, scopes](auto B, auto& b) {
                           scopes([&] {
                             decltype(B)::conv_transpose2d_backward(g, b.f(0), b.f(1), b.f(2), static_cast<float*>(nullptr),
                                                                    b.f(3), b.f(4));
                           });
                         }));
}

void add_gemm_case(std::vector<Case>& cs, bool ta, bool tb, int m, int n, int k, float alpha, float beta, int pad) {
  // Row-major op(A) [m, k], op(B) [k, n]; leading dimensions padded by `pad` columns.
  const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  const int lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
  const std::string tag = std::string("gemm ") + (ta ? "T" : "N") + (tb ? "T" : "N") + " " + std::to_string(m) + "x" +
                          std::to_string(n) + "x" + std::to_string(k) + " pad " + std::to_string(pad);
  cs.push_back(make_case(tag, kSum,
                         {in("A", static_cast<std::size_t>(a_rows) * lda), in("B", static_cast<std::size_t>(b_rows) * ldb),
                          acc("C", static_cast<std::size_t>(m) * ldc)},
                         [=](auto B, auto& b) {
                           decltype(B)::gemm(ta, tb, m, n, k, alpha, b.f(0), lda, b.f(1), ldb, beta, b.f(2), ldc);
                         }));
}

void add_bn_cases(std::vector<Case>& cs, const std::string& tag, int n, int c, long hw) {
  dtn::BnGeom g;
  g.n = n;
  g.c = c;
  g.hw = hw;
  g.eps = 1e-5;
  g.momentum = 0.1;
  const std::size_t sz = static_cast<std::size_t>(n) * c * hw, cs_ = static_cast<std::size_t>(c);
  cs.push_back(make_case("batchnorm_forward_train " + tag, kRound,
                         {in_normal("x", sz, 2), in("gamma", cs_, 0.5, 1.5), in("beta", cs_), acc("running_mean", cs_),
                          acc_positive("running_var", cs_, 0.5, 2), out("y", sz), out("save_mean", cs_), out("save_invstd", cs_)},
                         [g](auto B, auto& b) {
                           decltype(B)::batchnorm_forward_train(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4), b.f(5), b.f(6),
                                                                b.f(7));
                         }));
  // In place (y is x): the GPU then finishes the statistics before it writes y (batchnorm.cuh).
  cs.push_back(make_case("batchnorm_forward_train in place " + tag, kRound,
                         {acc("x_then_y", sz), in("gamma", cs_, 0.5, 1.5), in("beta", cs_), acc("running_mean", cs_),
                          acc_positive("running_var", cs_, 0.5, 2), out("save_mean", cs_), out("save_invstd", cs_)},
                         [g](auto B, auto& b) {
                           decltype(B)::batchnorm_forward_train(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4), b.f(0), b.f(5),
                                                                b.f(6));
                         }));
  cs.push_back(make_case("batchnorm_forward_eval " + tag, kRound,
                         {in_normal("x", sz, 2), in("gamma", cs_, 0.5, 1.5), in("beta", cs_), in("mean", cs_),
                          in_positive("var", cs_, 0.5, 2), out("y", sz)},
                         [g](auto B, auto& b) {
                           decltype(B)::batchnorm_forward_eval(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4), b.f(5));
                         }));
  cs.push_back(make_case("batchnorm_backward " + tag, kRound,
                         {in_normal("x", sz, 2), in("dy", sz), in("gamma", cs_, 0.5, 1.5), in("mean", cs_, -0.2, 0.2),
                          in_positive("invstd", cs_, 0.4, 0.8), out("dx", sz), acc("dgamma", cs_), acc("dbeta", cs_)},
                         [g](auto B, auto& b) {
                           decltype(B)::batchnorm_backward(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4), b.f(5), b.f(6), b.f(7));
                         }));
  cs.push_back(make_case("batchnorm_backward no dx " + tag, kRound,
                         {in_normal("x", sz, 2), in("dy", sz), in("gamma", cs_, 0.5, 1.5), in("mean", cs_, -0.2, 0.2),
                          in_positive("invstd", cs_, 0.4, 0.8), acc("dgamma", cs_), acc("dbeta", cs_)},
                         [g](auto B, auto& b) {
                           decltype(B)::batchnorm_backward(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4),
                                                           static_cast<float*>(nullptr), b.f(5), b.f(6));
                         }));
  cs.push_back(make_case("batchnorm_backward_eval " + tag, kRound,
                         {in("dy", sz), in("gamma", cs_, 0.5, 1.5), in_positive("var", cs_, 0.5, 2), out("dx", sz)},
                         [g](auto B, auto& b) {
                           decltype(B)::batchnorm_backward_eval(g, b.f(0), b.f(1), b.f(2), b.f(3));
                         }));
  // Fused with an activation (layers/batch_norm.hpp): y is the activation's output in backward.
  auto fused = [&](const auto& act, const std::string& name) {
    const std::string t = " + " + name + " " + tag;
    cs.push_back(make_case("batchnorm_forward_train" + t, kRound,
                           {in_normal("x", sz, 2), in("gamma", cs_, 0.5, 1.5), in("beta", cs_), acc("running_mean", cs_),
                            acc_positive("running_var", cs_, 0.5, 2), out("y", sz), out("save_mean", cs_),
                            out("save_invstd", cs_)},
                           [g, act](auto B, auto& b) {
                             decltype(B)::batchnorm_forward_train(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4), b.f(5),
                                                                  b.f(6), b.f(7), act);
                           }));
    cs.push_back(make_case("batchnorm_forward_eval" + t, kRound,
                           {in_normal("x", sz, 2), in("gamma", cs_, 0.5, 1.5), in("beta", cs_), in("mean", cs_),
                            in_positive("var", cs_, 0.5, 2), out("y", sz)},
                           [g, act](auto B, auto& b) {
                             decltype(B)::batchnorm_forward_eval(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4), b.f(5), act);
                           }));
    cs.push_back(make_case("batchnorm_backward" + t, kRound,
                           {in_normal("x", sz, 2), in("dy", sz), in("gamma", cs_, 0.5, 1.5), in("mean", cs_, -0.2, 0.2),
                            in_positive("invstd", cs_, 0.4, 0.8), in("y", sz), out("dx", sz), acc("dgamma", cs_),
                            acc("dbeta", cs_)},
                           [g, act](auto B, auto& b) {
                             decltype(B)::batchnorm_backward(g, b.f(0), b.f(1), b.f(2), b.f(3), b.f(4), b.f(6), b.f(7),
                                                             b.f(8), b.f(5), act);
                           }));
    cs.push_back(make_case("batchnorm_backward_eval" + t, kRound,
                           {in("dy", sz), in("gamma", cs_, 0.5, 1.5), in_positive("var", cs_, 0.5, 2), in("y", sz),
                            out("dx", sz)},
                           [g, act](auto B, auto& b) {
                             decltype(B)::batchnorm_backward_eval(g, b.f(0), b.f(1), b.f(2), b.f(4), b.f(3), act);
                           }));
  };
  fused(dtn::ops::Relu{}, "ReLU");
  fused(dtn::ops::LeakyRelu{0.2}, "LeakyReLU(0.2)");
  fused(dtn::ops::Tanh{}, "Tanh");
}

// Batch norm on six segments of uneven sizes (two launch groups of at most kMaxSegments), plain
// and fused with LeakyReLU. kBnSegmentHw = 1501 pixels gives the segments 2, 1, 3, 1 | 2, 2
// slices of 4096 elements per channel: blocks past their own segment's slice count return, and
// the partial sums of a segment lie at offsets other segments' slice counts decide.
const std::vector<int> kBnSegments = {3, 1, 7, 2, 5, 4};
constexpr long kBnSegmentHw = 1501;
void add_bn_segment_cases(std::vector<Case>& cs) {
  dtn::BnGeom g;
  g.n = 22;
  g.c = 5;
  g.hw = kBnSegmentHw;
  const std::size_t sz = static_cast<std::size_t>(g.n) * g.c * g.hw, rows = static_cast<std::size_t>(g.c) * kBnSegments.size();
  const std::size_t cs_ = static_cast<std::size_t>(g.c);
  const int count = static_cast<int>(kBnSegments.size());
  auto with_act = [&](const auto& act, const std::string& name) {
    cs.push_back(make_case("batchnorm_forward_train_segments " + name, kRound,
                           {in_normal("x", sz, 2), in("gamma", cs_, 0.5, 1.5), in("beta", cs_), acc("running_mean", cs_),
                            acc_positive("running_var", cs_, 0.5, 2), out("y", sz), out("save_mean", rows),
                            out("save_invstd", rows)},
                           [g, act, count](auto B, auto& b) {
                             decltype(B)::batchnorm_forward_train_segments(g, count, kBnSegments.data(), b.f(0), b.f(1),
                                                                           b.f(2), b.f(3), b.f(4), b.f(5), b.f(6), b.f(7),
                                                                           act);
                           }));
    cs.push_back(make_case("batchnorm_backward_segments " + name, kRound,
                           {in_normal("x", sz, 2), in("dy", sz), in("gamma", cs_, 0.5, 1.5), in("mean", rows, -0.2, 0.2),
                            in_positive("invstd", rows, 0.4, 0.8), in("y", sz), out("dx", sz), acc("dgamma", cs_),
                            acc("dbeta", cs_)},
                           [g, act, count](auto B, auto& b) {
                             decltype(B)::batchnorm_backward_segments(g, count, kBnSegments.data(), b.f(0), b.f(1), b.f(2),
                                                                      b.f(3), b.f(4), b.f(6), b.f(7), b.f(8), b.f(5), act);
                           }));
  };
  with_act(dtn::ops::Identity{}, "(6 segments)");
  with_act(dtn::ops::LeakyRelu{0.2}, "+ LeakyReLU(0.2) (6 segments)");
  cs.push_back(make_case("batchnorm_forward_train_segments in place (6 segments)", kRound,
                         {acc("x_then_y", sz), in("gamma", cs_, 0.5, 1.5), in("beta", cs_), acc("running_mean", cs_),
                          acc_positive("running_var", cs_, 0.5, 2), out("save_mean", rows), out("save_invstd", rows)},
                         [g, count](auto B, auto& b) {
                           decltype(B)::batchnorm_forward_train_segments(g, count, kBnSegments.data(), b.f(0), b.f(1),
                                                                         b.f(2), b.f(3), b.f(4), b.f(0), b.f(5), b.f(6));
                         }));
  cs.push_back(make_case("batchnorm_backward_segments no dx (6 segments)", kRound,
                         {in_normal("x", sz, 2), in("dy", sz), in("gamma", cs_, 0.5, 1.5), in("mean", rows, -0.2, 0.2),
                          in_positive("invstd", rows, 0.4, 0.8), acc("dgamma", cs_), acc("dbeta", cs_)},
                         [g, count](auto B, auto& b) {
                           decltype(B)::batchnorm_backward_segments(g, count, kBnSegments.data(), b.f(0), b.f(1), b.f(2),
                                                                    b.f(3), b.f(4), static_cast<float*>(nullptr), b.f(5),
                                                                    b.f(6));
                         }));
}

void add_pool_cases(std::vector<Case>& cs, int n, int c, int h, int w, int k, int stride, bool specials) {
  dtn::PoolGeom g;
  g.n = n;
  g.c = c;
  g.h_in = h;
  g.w_in = w;
  g.k = k;
  g.stride = stride;
  g.h_out = (h - k) / stride + 1;
  g.w_out = (w - k) / stride + 1;
  const std::size_t in_sz = static_cast<std::size_t>(n) * c * h * w, out_sz = static_cast<std::size_t>(n) * c * g.h_out * g.w_out;
  const std::string tag = std::to_string(h) + "x" + std::to_string(w) + " k" + std::to_string(k) + " s" +
                          std::to_string(stride) + (specials ? " with NaN/Inf" : "");
  cs.push_back(make_case("maxpool_forward " + tag, kExact,
                         {specials ? in_specials("x", in_sz) : in("x", in_sz), out_exact("y", out_sz), out_ints("argmax", out_sz)},
                         [g](auto B, auto& b) { decltype(B)::maxpool_forward(g, b.f(0), b.f(1), b.i(2)); }));
  // Backward from the argmax each device's forward produced (the same, as checked above).
  // Overlapping windows (stride < k) sum several gradients into one input: kRound covers the order.
  cs.push_back(make_case("maxpool_backward " + tag, stride < k ? kRound : kExact,
                         {specials ? in_specials("x", in_sz) : in("x", in_sz), out("y", out_sz), out_ints("argmax", out_sz),
                          in("dy", out_sz), out("dx", in_sz)},
                         [g](auto B, auto& b) {
                           decltype(B)::maxpool_forward(g, b.f(0), b.f(1), b.i(2));
                           decltype(B)::maxpool_backward(g, b.f(3), b.i(2), b.f(4));
                         }));
}

void add_resize_cases(std::vector<Case>& cs, int n, int c, int h_in, int w_in, int h_out, int w_out) {
  dtn::ResizeGeom g;
  g.n = n;
  g.c = c;
  g.h_in = h_in;
  g.w_in = w_in;
  g.h_out = h_out;
  g.w_out = w_out;
  const std::size_t in_sz = static_cast<std::size_t>(n) * c * h_in * w_in, out_sz = static_cast<std::size_t>(n) * c * h_out * w_out;
  const std::string tag = std::to_string(h_in) + "x" + std::to_string(w_in) + " -> " + std::to_string(h_out) + "x" +
                          std::to_string(w_out);
  cs.push_back(make_case("resize_bilinear_forward " + tag, kRound, {in("x", in_sz), out("y", out_sz)},
                         [g](auto B, auto& b) { decltype(B)::resize_bilinear_forward(g, b.f(0), b.f(1)); }));
  cs.push_back(make_case("resize_bilinear_backward " + tag, kRound, {in("dy", out_sz), out("dx", in_sz)},
                         [g](auto B, auto& b) { decltype(B)::resize_bilinear_backward(g, b.f(0), b.f(1)); }));
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  const std::size_t n = 100003;  // not a multiple of the block size

  // ---- element-wise maps over the shared functors
  const dtn::ops::Relu relu;
  const dtn::ops::LeakyRelu leaky;
  const dtn::ops::Tanh tanh_op;
  cs.push_back(make_case("map_forward relu", kRound, {in("x", n, -3, 3), out("y", n)},
                         [=](auto B, auto& b) { decltype(B)::map_forward(relu, n, b.f(0), b.f(1)); }));
  cs.push_back(make_case("map_backward relu", kRound, {in("x", n, -3, 3), in("y", n), in("dy", n), out("dx", n)},
                         [=](auto B, auto& b) { decltype(B)::map_backward(relu, n, b.f(0), b.f(1), b.f(2), b.f(3)); }));
  cs.push_back(make_case("map_forward leaky_relu", kRound, {in("x", n, -3, 3), out("y", n)},
                         [=](auto B, auto& b) { decltype(B)::map_forward(leaky, n, b.f(0), b.f(1)); }));
  cs.push_back(make_case("map_backward leaky_relu", kRound, {in("x", n, -3, 3), in("y", n), in("dy", n), out("dx", n)},
                         [=](auto B, auto& b) { decltype(B)::map_backward(leaky, n, b.f(0), b.f(1), b.f(2), b.f(3)); }));
  cs.push_back(make_case("map_forward tanh", kRound, {in("x", n, -4, 4), out("y", n)},
                         [=](auto B, auto& b) { decltype(B)::map_forward(tanh_op, n, b.f(0), b.f(1)); }));
  cs.push_back(make_case("map_backward tanh", kRound, {in("x", n, -4, 4), in("y", n), in("dy", n), out("dx", n)},
                         [=](auto B, auto& b) { decltype(B)::map_backward(tanh_op, n, b.f(0), b.f(1), b.f(2), b.f(3)); }));
  cs.push_back(make_case("fill", kExact, {out_exact("p", n)},
                         [=](auto B, auto& b) { decltype(B)::fill(n, b.f(0), 0.625f); }));
  cs.push_back(make_case("axpy", kRound, {in("x", n), acc("y", n)},
                         [=](auto B, auto& b) { decltype(B)::axpy(n, -0.75f, b.f(0), b.f(1)); }));
  cs.push_back(make_case("scale", kRound, {acc("x", n)}, [=](auto B, auto& b) { decltype(B)::scale(n, 1.7f, b.f(0)); }));
  cs.push_back(make_case("u8_to_signed", kRound, {in_bytes("src", n), out("dst", n)},
                         [=](auto B, auto& b) { decltype(B)::u8_to_signed(n, b.u(0), b.f(1)); }));
  cs.push_back(make_case("bias_add", kRound, {in("bias", 24), acc("y", 5 * 24 * 49)},
                         [](auto B, auto& b) { decltype(B)::bias_add(5, 24, 49L, b.f(0), b.f(1)); }));
  cs.push_back(make_case("bias_backward", kRound, {in("dy", 5 * 24 * 49), acc("db", 24)},
                         [](auto B, auto& b) { decltype(B)::bias_backward(5, 24, 49L, b.f(0), b.f(1)); }));
  cs.push_back(make_case("bias_add 3 slices", kRound, {in("bias", 3), acc("y", 7 * 3 * 1501)},
                         [](auto B, auto& b) { decltype(B)::bias_add(7, 3, 1501L, b.f(0), b.f(1)); }));
  cs.push_back(make_case("bias_backward 3 slices", kRound, {in("dy", 7 * 3 * 1501), acc("db", 3)},
                         [](auto B, auto& b) { decltype(B)::bias_backward(7, 3, 1501L, b.f(0), b.f(1)); }));
  cs.push_back(make_case("repeat_channels_forward", kExact, {in("x", 4 * 2 * 30), out_exact("y", 4 * 6 * 30)},
                         [](auto B, auto& b) { decltype(B)::repeat_channels_forward(4, 2, 3, 30L, b.f(0), b.f(1)); }));
  cs.push_back(make_case("repeat_channels_backward", kRound, {in("dy", 4 * 6 * 30), out("dx", 4 * 2 * 30)},
                         [](auto B, auto& b) { decltype(B)::repeat_channels_backward(4, 2, 3, 30L, b.f(0), b.f(1)); }));

  // ---- reductions
  const std::size_t big = 1000003;
  cs.push_back(make_case("sum", kRound, {in("x", big), out("out", 1)},
                         [=](auto B, auto& b) { decltype(B)::sum(big, b.f(0), b.f(1)); }));
  cs.push_back(make_case("sum of one element", kRound, {in("x", 1), out("out", 1)},
                         [](auto B, auto& b) { decltype(B)::sum(std::size_t(1), b.f(0), b.f(1)); }));
  cs.push_back(make_case("count_nonfinite", kExact, {in_specials("x", big), out_ints("count", 1)},
                         [=](auto B, auto& b) { decltype(B)::count_nonfinite(big, b.f(0), b.i(1)); }));

  // ---- convolutions: the geometries of the digits DTN (f, g as transposed convs, D) and odd ones
  add_conv_cases(cs, "f1 3->64 3x3 p1 32x32", conv_geom(4, 3, 32, 32, 64, 3, 1, 1));
  add_conv_cases(cs, "f2 64->128 3x3 p1 16x16", conv_geom(4, 64, 16, 16, 128, 3, 1, 1));
  // g1 and D4 are dense (one output pixel): cuBLAS on the GPU, one GEMM on the CPU
  add_conv_cases(cs, "g1 as conv 512->128 4x4 s1 p0 4x4", conv_geom(4, 512, 4, 4, 128, 4, 1, 0));
  add_conv_cases(cs, "D4 512->3 4x4 s1 p0 4x4", conv_geom(4, 512, 4, 4, 3, 4, 1, 0));
  add_conv_cases(cs, "g2 as conv 256->512 4x4 s2 p1 8x8", conv_geom(4, 256, 8, 8, 512, 4, 2, 1));
  add_conv_cases(cs, "g4 as conv 1->128 4x4 s2 p1 32x32", conv_geom(4, 1, 32, 32, 128, 4, 2, 1));
  add_conv_cases(cs, "odd 5->7 3x3 s2 p0 13x11", conv_geom(3, 5, 13, 11, 7, 3, 2, 0));
  // the GEMM engine: D.6 and g.3/g.6/g.9 (as convolutions) at batch 4, f's second layer
  // (stride 1) and the odd geometry whose last row and column no output covers
  add_conv_gemm_cases(cs, "D6 256->512 3x3 s2 p1 8x8", conv_geom(4, 256, 8, 8, 512, 3, 2, 1));
  add_conv_gemm_cases(cs, "g2 as conv 256->512 4x4 s2 p1 8x8", conv_geom(4, 256, 8, 8, 512, 4, 2, 1));
  add_conv_gemm_cases(cs, "g3 as conv 128->256 4x4 s2 p1 16x16", conv_geom(4, 128, 16, 16, 256, 4, 2, 1));
  add_conv_gemm_cases(cs, "g4 as conv 1->128 4x4 s2 p1 32x32", conv_geom(4, 1, 32, 32, 128, 4, 2, 1));
  add_conv_gemm_cases(cs, "f2 64->128 3x3 p1 16x16", conv_geom(4, 64, 16, 16, 128, 3, 1, 1));
  add_conv_gemm_cases(cs, "odd 5->7 3x3 s2 p0 13x11", conv_geom(3, 5, 13, 11, 7, 3, 2, 0));
  add_conv_graph_cases(cs, "D6 256->512 3x3 s2 p1 8x8", conv_geom(4, 256, 8, 8, 512, 3, 2, 1));
  add_conv_graph_cases(cs, "g3 as conv 128->256 4x4 s2 p1 16x16", conv_geom(4, 128, 16, 16, 256, 4, 2, 1));
  add_conv_graph_cases(cs, "f2 64->128 3x3 p1 16x16", conv_geom(4, 64, 16, 16, 128, 3, 1, 1));
  add_conv_graph_cases(cs, "odd 5->7 3x3 s2 p0 13x11", conv_geom(3, 5, 13, 11, 7, 3, 2, 0));
  // 53 MiB of workspace per image: 3 images in chunks of 2 and 1
  const ConvGeom chunked = conv_geom(3, 64, 144, 144, 64, 3, 1, 1);
  REQUIRE(dtn::cuda::detail::conv_gemm_chunk_images(chunked, dtn::cuda::detail::kConvGemmWorkspace) == 2);
  add_conv_gemm_cases(cs, "chunked 64->64 3x3 p1 144x144", chunked);
  // D.6 at batch 5 under a workspace limit of two images' zT and cols (and the room the engine
  // keeps for zT's alignment): chunks of 2, 2 and 1
  const ConvGeom d6 = conv_geom(5, 256, 8, 8, 512, 3, 2, 1);
  const std::size_t two_images =
      (dtn::cuda::detail::conv_gemm_ws_floats(d6, 2) + dtn::cuda::detail::kConvGemmAlign - 1) * sizeof(float);
  REQUIRE(dtn::cuda::detail::conv_gemm_chunk_images(d6, two_images) == 2);
  add_conv_gemm_cases(cs, "D6 256->512 3x3 s2 p1 8x8, workspace limit of two images", d6, two_images);
  // both backward passes in one op, the weight gradient on the second lane: D.3 and g.3 (as a
  // transposed convolution) at batch 4 on each engine, and a dense one (cuBLAS on both lanes)
  for (const char* engine : {"gemm", "cudnn", "graph"}) {
    add_conv_pair_cases(cs, "D3 128->256 3x3 s2 p1 16x16", conv_geom(4, 128, 16, 16, 256, 3, 2, 1), engine);
    add_conv_pair_cases(cs, "g3 as conv 128->256 4x4 s2 p1 16x16", conv_geom(4, 128, 16, 16, 256, 4, 2, 1), engine);
  }
  add_conv_pair_cases(cs, "g1 as conv 512->128 4x4 s1 p0 4x4 (dense)", conv_geom(4, 512, 4, 4, 128, 4, 1, 0), "gemm");

  // ---- GEMM: all transposes, padded leading dimensions, alpha and beta
  add_gemm_case(cs, false, false, 37, 29, 53, 1.0f, 0.0f, 0);
  add_gemm_case(cs, false, true, 37, 29, 53, 0.5f, 1.0f, 3);
  add_gemm_case(cs, true, false, 37, 29, 53, -1.25f, 0.5f, 1);
  add_gemm_case(cs, true, true, 64, 10, 128, 1.0f, 1.0f, 0);
  add_gemm_case(cs, false, true, 64, 10, 128, 1.0f, 0.0f, 0);  // Linear forward: x W^T

  // ---- batch norm: conv activations and a per-feature (hw = 1) case
  // (The GPU splits each channel's n*hw elements into slices of ~4096, at most 64: one slice,
  // three uneven ones, and the 64-slice cap.)
  add_bn_cases(cs, "8x16x5x5", 8, 16, 25);
  add_bn_cases(cs, "hw=1", 32, 10, 1);
  add_bn_cases(cs, "7x3x1501 (3 uneven slices)", 7, 3, 1501);
  add_bn_cases(cs, "2x2x140000 (64 slices)", 2, 2, 140000);
  add_bn_segment_cases(cs);

  // ---- max pooling: the f/D geometries, overlapping windows, NaN/Inf propagation
  add_pool_cases(cs, 3, 4, 8, 8, 2, 2, false);
  add_pool_cases(cs, 3, 4, 4, 4, 4, 4, false);
  add_pool_cases(cs, 2, 3, 9, 11, 3, 2, false);
  add_pool_cases(cs, 2, 3, 8, 8, 2, 2, true);

  // ---- bilinear resize: MNIST 28 -> 32, downsampling, non-square, 1-pixel edge
  add_resize_cases(cs, 3, 2, 28, 28, 32, 32);
  add_resize_cases(cs, 2, 3, 32, 32, 28, 28);
  add_resize_cases(cs, 2, 2, 7, 9, 13, 4);
  add_resize_cases(cs, 1, 2, 1, 3, 4, 7);

  // ---- losses (scalar in device memory) and argmax
  const std::size_t ml = 5 * 3 * 32 * 32;
  cs.push_back(make_case("mse", kRound, {in("a", ml), in("b", ml), out("loss", 1), out("grad", ml)},
                         [=](auto B, auto& b) { decltype(B)::mse(ml, b.f(0), b.f(1), b.f(2), b.f(3), 0.5f); }));
  cs.push_back(make_case("mse no grad", kRound, {in("a", ml), in("b", ml), out("loss", 1)},
                         [=](auto B, auto& b) { decltype(B)::mse(ml, b.f(0), b.f(1), b.f(2), static_cast<float*>(nullptr), 1.0f); }));
  const std::size_t tv = 3 * 2 * 7 * 9;
  cs.push_back(make_case("total_variation", kRound, {in("z", tv), out("loss", 1), out("grad", tv)},
                         [](auto B, auto& b) { decltype(B)::total_variation(3, 2, 7, 9, b.f(0), 1e-4f, b.f(1), b.f(2), 2.0f); }));
  cs.push_back(make_case("total_variation 1x1 images no grad", kRound, {in("z", 4), out("loss", 1)},
                         [](auto B, auto& b) {
                           decltype(B)::total_variation(4, 1, 1, 1, b.f(0), 1e-3f, b.f(1), static_cast<float*>(nullptr), 1.0f);
                         }));
  cs.push_back(make_case("softmax_cross_entropy", kRound,
                         {in("logits", 37 * 10, -5, 5), in_ints("targets", 37, 10), out("loss", 1), out("dlogits", 37 * 10)},
                         [](auto B, auto& b) {
                           decltype(B)::softmax_cross_entropy(37, 10, b.f(0), b.i(1), b.f(2), b.f(3), 0.75f);
                         }));
  cs.push_back(make_case("softmax_cross_entropy ternary no grad", kRound,
                         {in("logits", 64 * 3, -5, 5), in_ints("targets", 64, 3), out("loss", 1)},
                         [](auto B, auto& b) {
                           decltype(B)::softmax_cross_entropy(64, 3, b.f(0), b.i(1), b.f(2), static_cast<float*>(nullptr), 1.0f);
                         }));
  cs.push_back(make_case("argmax_rows", kExact, {in("logits", 1000 * 10), out_ints("out", 1000)},
                         [](auto B, auto& b) { decltype(B)::argmax_rows(1000, 10, b.f(0), b.i(1)); }));

  // ---- Adam (a flat buffer, weight decay on)
  const std::size_t pa = 70001;
  cs.push_back(make_case("adam_update", kRound,
                         {acc("param", pa), in("grad", pa), acc("m", pa), acc_positive("v", pa, 0, 0.01)},
                         [=](auto B, auto& b) {
                           const dtn::AdamStep<float> s{2e-3f, 0.5f, 0.999f, 1e-8f, 1e-4f, 1.0f - 0.125f, 1.0f - 0.996f, 0.5f, 0.001f};
                           decltype(B)::adam_update(pa, b.f(0), b.f(1), b.f(2), b.f(3), s);
                         }));
  cs.push_back(make_case("adam_update first step", kRound,
                         {acc("param", pa), in("grad", pa), acc("m", pa), acc_positive("v", pa, 0, 0.01)},
                         [=](auto B, auto& b) {
                           const dtn::AdamStep<float> s{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f - 0.9f, 1.0f - 0.999f, 0.1f, 0.001f};
                           decltype(B)::adam_update(pa, b.f(0), b.f(1), b.f(2), b.f(3), s);
                         }));
  return cs;
}

}  // namespace

TEST_CASE("parity: every Backend<Cuda> op matches Backend<Cpu>") {
  const std::vector<Case> cs = cases();
  for (const Case& c : cs) {
    CAPTURE(c.name);
    const double e = run_case(c);
    MESSAGE(c.name << ": relative L2 error " << e << " (bound " << c.bound << ")");
  }
}

// The GPU's segmented batch norm (one launch per stage for up to kMaxSegments segments, the
// joint-batches path) against its plain ops launched on each segment in turn: the same per-thread
// arithmetic on the same elements, so bit for bit equal, running statistics and parameter
// gradients included (they move once per segment, in order).
TEST_CASE("batch norm on segments on the GPU is bitwise the plain ops segment by segment") {
  const int c = 5;
  const long hw = kBnSegmentHw;
  int n = 0;
  for (int k : kBnSegments) n += k;
  const int count = static_cast<int>(kBnSegments.size());
  const std::size_t sz = static_cast<std::size_t>(n) * c * hw, cz = static_cast<std::size_t>(c);
  auto up = [](const std::vector<float>& v) {
    return dtn::to<dtn::Cuda>(dtn::from_vector(dtn::Shape{static_cast<std::int64_t>(v.size())}, v));
  };
  const auto x = up(random_vector(sz, 61, -2, 3)), dy = up(random_vector(sz, 62));
  const auto gamma = up(random_vector(cz, 63, 0.5, 1.5)), beta = up(random_vector(cz, 64));
  const dtn::ops::Relu act{};
  auto run = [&](bool segmented) {
    auto rm = up(std::vector<float>(cz, 0.1f)), rv = up(std::vector<float>(cz, 0.9f));
    auto y = up(std::vector<float>(sz, 0.0f)), mean = up(std::vector<float>(cz * count, 0.0f)),
         inv = up(std::vector<float>(cz * count, 0.0f)), dx = up(std::vector<float>(sz, 0.0f)),
         dg = up(random_vector(cz, 65)), db = up(random_vector(cz, 66));
    if (segmented) {
      dtn::cuda::batchnorm_forward_train_segments(count, kBnSegments.data(), c, hw, 1e-5, 0.1, x.data(), gamma.data(),
                                                  beta.data(), rm.data(), rv.data(), y.data(), mean.data(), inv.data(), act);
      dtn::cuda::batchnorm_backward_segments(count, kBnSegments.data(), c, hw, x.data(), dy.data(), gamma.data(),
                                             mean.data(), inv.data(), dx.data(), dg.data(), db.data(), y.data(), act);
    } else {
      std::size_t off = 0;
      for (int z = 0; z < count; ++z) {
        dtn::cuda::batchnorm_forward_train(kBnSegments[z], c, hw, 1e-5, 0.1, x.data() + off, gamma.data(), beta.data(),
                                           rm.data(), rv.data(), y.data() + off, mean.data() + z * cz,
                                           inv.data() + z * cz, act);
        off += static_cast<std::size_t>(kBnSegments[z]) * cz * hw;
      }
      off = 0;
      for (int z = 0; z < count; ++z) {
        dtn::cuda::batchnorm_backward(kBnSegments[z], c, hw, x.data() + off, dy.data() + off, gamma.data(),
                                      mean.data() + z * cz, inv.data() + z * cz, dx.data() + off, dg.data(), db.data(),
                                      y.data() + off, act);
        off += static_cast<std::size_t>(kBnSegments[z]) * cz * hw;
      }
    }
    std::vector<std::vector<float>> out;
    for (const auto* t : {&y, &mean, &inv, &rm, &rv, &dx, &dg, &db}) out.push_back(dtn::to_vector(*t));
    return out;
  };
  const auto a = run(true), b = run(false);
  const char* names[] = {"y", "save_mean", "save_invstd", "running_mean", "running_var", "dx", "dgamma", "dbeta"};
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(names[i]);
    CHECK(same_bits(a[i], b[i]));
  }
}
