// The GPU's max pooling, bilinear resize and channel repeat (pool.cuh, resize.cuh,
// elementwise.cuh) run on the host: the same *_on sequences and the same DTN_HD element ops the
// kernels call (index_map.cuh's kernel calls op(i) for each i), with an executor that calls op(i)
// for every i, compared with Backend<Cpu>. Needs no GPU. Every case also runs with launches forced
// down to a few planes each, so the chunk offsets are checked too (on the GPU one launch takes up
// to 2^31 - 1 elements: every shape of the example is one launch).
//
// Bounds: max pooling and channel repeat copy or add the same floats in the same order on both
// sides: bitwise equal (argmax included). Resize: relative L2 1e-6 (the parity tests' kRound):
// the same double formulas rounded once to float, where the host compiler may contract a
// multiply-add into an FMA on one side and not the other (one double rounding, ~1e-16 relative,
// before the float rounding), so an output can differ by an ulp of float (~6e-8 relative).
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <dtn/cuda.cuh>

#include "../cuda/parity.cuh"

namespace {

using Cpu = dtn::Backend<dtn::Cpu>;

// index_map_kernel, one i at a time; counts the launches.
struct HostIndexExec {
  int* launches;
  template <class Op>
  void run(const Op& op, std::uint32_t total) const {
    ++*launches;
    for (std::uint32_t i = 0; i < total; ++i) op(i);
  }
};

// Launch sizes under test: the GPU's limit (one launch), and a few planes per launch.
std::vector<std::uint32_t> launch_limits(std::size_t plane) {
  return {dtn::cuda::detail::kIndexLimit, static_cast<std::uint32_t>(plane * 3), static_cast<std::uint32_t>(plane)};
}

// Launches of whole planes of per_plane elements, at most limit elements each.
int launches_for(std::size_t planes, std::size_t per_plane, std::uint32_t limit) {
  const std::size_t per_launch = limit / per_plane;
  return static_cast<int>((planes + per_launch - 1) / per_launch);
}

// Bitwise equal; NaN matches NaN only where nonfinite_ok (inputs with NaN in them).
template <class T>
bool same(const std::vector<T>& a, const std::vector<T>& b, bool nonfinite_ok = false) {
  return parity::same_bits(a, b, nonfinite_ok);
}

}  // namespace

TEST_CASE("GPU max pooling, run on the host, matches the CPU backend bit for bit, NaN and overlapping windows included") {
  struct Case {
    const char* name;
    dtn::PoolGeom g;
  };
  const Case cases[] = {
      {"f-like 2x2 s2 8x8", {5, 3, 8, 8, 2, 2, 4, 4}},
      {"odd 2x2 s2 7x9 (last row and column unused)", {3, 4, 7, 9, 2, 2, 3, 4}},
      {"overlapping 3x3 s2 9x7", {2, 3, 9, 7, 3, 2, 4, 3}},
      {"overlapping 3x3 s1 5x6", {2, 2, 5, 6, 3, 1, 3, 4}},
  };
  for (const Case& c : cases) {
    CAPTURE(std::string(c.name));
    const dtn::PoolGeom& g = c.g;
    const std::size_t planes = static_cast<std::size_t>(g.n) * g.c;
    const std::size_t in_plane = static_cast<std::size_t>(g.h_in) * g.w_in, out_plane = static_cast<std::size_t>(g.h_out) * g.w_out;
    auto x = parity::random_vector(planes * in_plane, 11);
    // Ties and NaN: the first maximum in window order wins, and a NaN wins and stays.
    for (std::size_t i = 0; i < x.size(); i += 7) x[i] = 0.5f;
    x[3] = NAN;
    x[x.size() - 2] = NAN;
    const auto dy = parity::random_vector(planes * out_plane, 12);
    std::vector<float> y_ref(planes * out_plane, -7.0f), dx_ref(planes * in_plane, -7.0f);
    std::vector<int> a_ref(planes * out_plane, -1);
    Cpu::maxpool_forward(g, x.data(), y_ref.data(), a_ref.data());
    Cpu::maxpool_backward(g, dy.data(), a_ref.data(), dx_ref.data());
    for (const std::uint32_t limit : launch_limits(std::max(in_plane, out_plane))) {
      CAPTURE(limit);
      int launches = 0;
      const HostIndexExec ex{&launches};
      // y starts at a value no window holds (not NaN: NaN is an expected output here).
      std::vector<float> y(y_ref.size(), -5.0f), dx(dx_ref.size(), NAN);
      std::vector<int> a(a_ref.size(), -3);
      dtn::cuda::detail::maxpool_forward_on(ex, g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out, g.k, g.stride, x.data(),
                                            y.data(), a.data(), limit);
      CHECK(same(y, y_ref, true));
      CHECK(a == a_ref);
      dtn::cuda::detail::maxpool_backward_on(ex, g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out, g.k, g.stride, dy.data(),
                                             a_ref.data(), dx.data(), limit);
      CHECK(same(dx, dx_ref));
      CHECK(launches == launches_for(planes, out_plane, limit) + launches_for(planes, in_plane, limit));
    }
  }
}

TEST_CASE("GPU bilinear resize, run on the host, matches the CPU backend (up, down, non-square)") {
  struct Case {
    const char* name;
    dtn::ResizeGeom g;
  };
  const Case cases[] = {
      {"MNIST 28x28 -> 32x32", {3, 1, 28, 28, 32, 32}},
      {"2x3 -> 3x5", {2, 3, 2, 3, 3, 5}},
      {"5x3 -> 3x4 (down in h)", {2, 2, 5, 3, 3, 4}},
      {"9x11 -> 4x5 (down)", {2, 2, 9, 11, 4, 5}},
      {"2x3 -> 10x11 (up 5x: outputs clamped to source 0)", {2, 1, 2, 3, 10, 11}},
  };
  for (const Case& c : cases) {
    CAPTURE(std::string(c.name));
    const dtn::ResizeGeom& g = c.g;
    const std::size_t planes = static_cast<std::size_t>(g.n) * g.c;
    const std::size_t in_plane = static_cast<std::size_t>(g.h_in) * g.w_in, out_plane = static_cast<std::size_t>(g.h_out) * g.w_out;
    const auto x = parity::random_vector(planes * in_plane, 21), dy = parity::random_vector(planes * out_plane, 22);
    std::vector<float> y_ref(planes * out_plane, -7.0f), dx_ref(planes * in_plane, -7.0f);
    Cpu::resize_bilinear_forward(g, x.data(), y_ref.data());
    Cpu::resize_bilinear_backward(g, dy.data(), dx_ref.data());
    for (const std::uint32_t limit : launch_limits(std::max(in_plane, out_plane))) {
      CAPTURE(limit);
      int launches = 0;
      const HostIndexExec ex{&launches};
      std::vector<float> y(y_ref.size(), NAN), dx(dx_ref.size(), NAN);
      dtn::cuda::detail::resize_bilinear_forward_on(ex, g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out, x.data(), y.data(),
                                                    limit);
      CHECK(parity::rel_l2(y, y_ref) <= 1e-6);
      dtn::cuda::detail::resize_bilinear_backward_on(ex, g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out, dy.data(),
                                                     dx.data(), limit);
      CHECK(parity::rel_l2(dx, dx_ref) <= 1e-6);
      CHECK(launches == launches_for(planes, out_plane, limit) + launches_for(planes, in_plane, limit));
    }
    // An infinite gradient at each plane's first output: every input that output reads, with
    // a zero weight included, gets NaN (0 * inf) or inf on the CPU, and must on the GPU too.
    auto dy_inf = dy;
    for (std::size_t p = 0; p < planes; ++p) dy_inf[p * out_plane] = INFINITY;
    std::vector<float> dxi_ref(dx_ref.size(), -7.0f), dxi(dx_ref.size(), -7.0f);
    Cpu::resize_bilinear_backward(g, dy_inf.data(), dxi_ref.data());
    int launches = 0;
    dtn::cuda::detail::resize_bilinear_backward_on(HostIndexExec{&launches}, g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out,
                                                   dy_inf.data(), dxi.data());
    CHECK(parity::rel_l2(dxi, dxi_ref, true) <= 1e-6);
  }
}

TEST_CASE("GPU channel repeat, run on the host, matches the CPU backend bit for bit") {
  struct Case {
    int n, c, reps;
    long hw;
  };
  // G's 1-channel output repeated to f's 3 channels; several channels; a single repeat.
  for (const Case& k : {Case{4, 1, 3, 32 * 32}, Case{3, 2, 3, 5 * 7}, Case{5, 3, 1, 6}}) {
    CAPTURE(k.n);
    CAPTURE(k.c);
    CAPTURE(k.reps);
    const std::size_t chw = static_cast<std::size_t>(k.c) * static_cast<std::size_t>(k.hw);
    const std::size_t plane = chw * static_cast<std::size_t>(k.reps);
    const auto x = parity::random_vector(k.n * chw, 31), dy = parity::random_vector(k.n * plane, 32);
    std::vector<float> y_ref(k.n * plane, -7.0f), dx_ref(k.n * chw, -7.0f);
    Cpu::repeat_channels_forward(k.n, k.c, k.reps, k.hw, x.data(), y_ref.data());
    Cpu::repeat_channels_backward(k.n, k.c, k.reps, k.hw, dy.data(), dx_ref.data());
    for (const std::uint32_t limit : launch_limits(plane)) {
      CAPTURE(limit);
      int launches = 0;
      const HostIndexExec ex{&launches};
      std::vector<float> y(y_ref.size(), NAN), dx(dx_ref.size(), NAN);
      dtn::cuda::detail::repeat_channels_forward_on(ex, k.n, k.c, k.reps, k.hw, x.data(), y.data(), limit);
      CHECK(same(y, y_ref));
      dtn::cuda::detail::repeat_channels_backward_on(ex, k.n, k.c, k.reps, k.hw, dy.data(), dx.data(), limit);
      CHECK(same(dx, dx_ref));
      CHECK(launches == launches_for(k.n, plane, limit) + launches_for(k.n, chw, limit));
    }
  }
}

TEST_CASE("GPU index kernels: a plane beyond the 32-bit index range is refused with a message, not wrapped") {
  int launches = 0;
  const HostIndexExec ex{&launches};
  // One 8x8 output plane against a launch limit of 63 elements: no launch can hold it.
  const dtn::PoolGeom g{1, 1, 16, 16, 2, 2, 8, 8};
  std::vector<float> x(256, 0.0f), y(64, NAN);
  std::vector<int> a(64, -1);
  try {
    dtn::cuda::detail::maxpool_forward_on(ex, g.n, g.c, g.h_in, g.w_in, g.h_out, g.w_out, g.k, g.stride, x.data(),
                                          y.data(), a.data(), 63);
    FAIL("no exception");
  } catch (const dtn::argument_error& e) {
    const std::string what = e.what();
    CHECK(what.find("maxpool_forward") != std::string::npos);
    CHECK(what.find("64 elements") != std::string::npos);
  }
  CHECK(launches == 0);
}
