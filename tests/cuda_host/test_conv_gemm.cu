// The GPU's GEMM convolution engine (conv_gemm.cuh) run on the host: the same pass sequences
// (conv_gemm_forward, _backward_data, _backward_filter) and the same DTN_HD index code
// (ConvGemmGeom::transposed_index, ::im2col, ::gather) the kernels run, with a host GEMM in place
// of cuBLAS (column-major, from the BLAS definition, reached through the same row-to-column-major
// argument swap the backend hands cuBLAS), against Backend<Cpu>'s convolution. Needs no GPU. Chunks smaller than the batch are
// forced here, so the chunk offsets are checked too (on the GPU a chunk is as many images as fit
// 128 MiB of workspace, or a lower dtn::cuda::set_conv_workspace_limit).
//
// Bound: relative L2 error 1e-5. The host GEMM sums in double and rounds once; the CPU backend
// sums its products in float in its own order (at most 64 terms for the forward pass, 7 for
// backward-data, 768 for backward-filter here), so with zero-mean data its rounding error is about
// sqrt(terms) * 2^-24 <= 1.7e-6 relative; the gather then adds at most kh*kw floats on both sides.
#include <doctest/doctest.h>

#include <algorithm>
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
  // The backend's row-major gemm, through the same argument swap it hands cuBLAS (gemm.cuh), into
  // a column-major SGEMM written from the BLAS definition.
  void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
            float beta, float* C, int ldc) const {
    dtn::cuda::detail::gemm_as_column_major(column_major_sgemm, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  // cublasSgemm's contract without the handle: C (m x n, column-major, element (i, j) at
  // C[i + j*ldc]) = alpha op(A) op(B) + beta C, with op(A) m x k and op(B) k x n; sums in double.
  // cuBLAS rejects (CUBLAS_STATUS_INVALID_VALUE) lda < max(1, op_a == N ? m : k),
  // ldb < max(1, op_b == N ? k : n) and ldc < max(1, m): so does this, failing the test.
  static void column_major_sgemm(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, float alpha,
                                 const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    const bool ta = op_a == CUBLAS_OP_T, tb = op_b == CUBLAS_OP_T;
    REQUIRE((op_a == CUBLAS_OP_N || ta));
    REQUIRE((op_b == CUBLAS_OP_N || tb));
    REQUIRE((m >= 0 && n >= 0 && k >= 0));
    REQUIRE(lda >= std::max(1, ta ? k : m));
    REQUIRE(ldb >= std::max(1, tb ? n : k));
    REQUIRE(ldc >= std::max(1, m));
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        double acc = 0;
        for (int p = 0; p < k; ++p) {
          const double a = ta ? A[p + static_cast<std::size_t>(i) * lda] : A[i + static_cast<std::size_t>(p) * lda];
          const double b = tb ? B[j + static_cast<std::size_t>(p) * ldb] : B[p + static_cast<std::size_t>(j) * ldb];
          acc += a * b;
        }
        float& c = C[i + static_cast<std::size_t>(j) * ldc];
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
    REQUIRE(dtn::cuda::detail::conv_gemm_supported(g, dtn::cuda::detail::kConvGemmWorkspace));
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
      const std::size_t ws_floats = dtn::cuda::detail::conv_gemm_ws_floats(g, static_cast<std::size_t>(chunk));
      std::vector<float> ws(ws_floats, NAN);
      // Each chunk's zT and cols lie within the workspace, cols 256-byte aligned relative to it.
      int chunks = 0;
      dtn::cuda::detail::for_conv_gemm_chunks(g, ws.data(), chunk, [&](const dtn::cuda::detail::ConvGemmChunk& c) {
        ++chunks;
        const std::size_t cols_at = static_cast<std::size_t>(c.cols - ws.data());
        CHECK(cols_at % dtn::cuda::detail::kConvGemmAlign == 0);
        CHECK(cols_at >= c.y_n);
        CHECK(cols_at + c.cols_n <= ws_floats);
      });
      CHECK(chunks == (g.n + chunk - 1) / chunk);
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
  namespace d = dtn::cuda::detail;
  const std::size_t cap = d::kConvGemmWorkspace;  // 128 MiB, the cap without a limit
  // The example's D.6 at batch 128: (2304 + 512) * 16 floats = 176 KiB per image, one chunk.
  const ConvGeom d6 = parity::conv_geom(128, 256, 8, 8, 512, 3, 2, 1);
  CHECK(d::conv_gemm_chunk_images(d6, cap) == 128);
  CHECK(d::conv_gemm_supported(d6, cap));
  // g.6 as a convolution at batch 4096: (2048 + 256) * 64 floats = 576 KiB per image, so 227
  // images per 128 MiB chunk.
  const ConvGeom g6 = parity::conv_geom(4096, 128, 16, 16, 256, 4, 2, 1);
  CHECK(d::conv_gemm_chunk_images(g6, cap) == 227);
  // zT's rounding up to kConvGemmAlign counts against the cap: 1x1 images of one channel to two
  // take 3 floats each, and the chunk that fills the cap to the float would overflow it.
  const ConvGeom tight = parity::conv_geom(20000000, 1, 1, 1, 2, 1, 1, 0);
  const int tight_nb = d::conv_gemm_chunk_images(tight, cap);
  CHECK(tight_nb == 11184789);
  for (const ConvGeom& g : {d6, g6, tight})
    CHECK(d::conv_gemm_ws_floats(g, static_cast<std::size_t>(d::conv_gemm_chunk_images(g, cap))) * sizeof(float) <= cap);
  // One image whose unfolded columns alone exceed 2^31 elements: not taken (cuDNN runs it).
  const ConvGeom huge = parity::conv_geom(1, 512, 1024, 1024, 4, 3, 1, 1);
  CHECK_FALSE(d::conv_gemm_supported(huge, cap));
  // One image needing 1.1 GiB of workspace (K = 4608, P = 65536, indices within 32 bits): not
  // taken either, so the engine never asks for more than its 128 MiB.
  const ConvGeom wide = parity::conv_geom(1, 512, 256, 256, 4, 3, 1, 1);
  CHECK_FALSE(d::conv_gemm_supported(wide, cap));
  // An invalid geometry is never taken either.
  ConvGeom bad = d6;
  bad.stride = 0;
  CHECK_FALSE(d::conv_gemm_supported(bad, cap));
}

TEST_CASE("GEMM convolution engine under a workspace limit (set_conv_workspace_limit): smaller chunks, never over it") {
  namespace d = dtn::cuda::detail;
  // The limit lowers the cap and never raises it.
  CHECK(d::conv_gemm_workspace_cap(dtn::cuda::Context::no_workspace_limit) == d::kConvGemmWorkspace);
  CHECK(d::conv_gemm_workspace_cap(std::size_t(1) << 40) == d::kConvGemmWorkspace);
  CHECK(d::conv_gemm_workspace_cap(std::size_t(48) << 20) == std::size_t(48) << 20);
  // D.3 at batch 384 (joint batches: D on three batches of 128): (1152 + 256) * 64 floats =
  // 352 KiB per image, 372 images in 128 MiB (one chunk of 384 would need 132 MiB), 186 in 64
  // MiB, 93 in 32 MiB.
  const ConvGeom d3 = parity::conv_geom(384, 128, 16, 16, 256, 3, 2, 1);
  CHECK(d::conv_gemm_chunk_images(d3, d::kConvGemmWorkspace) == 372);
  CHECK(d::conv_gemm_chunk_images(d3, std::size_t(64) << 20) == 186);
  CHECK(d::conv_gemm_chunk_images(d3, std::size_t(32) << 20) == 93);
  // The GPU parity table's case (tests/cuda/test_parity_ops.cu): D.6 at batch 5 under a limit of
  // two images' zT and cols plus the room kept for zT's alignment goes in chunks of two.
  const ConvGeom d6 = parity::conv_geom(5, 256, 8, 8, 512, 3, 2, 1);
  const std::size_t two_images = (d::conv_gemm_ws_floats(d6, 2) + d::kConvGemmAlign - 1) * sizeof(float);
  CHECK(d::conv_gemm_chunk_images(d6, d::conv_gemm_workspace_cap(two_images)) == 2);
  CHECK(d::conv_gemm_chunk_images(d6, d::conv_gemm_workspace_cap(two_images - sizeof(float))) == 1);
  // Under every limit: the chunk's workspace within the cap, and the shape taken as long as one
  // image fits (352 KiB: zT's 16384 floats need no rounding), else left to cuDNN.
  const std::size_t one_image = d::conv_gemm_ws_floats(d3, 1) * sizeof(float);
  CHECK(one_image == 352 * 1024);
  for (std::size_t limit : {std::size_t(64) << 20, std::size_t(1) << 20, one_image, one_image - 1, std::size_t(255),
                            std::size_t(1)}) {
    CAPTURE(limit);
    const std::size_t cap = d::conv_gemm_workspace_cap(limit);
    const int nb = d::conv_gemm_chunk_images(d3, cap);
    CHECK(nb >= 1);
    CHECK(nb <= d3.n);
    CHECK(d::conv_gemm_supported(d3, cap) == (limit >= one_image));
    if (d::conv_gemm_supported(d3, cap)) {
      CHECK(d::conv_gemm_ws_floats(d3, static_cast<std::size_t>(nb)) * sizeof(float) <= cap);
      // The largest such chunk: one image more would not fit (or the batch is done).
      if (nb < d3.n) CHECK(d::conv_gemm_ws_floats(d3, static_cast<std::size_t>(nb) + 1) * sizeof(float) > cap);
    }
  }
}

TEST_CASE("dense convolutions (one output pixel) through the cuBLAS argument swap match the CPU backend") {
  // The GPU runs D's last layer and g's first (as a transposed convolution: backward-data) as one
  // cuBLAS GEMM per pass (conv.cuh: dense_conv_* with cuda::gemm). Here the same calls go through
  // gemm_as_column_major into the column-major reference, which also enforces cuBLAS's
  // leading-dimension rules.
  const HostConvGemm host;
  const auto gemm = [&](auto... a) { host.gemm(a...); };
  for (const ConvGeom& g : {parity::conv_geom(5, 7, 4, 4, 3, 4, 1, 0),   // D.9-like: 4x4 valid -> 1x1
                            parity::conv_geom(3, 6, 4, 4, 9, 4, 1, 0),   // g.0 transposed: c_out = its c_in
                            parity::conv_geom(1, 2, 3, 3, 1, 3, 1, 0)}) {  // one image, one output channel
    CAPTURE(g.n);
    CAPTURE(g.c_in);
    CAPTURE(g.c_out);
    REQUIRE(dtn::conv_is_dense(g));
    const std::size_t x_size = static_cast<std::size_t>(g.n) * g.c_in * g.h_in * g.w_in;
    const std::size_t y_size = static_cast<std::size_t>(g.n) * g.c_out;
    const std::size_t w_size = static_cast<std::size_t>(g.c_out) * g.c_in * g.kh * g.kw;
    const auto x = parity::random_vector(x_size, 41), dy = parity::random_vector(y_size, 42);
    const auto w = parity::random_vector(w_size, 43), dw0 = parity::random_vector(w_size, 44);
    std::vector<float> y_ref(y_size, 1.0f), dx_ref(x_size, 1.0f), dw_ref = dw0;
    Cpu::conv2d_forward(g, x.data(), w.data(), static_cast<const float*>(nullptr), y_ref.data());
    Cpu::conv2d_backward_data(g, dy.data(), w.data(), dx_ref.data());
    Cpu::conv2d_backward_filter(g, x.data(), dy.data(), dw_ref.data(), static_cast<float*>(nullptr));
    std::vector<float> y(y_size, NAN), dx(x_size, NAN), dw = dw0;
    dtn::dense_conv_forward(gemm, g, x.data(), w.data(), y.data());
    CHECK(parity::rel_l2(y, y_ref) <= 1e-5);
    dtn::dense_conv_backward_data(gemm, g, dy.data(), w.data(), dx.data());
    CHECK(parity::rel_l2(dx, dx_ref) <= 1e-5);
    dtn::dense_conv_backward_filter(gemm, g, x.data(), dy.data(), dw.data());
    CHECK(parity::rel_l2(dw, dw_ref) <= 1e-5);
  }
}
