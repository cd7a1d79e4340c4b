// The host-side part of the cuDNN graph-API convolution plans (conv_graph.cuh) that needs no GPU:
// which operation each pass builds, which tensor fills which role, and with what beta, and the
// alignment check that decides whether a chosen plan may run on given pointers. The plans
// themselves run only on a GPU (tests/cuda/test_runtime.cu, test_parity_ops.cu, test_trainer.cu).
#include <doctest/doctest.h>

#include <cstdint>
#include <memory>

#include <dtn/cuda.cuh>

using dtn::cuda::detail::ConvPass;
using dtn::cuda::detail::graph_conv_op;

TEST_CASE("cuDNN graph API: each pass builds its own operation, with x, w, y in their roles, and accumulates dw") {
  const auto f = graph_conv_op(ConvPass::fwd);
  CHECK(f.type == CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  CHECK(f.alpha == CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA);
  CHECK(f.beta == CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA);
  CHECK(f.conv == CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC);
  CHECK(f.x == CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X);
  CHECK(f.w == CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W);
  CHECK(f.y == CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y);
  CHECK(f.beta_value == 0.0f);  // y is overwritten

  const auto d = graph_conv_op(ConvPass::bwd_data);
  CHECK(d.type == CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR);
  CHECK(d.alpha == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA);
  CHECK(d.beta == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA);
  CHECK(d.conv == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC);
  CHECK(d.x == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX);  // the x-shaped tensor is the output dx
  CHECK(d.w == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W);
  CHECK(d.y == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY);
  CHECK(d.beta_value == 0.0f);  // dx is overwritten (Backend::conv2d_backward_data)

  const auto w = graph_conv_op(ConvPass::bwd_filter);
  CHECK(w.type == CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
  CHECK(w.alpha == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA);
  CHECK(w.beta == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA);
  CHECK(w.conv == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC);
  CHECK(w.x == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X);
  CHECK(w.w == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW);  // the w-shaped tensor is the output dw
  CHECK(w.y == CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY);
  CHECK(w.beta_value == 1.0f);  // dw += (Backend::conv2d_backward_filter accumulates)
}

TEST_CASE("cuDNN graph API: a chosen plan runs only on pointers with the alignment its tensors declare") {
  static_assert(dtn::cuda::detail::kGraphAlignment == 16, "the tensors are declared 16-byte aligned");
  alignas(64) static float buf[64] = {};
  CHECK(dtn::cuda::detail::graph_aligned(buf));
  CHECK(dtn::cuda::detail::graph_aligned(buf + 4));  // 16 bytes on
  CHECK_FALSE(dtn::cuda::detail::graph_aligned(buf + 1));
  CHECK_FALSE(dtn::cuda::detail::graph_aligned(buf + 2));
  CHECK_FALSE(dtn::cuda::detail::graph_aligned(buf + 3));
  using dtn::cuda::detail::ConvEngine;
  auto plan = std::make_unique<dtn::cuda::detail::GraphConv>();
  CHECK(dtn::cuda::detail::graph_runs(ConvEngine::graph, plan, buf, buf + 4, buf + 8));
  CHECK_FALSE(dtn::cuda::detail::graph_runs(ConvEngine::graph, plan, buf, buf + 5, buf + 8));  // one misaligned
  CHECK_FALSE(dtn::cuda::detail::graph_runs(ConvEngine::gemm, plan, buf, buf + 4, buf + 8));   // not chosen
  const std::unique_ptr<dtn::cuda::detail::GraphConv> none;
  CHECK_FALSE(dtn::cuda::detail::graph_runs(ConvEngine::graph, none, buf, buf + 4, buf + 8));  // no plan kept
}
