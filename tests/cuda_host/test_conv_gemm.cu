// The GPU's GEMM convolution engine (conv_gemm.cuh) run on the host: the same pass sequences
// (conv_gemm_forward, _backward_data, _backward_filter) and the same DTN_HD index code
// (ConvGemmGeom::transposed_index, ::im2col, ::gather) the kernels run, with a host GEMM in place
// of cuBLAS, against Backend<Cpu>'s convolution. Needs no GPU. Chunks smaller than the batch are
// forced here, so the chunk offsets are checked too (on the GPU a chunk is as many images as fit
// 128 MiB of workspace).
//
// Bound: relative L2 error 1e-5. The host GEMM sums in double and rounds once; the CPU backend
// sums its products in float in its own order (at most 64 terms for the forward pass, 7 for
// backward-data, 768 for backward-filter here), so with zero-mean data its rounding error is about
// sqrt(terms) * 2^-24 <= 1.7e-6 relative; the gather then adds at most kh*kw floats on both sides.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <dtn/cuda.cuh>

#include "../cuda/parity.cuh"

namespace {

using dtn::ConvGeom;
using dtn::cuda::detail::ConvGemmGeom;
using Cpu = dtn::Backend<dtn::Cpu>;

struct HostConvGemm {
  void transpose(const ConvGemmGeom& d, std::uint32_t total, const float* z, float* zT) const {
    for (std::uint32_t e = 0; e < total; ++e) zT[d.transposed_index(e)] = z[e];
  }
  void untranspose(const ConvGemmGeom& d, std::uint32_t total, const float* zT, float* z) const {
    for (std::uint32_t e = 0; e < total; ++e) z[e] = zT[d.transposed_index(e)];
  }
  void im2col(const ConvGemmGeom& d, std::uint32_t total, const float* x, float* cols) const {
    for (std::uint32_t e = 0; e < total; ++e) cols[e] = d.im2col(x, e);
  }
  void gather(const ConvGemmGeom& d, std::uint32_t total, const float* cols, float* dx) const {
    for (std::uint32_t e = 0; e < total; ++e) dx[e] = d.gather(cols, e);
  }
  // Row-major C = alpha op(A) op(B) + beta C, sums in double.
  void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
            float beta, float* C, int ldc) const {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double acc = 0;
        for (int p = 0; p < k; ++p) {
          const double a = ta ? A[static_cast<std::size_t>(p) * lda + i] : A[static_cast<std::size_t>(i) * lda + p];
          const double b = tb ? B[static_cast<std::size_t>(j) * ldb + p] : B[static_cast<std::size_t>(p) * ldb + j];
          acc += a * b;
        }
        float& c = C[static_cast<std::size_t>(i) * ldc + j];
        c = static_cast<float>(alpha * acc + (beta == 0.0f ? 0.0 : static_cast<double>(beta) * c));
      }
  }
};

}  // namespace

TEST_CASE("GEMM convolution engine of the GPU backend, run on the host, matches the CPU backend in all three passes") {
  struct Case {
    const char* name;
    ConvGeom g;
  };
  const Case cases[] = {
      {"D.6-like 3x3 s2 p1 8x8 -> 4x4", parity::conv_geom(5, 6, 8, 8, 7, 3, 2, 1)},
      {"g.3-like (as conv) 4x4 s2 p1 8x8 -> 4x4", parity::conv_geom(5, 4, 8, 8, 6, 4, 2, 1)},
      {"g.9-like (as conv) 4x4 s2 p1 32x32 -> 16x16, one channel", parity::conv_geom(3, 1, 32, 32, 5, 4, 2, 1)},
      {"3x3 s1 p1 9x7", parity::conv_geom(4, 3, 9, 7, 5, 3, 1, 1)},
      {"odd 3x3 s2 p0 13x11 (uncovered last row and column)", parity::conv_geom(3, 5, 13, 11, 7, 3, 2, 0)},
      {"5x5 s3 p2 10x10", parity::conv_geom(2, 2, 10, 10, 3, 5, 3, 2)},
  };
  for (const Case& c : cases) {
    CAPTURE(std::string(c.name));
    const ConvGeom& g = c.g;
    REQUIRE(dtn::cuda::detail::conv_gemm_supported(g));
    const std::size_t P = dtn::cuda::detail::conv_gemm_p(g), K = dtn::cuda::detail::conv_gemm_k(g);
    const std::size_t x_size = static_cast<std::size_t>(g.n) * g.c_in * g.h_in * g.w_in;
    const std::size_t y_size = static_cast<std::size_t>(g.n) * g.c_out * P, w_size = static_cast<std::size_t>(g.c_out) * K;
    const auto x = parity::random_vector(x_size, 1), dy = parity::random_vector(y_size, 2);
    const auto w = parity::random_vector(w_size, 3);
    const auto dw0 = parity::random_vector(w_size, 4);  // backward-filter accumulates onto this
    std::vector<float> y_ref(y_size, 1.0f), dx_ref(x_size, 1.0f), dw_ref = dw0;
    Cpu::conv2d_forward(g, x.data(), w.data(), static_cast<const float*>(nullptr), y_ref.data());
    Cpu::conv2d_backward_data(g, dy.data(), w.data(), dx_ref.data());
    Cpu::conv2d_backward_filter(g, x.data(), dy.data(), dw_ref.data(), static_cast<float*>(nullptr));
    for (int chunk : {g.n, 2, 1}) {
      CAPTURE(chunk);
      std::vector<float> ws(dtn::cuda::detail::conv_gemm_image_floats(g) * static_cast<std::size_t>(chunk), NAN);
      // Pure outputs start as NaN: an element a pass misses stays NaN and fails.
      std::vector<float> y(y_size, NAN), dx(x_size, NAN), dw = dw0;
      dtn::cuda::detail::conv_gemm_forward(HostConvGemm{}, g, x.data(), w.data(), y.data(), ws.data(), chunk);
      CHECK(parity::rel_l2(y, y_ref) <= 1e-5);
      dtn::cuda::detail::conv_gemm_backward_data(HostConvGemm{}, g, dy.data(), w.data(), dx.data(), ws.data(), chunk);
      CHECK(parity::rel_l2(dx, dx_ref) <= 1e-5);
      dtn::cuda::detail::conv_gemm_backward_filter(HostConvGemm{}, g, x.data(), dy.data(), dw.data(), ws.data(), chunk);
      CHECK(parity::rel_l2(dw, dw_ref) <= 1e-5);
    }
  }
}

TEST_CASE("GEMM convolution engine: chunks fit the workspace cap, and 32-bit index limits are respected") {
  // The example's D.6 at batch 128: (2304 + 512) * 16 floats = 176 KiB per image, one chunk.
  const ConvGeom d6 = parity::conv_geom(128, 256, 8, 8, 512, 3, 2, 1);
  CHECK(dtn::cuda::detail::conv_gemm_chunk_images(d6) == 128);
  CHECK(dtn::cuda::detail::conv_gemm_supported(d6));
  // g.6 as a convolution at batch 4096: (2048 + 256) * 64 floats = 576 KiB per image, so 227
  // images per 128 MiB chunk.
  const ConvGeom g6 = parity::conv_geom(4096, 128, 16, 16, 256, 4, 2, 1);
  CHECK(dtn::cuda::detail::conv_gemm_chunk_images(g6) == 227);
  // One image whose unfolded columns alone exceed 2^31 elements: not taken (cuDNN runs it).
  const ConvGeom huge = parity::conv_geom(1, 512, 1024, 1024, 4, 3, 1, 1);
  CHECK_FALSE(dtn::cuda::detail::conv_gemm_supported(huge));
  // One image needing 1.1 GiB of workspace (K = 4608, P = 65536, indices within 32 bits): not
  // taken either, so the engine never asks for more than its 128 MiB.
  const ConvGeom wide = parity::conv_geom(1, 512, 256, 256, 4, 3, 1, 1);
  CHECK_FALSE(dtn::cuda::detail::conv_gemm_supported(wide));
  // An invalid geometry is never taken either.
  ConvGeom bad = d6;
  bad.stride = 0;
  CHECK_FALSE(dtn::cuda::detail::conv_gemm_supported(bad));
}
