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
using dtn::cuda::detail::GraphConvOp;

namespace {

// Every field of pass p's operation against the names cuDNN gives that pass.
void check_op(ConvPass p, const GraphConvOp& want) {
  const GraphConvOp got = graph_conv_op(p);
  CHECK(got.type == want.type);
  CHECK(got.alpha == want.alpha);
  CHECK(got.beta == want.beta);
  CHECK(got.conv == want.conv);
  CHECK(got.x == want.x);
  CHECK(got.w == want.w);
  CHECK(got.y == want.y);
  CHECK(got.beta_value == want.beta_value);
}

}  // namespace

TEST_CASE("cuDNN graph API: each pass builds its own operation, with x, w, y in their roles, and accumulates dw") {
  // Forward: y is overwritten (beta 0).
  check_op(ConvPass::fwd,
           {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
            CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
            CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
            CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, 0.0f});
  // Backward data: the x-shaped tensor is the output dx, overwritten (Backend::conv2d_backward_data).
  check_op(ConvPass::bwd_data,
           {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, 0.0f});
  // Backward filter: the w-shaped tensor is the output dw, accumulated (beta 1:
  // Backend::conv2d_backward_filter adds to dw).
  check_op(ConvPass::bwd_filter,
           {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, 1.0f});
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
  dtn::cuda::detail::EngineChoice c;
  c.engine = ConvEngine::graph;
  c.graph = std::make_unique<dtn::cuda::detail::GraphConv>();
  CHECK(dtn::cuda::detail::graph_runs(c, buf, buf + 4, buf + 8));
  CHECK_FALSE(dtn::cuda::detail::graph_runs(c, buf, buf + 5, buf + 8));  // one misaligned
  c.engine = ConvEngine::gemm;
  CHECK_FALSE(dtn::cuda::detail::graph_runs(c, buf, buf + 4, buf + 8));  // not chosen
  c.engine = ConvEngine::graph;
  c.graph.reset();
  CHECK_FALSE(dtn::cuda::detail::graph_runs(c, buf, buf + 4, buf + 8));  // no plan kept
}
