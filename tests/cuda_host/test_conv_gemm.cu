// The GPU's GEMM backward-data (conv_gemm.cuh) run on the host: the same stage sequence
// (dgrad_gemm_run) and the same DTN_HD index code (DgradGeom::transposed_index, ::gather) the
// kernels run, with a host GEMM in place of cuBLAS, against Backend<Cpu>::conv2d_backward_data.
// Needs no GPU. Chunks smaller than the batch are forced here, so the chunk offsets are checked
// too (on the GPU a chunk is as many images as fit 128 MiB of workspace).
//
// Bound: relative L2 error 1e-5. The host GEMM sums in double and rounds once; the CPU backend
// sums K <= 2304 float products in its own order, so with zero-mean data its rounding error is
// about sqrt(K) * 2^-24 ~ 3e-6 relative; the gather then adds at most kh*kw floats in the same
// order on both sides.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <dtn/cuda.cuh>

namespace {

using dtn::ConvGeom;
using dtn::cuda::detail::DgradGeom;
using Cpu = dtn::Backend<dtn::Cpu>;

struct HostDgrad {
  void transpose(const DgradGeom& d, std::uint32_t total, const float* dy, float* dyT) const {
    for (std::uint32_t e = 0; e < total; ++e) dyT[d.transposed_index(e)] = dy[e];
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
  void gather(const DgradGeom& d, std::uint32_t total, const float* cols, float* dx) const {
    for (std::uint32_t e = 0; e < total; ++e) dx[e] = d.gather(cols, e);
  }
};

ConvGeom geom(int n, int c_in, int h, int w, int c_out, int k, int stride, int pad) {
  ConvGeom g;
  g.n = n;
  g.c_in = c_in;
  g.h_in = h;
  g.w_in = w;
  g.c_out = c_out;
  g.kh = g.kw = k;
  g.stride = stride;
  g.pad = pad;
  g.h_out = ConvGeom::out_size(h, k, stride, pad);
  g.w_out = ConvGeom::out_size(w, k, stride, pad);
  return g;
}

std::vector<float> random_vector(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace

TEST_CASE("GEMM backward-data of the GPU backend, run on the host, matches the CPU backend") {
  struct Case {
    const char* name;
    ConvGeom g;
  };
  const Case cases[] = {
      {"D.6-like 3x3 s2 p1 8x8 -> 4x4", geom(5, 6, 8, 8, 7, 3, 2, 1)},
      {"g.3-like (as conv) 4x4 s2 p1 8x8 -> 4x4", geom(5, 4, 8, 8, 6, 4, 2, 1)},
      {"g.9-like (as conv) 4x4 s2 p1 32x32 -> 16x16, one channel", geom(3, 1, 32, 32, 5, 4, 2, 1)},
      {"3x3 s1 p1 9x7", geom(4, 3, 9, 7, 5, 3, 1, 1)},
      {"odd 3x3 s2 p0 13x11 (uncovered last row and column)", geom(3, 5, 13, 11, 7, 3, 2, 0)},
      {"5x5 s3 p2 10x10", geom(2, 2, 10, 10, 3, 5, 3, 2)},
  };
  for (const Case& c : cases) {
    CAPTURE(std::string(c.name));
    const ConvGeom& g = c.g;
    REQUIRE(dtn::cuda::detail::gemm_dgrad_supported(g));
    const std::size_t P = static_cast<std::size_t>(g.h_out) * g.w_out, K = static_cast<std::size_t>(g.c_in) * g.kh * g.kw;
    const auto dy = random_vector(static_cast<std::size_t>(g.n) * g.c_out * P, 1);
    const auto w = random_vector(static_cast<std::size_t>(g.c_out) * K, 2);
    const std::size_t dx_size = static_cast<std::size_t>(g.n) * g.c_in * g.h_in * g.w_in;
    std::vector<float> dx_ref(dx_size, 1.0f);
    Cpu::conv2d_backward_data(g, dy.data(), w.data(), dx_ref.data());
    for (int chunk : {g.n, 2, 1}) {
      CAPTURE(chunk);
      std::vector<float> ws((static_cast<std::size_t>(g.c_out) + K) * P * static_cast<std::size_t>(chunk), NAN);
      std::vector<float> dx(dx_size, NAN);  // an element the gather misses stays NaN and fails
      dtn::cuda::detail::dgrad_gemm_run(HostDgrad{}, g, dy.data(), w.data(), dx.data(), ws.data(), chunk);
      CHECK(rel_l2(dx, dx_ref) <= 1e-5);
    }
  }
}

TEST_CASE("GEMM backward-data: chunks fit the workspace cap, and 32-bit index limits are respected") {
  // The example's D.6 at batch 128: one chunk (2304 + 512) * 16 floats per image = 176 KiB.
  const ConvGeom d6 = geom(128, 256, 8, 8, 512, 3, 2, 1);
  CHECK(dtn::cuda::detail::dgrad_chunk_images(d6) == 128);
  CHECK(dtn::cuda::detail::gemm_dgrad_supported(d6));
  // g.6 as a convolution at batch 4096: (2048 + 256) * 64 floats = 576 KiB per image, so 227
  // images per 128 MiB chunk.
  const ConvGeom g6 = geom(4096, 128, 16, 16, 256, 4, 2, 1);
  CHECK(dtn::cuda::detail::dgrad_chunk_images(g6) == 227);
  // One image whose unfolded columns alone exceed 2^31 elements: not taken (cuDNN runs it).
  const ConvGeom huge = geom(1, 512, 1024, 1024, 4, 3, 1, 1);
  CHECK_FALSE(dtn::cuda::detail::gemm_dgrad_supported(huge));
}
