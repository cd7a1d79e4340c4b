// Backend<Cpu> ops against naive loops written from their definitions, over many geometries
// (kernel 1..5, stride 1..3, padding 0..2, non-square images, windows wider than the image with
// padding, batch sizes that split unevenly into the conv chunks). The im2col/col2im fast paths,
// the dense 1x1-output path, the vectorised double reductions of batch norm and the max-pool
// window loop are all checked here in double precision.
//
// Bound: the reference and the backend add the same double products in different orders; with
// O(1) data and at most a few hundred terms per output the difference is a few hundred ulps of
// 1.0 at most (< 1e-13), so 1e-11 relative to the largest magnitude leaves ample margin while any
// indexing mistake (a dropped, doubled or misplaced term) shows up as an O(1) error.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <dtn/dtn.hpp>
#include <fstream>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using B = dtn::Backend<dtn::Cpu>;
using Vec = std::vector<double>;

Vec random_vec(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  Vec v(n);
  for (auto& x : v) x = u(gen);
  return v;
}

// The largest |a - b| relative to the largest |b|; +inf when any a or b is NaN (the outputs start
// as NaN, so an element a pass fails to write shows up here; std::max would skip it).
double max_rel_diff(const Vec& a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double scale = 1e-30, diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    scale = std::max(scale, std::abs(b[i]));
    diff = std::max(diff, std::abs(a[i] - b[i]));
  }
  return diff / scale;
}

constexpr double kBound = 1e-11;

struct Geo {
  int n, c_in, h, w, c_out, k, stride, pad;
};
// CAPTURE(q) prints every field of a failing geometry.
std::ostream& operator<<(std::ostream& os, const Geo& q) {
  return os << "{n " << q.n << ", c_in " << q.c_in << ", h " << q.h << ", w " << q.w << ", c_out " << q.c_out
            << ", k " << q.k << ", stride " << q.stride << ", pad " << q.pad << "}";
}

dtn::ConvGeom make(const Geo& q) {
  dtn::ConvGeom g;
  g.n = q.n;
  g.c_in = q.c_in;
  g.h_in = q.h;
  g.w_in = q.w;
  g.c_out = q.c_out;
  g.kh = g.kw = q.k;
  g.stride = q.stride;
  g.pad = q.pad;
  g.h_out = dtn::ConvGeom::out_size(q.h, q.k, q.stride, q.pad);
  g.w_out = dtn::ConvGeom::out_size(q.w, q.k, q.stride, q.pad);
  return g;
}

// For each (image, out channel, out pixel, in channel, kernel tap) inside the image, calls
// fn(x index, w index, y index): every conv pass is a sum over these triples.
template <class Fn>
void for_each_tap(const dtn::ConvGeom& g, Fn&& fn) {
  for (int i = 0; i < g.n; ++i)
    for (int o = 0; o < g.c_out; ++o)
      for (int oh = 0; oh < g.h_out; ++oh)
        for (int ow = 0; ow < g.w_out; ++ow)
          for (int c = 0; c < g.c_in; ++c)
            for (int a = 0; a < g.kh; ++a)
              for (int b = 0; b < g.kw; ++b) {
                const int ih = oh * g.stride - g.pad + a, iw = ow * g.stride - g.pad + b;
                if (ih < 0 || ih >= g.h_in || iw < 0 || iw >= g.w_in) continue;
                fn(((static_cast<std::size_t>(i) * g.c_in + c) * g.h_in + ih) * g.w_in + iw,
                   ((static_cast<std::size_t>(o) * g.c_in + c) * g.kh + a) * g.kw + b,
                   ((static_cast<std::size_t>(i) * g.c_out + o) * g.h_out + oh) * g.w_out + ow);
              }
}

const std::vector<Geo> kGeos = {
    {3, 2, 5, 5, 4, 3, 1, 1},    {2, 3, 7, 6, 5, 3, 2, 1},  {5, 1, 9, 9, 3, 3, 3, 2},  {2, 2, 6, 8, 3, 5, 1, 2},
    {3, 4, 4, 4, 2, 4, 1, 0},    {7, 3, 4, 4, 5, 4, 1, 0},  {2, 2, 3, 3, 2, 5, 1, 2},  {4, 3, 8, 5, 2, 1, 1, 0},
    {3, 2, 8, 8, 3, 1, 2, 0},    {2, 2, 5, 7, 3, 2, 2, 1},  {9, 1, 6, 6, 2, 3, 2, 1},  {2, 3, 1, 1, 4, 1, 1, 0},
    {3, 2, 2, 3, 2, 3, 1, 2},    {65, 1, 4, 4, 2, 3, 1, 1},  // a batch that splits unevenly into chunks
    // rows wider than one 16-lane block of the AVX-512 unfold, with a partial last block
    {2, 2, 5, 37, 3, 3, 1, 1},   {2, 2, 6, 35, 3, 3, 2, 1}, {2, 1, 4, 33, 2, 4, 2, 1}, {1, 2, 3, 32, 2, 3, 1, 1},
    {2, 1, 3, 40, 2, 5, 2, 2},
    // more than 8 output channels and a remainder, with c_in*k*k <= 32 (the small-k forward GEMM;
    // f.0's 27 and D.0's 9 unfolded rows) and just above it
    {2, 3, 9, 20, 11, 3, 1, 1},  {3, 1, 12, 12, 16, 3, 2, 1}, {2, 2, 7, 9, 9, 4, 1, 2}, {1, 33, 4, 5, 10, 1, 1, 0},
    // ... whose images are wider than the small-k kernel's column block (9 rows: 448 columns), and
    // a 1x1 filter (5 unfolded rows)
    {2, 1, 24, 24, 12, 3, 1, 1}, {2, 5, 6, 6, 10, 1, 1, 0},
    // a filter packed once for all chunks (sgemm::PackedA) over several blocks: c_in*k*k = 432 > KC
    // (384 or 256) unfolded rows and c_out = 150 > MC = 144 rows, ending in a partial panel
    {3, 48, 6, 6, 150, 3, 1, 1},
    // 3x3 stride-1 "same" convolutions with even sides and >= 4 channels each way: the forward and
    // data passes go through Winograd F(2x2, 3x3) (winograd.hpp). Non-square, one tile (2x2), the
    // least channels, and batches that split into uneven chunks of images (up to 32 images of 4
    // tiles per chunk on 4x4 planes, 8 of 16 on 8x8; fewer where the threads split the batch).
    {2, 4, 4, 6, 5, 3, 1, 1},    {1, 6, 2, 2, 4, 3, 1, 1},  {33, 5, 4, 4, 6, 3, 1, 1}, {9, 7, 8, 8, 9, 3, 1, 1},
    {2, 16, 10, 12, 24, 3, 1, 1},
    // 4x4 stride-2 convolutions with padding 1 that halve even planes, >= 4 channels each way: the
    // forward, data and filter passes go through F(2x2, 2x2) per parity (winograd_s2.hpp).
    // Non-square, one tile, the least channels, uneven chunks (up to 128 images of one tile per
    // chunk; fewer where the threads split the batch; the filter pass takes 128 tiles a chunk
    // whatever the threads: 32 images of 4 tiles and then 13 in the last).
    {2, 4, 4, 8, 5, 4, 2, 1},    {1, 5, 4, 4, 4, 4, 2, 1},  {33, 5, 4, 4, 7, 4, 2, 1}, {9, 16, 12, 8, 12, 4, 2, 1},
    {45, 4, 8, 8, 5, 4, 2, 1},
    // 3x3 stride-2 convolutions with padding 1 that halve even planes, >= 4 channels each way: all
    // three passes go through F(2x2, 2x2) per parity with the parities stacked (winograd_s2k3.hpp).
    // The same kinds of shapes; with AVX-512 its input transform takes 16 tile columns at a time,
    // so also 16-column blocks that span images (1, 6 and 4 tiles an image) and end short.
    {2, 4, 4, 8, 5, 3, 2, 1},    {1, 5, 4, 4, 4, 3, 2, 1},  {33, 5, 4, 4, 7, 3, 2, 1}, {9, 16, 12, 8, 12, 3, 2, 1},
    {45, 4, 8, 8, 5, 3, 2, 1},   {3, 6, 20, 12, 5, 3, 2, 1},
};

std::vector<float> to_float(const Vec& v) { return std::vector<float>(v.begin(), v.end()); }
Vec to_double(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

// Convolution q with random x, w, dy and bias (seeds seed .. seed + 3; seed moves past them), in
// double and rounded to float (xf, wf, dyf, bf).
struct ConvCase {
  dtn::ConvGeom g;
  std::size_t nx, nw, ny;
  Vec x, w, dy, bias;
  std::vector<float> xf, wf, dyf, bf;
  ConvCase(const Geo& q, unsigned& seed)
      : g(make(q)),
        nx(static_cast<std::size_t>(g.n) * g.c_in * g.h_in * g.w_in),
        nw(static_cast<std::size_t>(g.c_out) * g.c_in * g.kh * g.kw),
        ny(static_cast<std::size_t>(g.n) * g.c_out * g.h_out * g.w_out),
        x(random_vec(nx, seed)),
        w(random_vec(nw, seed + 1)),
        dy(random_vec(ny, seed + 2)),
        bias(random_vec(static_cast<std::size_t>(g.c_out), seed + 3)),
        xf(to_float(x)),
        wf(to_float(w)),
        dyf(to_float(dy)),
        bf(to_float(bias)) {
    seed += 4;
  }
  // What naive double loops over the taps give: y (with the bias), dx and dw.
  struct Reference {
    Vec y, dx, dw;
  };
  Reference reference() const {
    Reference r{Vec(ny), Vec(nx, 0.0), Vec(nw, 0.0)};
    for (std::size_t j = 0; j < ny; ++j) r.y[j] = bias[(j / (static_cast<std::size_t>(g.h_out) * g.w_out)) % g.c_out];
    for_each_tap(g, [&](std::size_t xi, std::size_t wi, std::size_t yi) {
      r.y[yi] += x[xi] * w[wi];
      r.dx[xi] += dy[yi] * w[wi];
      r.dw[wi] += dy[yi] * x[xi];
    });
    return r;
  }
};

}  // namespace

TEST_CASE("Backend<Cpu> convolution passes equal naive loops over many geometries") {
  const std::vector<Geo>& geos = kGeos;
  unsigned seed = 1;
  for (const Geo& q : geos) {
    const dtn::ConvGeom g = make(q);
    CAPTURE(q);
    REQUIRE(g.h_out >= 1);
    REQUIRE(g.w_out >= 1);
    const std::size_t nx = static_cast<std::size_t>(g.n) * g.c_in * g.h_in * g.w_in;
    const std::size_t nw = static_cast<std::size_t>(g.c_out) * g.c_in * g.kh * g.kw;
    const std::size_t ny = static_cast<std::size_t>(g.n) * g.c_out * g.h_out * g.w_out;
    const Vec x = random_vec(nx, seed++), w = random_vec(nw, seed++), bias = random_vec(g.c_out, seed++),
              dy = random_vec(ny, seed++);

    Vec y_ref(ny), dx_ref(nx, 0.0), dw_ref(nw, 0.0), db_ref(static_cast<std::size_t>(g.c_out), 0.0);
    for (std::size_t j = 0; j < ny; ++j) y_ref[j] = bias[(j / (static_cast<std::size_t>(g.h_out) * g.w_out)) % g.c_out];
    for_each_tap(g, [&](std::size_t xi, std::size_t wi, std::size_t yi) {
      y_ref[yi] += x[xi] * w[wi];
      dx_ref[xi] += dy[yi] * w[wi];
      dw_ref[wi] += dy[yi] * x[xi];
    });
    for (std::size_t j = 0; j < ny; ++j) db_ref[(j / (static_cast<std::size_t>(g.h_out) * g.w_out)) % g.c_out] += dy[j];

    Vec y(ny, std::numeric_limits<double>::quiet_NaN()), dx(nx, std::numeric_limits<double>::quiet_NaN());
    B::conv2d_forward(g, x.data(), w.data(), bias.data(), y.data());
    CHECK(max_rel_diff(y, y_ref) < kBound);
    B::conv2d_backward_data(g, dy.data(), w.data(), dx.data());
    CHECK(max_rel_diff(dx, dx_ref) < kBound);
    // The filter pass accumulates: start from a known value and check it is added to.
    Vec dw(nw, 0.5), db(static_cast<std::size_t>(g.c_out), -0.25);
    B::conv2d_backward_filter(g, x.data(), dy.data(), dw.data(), db.data());
    for (auto& v : dw) v -= 0.5;
    for (auto& v : db) v += 0.25;
    CHECK(max_rel_diff(dw, dw_ref) < kBound);
    CHECK(max_rel_diff(db, db_ref) < kBound);

    // Both backward passes in one op (what the Conv2d layer calls), accumulating the same way.
    Vec dx2(nx, std::numeric_limits<double>::quiet_NaN()), dw2(nw, 0.5), db2(static_cast<std::size_t>(g.c_out), -0.25);
    B::conv2d_backward(g, x.data(), dy.data(), w.data(), dx2.data(), dw2.data(), db2.data());
    for (auto& v : dw2) v -= 0.5;
    for (auto& v : db2) v += 0.25;
    CHECK(max_rel_diff(dx2, dx_ref) < kBound);
    CHECK(max_rel_diff(dw2, dw_ref) < kBound);
    CHECK(max_rel_diff(db2, db_ref) < kBound);
    // Those of the transposed convolution whose forward pass is g's backward-data pass, with dy
    // as its input (g's output shape) and x as the gradient at its output (g's input shape): its
    // input gradient is g's forward pass of x without the bias, its weight gradient g's filter
    // gradient again, its bias gradient the sum of x per input channel.
    Vec dxt(ny, std::numeric_limits<double>::quiet_NaN()), dwt(nw, 0.5), dbt(static_cast<std::size_t>(g.c_in), -0.25);
    Vec dxt_ref(ny), dbt_ref(static_cast<std::size_t>(g.c_in), 0.0);
    for (std::size_t j = 0; j < ny; ++j) dxt_ref[j] = y_ref[j] - bias[(j / (static_cast<std::size_t>(g.h_out) * g.w_out)) % g.c_out];
    for (std::size_t j = 0; j < nx; ++j) dbt_ref[(j / (static_cast<std::size_t>(g.h_in) * g.w_in)) % g.c_in] += x[j];
    B::conv_transpose2d_backward(g, dy.data(), x.data(), w.data(), dxt.data(), dwt.data(), dbt.data());
    for (auto& v : dwt) v -= 0.5;
    for (auto& v : dbt) v += 0.25;
    CHECK(max_rel_diff(dxt, dxt_ref) < kBound);
    CHECK(max_rel_diff(dwt, dw_ref) < kBound);
    CHECK(max_rel_diff(dbt, dbt_ref) < kBound);
    // One of the two asked for.
    Vec dx3(nx, std::numeric_limits<double>::quiet_NaN());
    B::conv2d_backward(g, x.data(), dy.data(), w.data(), dx3.data(), static_cast<double*>(nullptr),
                       static_cast<double*>(nullptr));
    CHECK(max_rel_diff(dx3, dx_ref) < kBound);
    Vec dw3(nw, 0.5), db3(static_cast<std::size_t>(g.c_in), -0.25);
    B::conv_transpose2d_backward(g, dy.data(), x.data(), w.data(), static_cast<double*>(nullptr), dw3.data(), db3.data());
    for (auto& v : dw3) v -= 0.5;
    for (auto& v : db3) v += 0.25;
    CHECK(max_rel_diff(dw3, dw_ref) < kBound);
    CHECK(max_rel_diff(db3, dbt_ref) < kBound);
  }
}

// The float unfold/fold that the convolutions use in float (AVX-512 or AVX2 where compiled for it,
// and the polyphase unfold of strides >= 2 in every build) must produce exactly the bits of the
// generic loops: im2col is a copy and col2im adds the same terms in the same order, so the
// comparison is exact. The geometries add strides 1 and 2 (the SIMD cases) and 3 (generic), and
// rows of 1 to 40 columns: partial, whole and several 16-lane blocks, and outputs 1, 2, 4 and 8
// columns wide, which share one vector between several output rows.
TEST_CASE("CPU im2col/col2im in float equal the generic loops bit for bit") {
  std::vector<Geo> geos = kGeos;
  for (int h : {3, 9})  // 9: several groups of output rows (and a partial one) in the 1-8 column paths
    for (int w : {1, 4, 15, 16, 17, 31, 32, 33, 40})
      for (int stride : {1, 2, 3})
        for (int pad : {0, 1, 2})
          for (int k : {1, 3, 4}) geos.push_back({1, 2, h, w, 1, k, stride, pad});
  unsigned seed = 100;
  int checked = 0;
  for (const Geo& q : geos) {
    const dtn::ConvGeom g = make(q);
    if (g.h_out < 1 || g.w_out < 1) continue;
    CAPTURE(q);
    const long hw = static_cast<long>(g.h_out) * g.w_out, ckk = static_cast<long>(g.c_in) * g.kh * g.kw;
    const long in_img = static_cast<long>(g.c_in) * g.h_in * g.w_in;
    // a chunk of two images, whose columns are a block inside a wider matrix
    const long ld = 3 * hw + 3, col0 = hw + 1;
    std::vector<float> x(static_cast<std::size_t>(2 * in_img)), cols_a(static_cast<std::size_t>(ckk * ld), 7.f),
        cols_b(cols_a), dx_a(static_cast<std::size_t>(2 * in_img)), dx_b;
    std::mt19937 gen(seed++);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (auto& v : x) v = u(gen);
    for (auto& v : dx_a) v = u(gen);
    dx_b = dx_a;
    dtn::cpu::im2col(g, x.data(), 2, in_img, cols_a.data(), ld, col0);
    dtn::cpu::im2col_generic(g, x.data(), 2, in_img, cols_b.data(), ld, col0);
    CHECK(std::equal(cols_a.begin(), cols_a.end(), cols_b.begin()));  // includes the untouched 7s
    for (auto& v : cols_a) v = u(gen);
    dtn::cpu::col2im_add(g, cols_a.data(), ld, col0, 2, in_img, dx_a.data());
    dtn::cpu::col2im_add_generic(g, cols_a.data(), ld, col0, 2, in_img, dx_b.data());
    CHECK(std::equal(dx_a.begin(), dx_a.end(), dx_b.begin()));
    ++checked;
  }
  CHECK(checked > 450);
}

// The polyphase unfold (unfold.hpp, im2col_phases: strides >= 2 whose taps reuse the input)
// against the unfold's definition, cols[(c, ki, kj), image i's column oh * w_out + ow] =
// x_i[c][oh * s - pad + ki][ow * s - pad + kj], or 0 in the padding, for float and double:
// square and non-square kernels (kernels narrower than the stride, so that some phases go
// unused), strides 2 and 3, padding up to 2, input rows up to 33 columns (the AVX-512 float build
// of stride 2 up to 32 - pad, its scalar build beyond), chunks whose phase planes fill the
// stack buffer a few images at a time, and a chunk inside a wider column matrix (the 7s around it
// must stay). Also through im2col itself, and a plane too large for the buffer must be refused
// (im2col takes another path then).
template <class T>
void check_phase_unfold() {
  const auto expected = [](const dtn::ConvGeom& g, const std::vector<T>& x, int cnt, long ld, long col0,
                           std::vector<T>& cols) {
    const long hw = static_cast<long>(g.h_out) * g.w_out, in_img = static_cast<long>(g.c_in) * g.h_in * g.w_in;
    for (int c = 0; c < g.c_in; ++c)
      for (int ki = 0; ki < g.kh; ++ki)
        for (int kj = 0; kj < g.kw; ++kj)
          for (int i = 0; i < cnt; ++i)
            for (int oh = 0; oh < g.h_out; ++oh)
              for (int ow = 0; ow < g.w_out; ++ow) {
                const int ih = oh * g.stride - g.pad + ki, iw = ow * g.stride - g.pad + kj;
                const bool in = ih >= 0 && ih < g.h_in && iw >= 0 && iw < g.w_in;
                cols[static_cast<std::size_t>(((c * g.kh + ki) * g.kw + kj) * ld + col0 + i * hw + oh * g.w_out + ow)] =
                    in ? x[static_cast<std::size_t>(i * in_img + (static_cast<long>(c) * g.h_in + ih) * g.w_in + iw)]
                       : T(0);
              }
  };
  std::vector<dtn::ConvGeom> geos;
  const auto add = [&](int cnt, int h, int w, int kh, int kw, int s, int pad) {
    dtn::ConvGeom g;
    g.n = cnt;
    g.c_in = 2;
    g.h_in = h;
    g.w_in = w;
    g.c_out = 1;
    g.kh = kh;
    g.kw = kw;
    g.stride = s;
    g.pad = pad;
    g.h_out = dtn::ConvGeom::out_size(h, kh, s, pad);
    g.w_out = dtn::ConvGeom::out_size(w, kw, s, pad);
    if (g.h_out >= 1 && g.w_out >= 1) geos.push_back(g);
  };
  for (int w : {3, 8, 9, 16, 30, 31, 32, 33})
    for (int kh = 1; kh <= 5; ++kh)
      for (int kw = 1; kw <= 5; ++kw)
        for (int s : {2, 3})
          for (int pad : {0, 1, 2}) add(3, 7, w, kh, kw, s, pad);
  add(3, 16, 16, 4, 4, 2, 1);  // g.6 run backwards
  add(3, 16, 16, 3, 3, 2, 1);  // D.3
  add(3, 32, 32, 3, 3, 2, 1);  // D.0
  add(5, 40, 40, 3, 3, 2, 1);  // two images' planes per buffer in float, one in double
  add(3, 1, 60, 1, 8, 2, 0);   // one row of phases, a kernel one tap high
  unsigned seed = 4000;
  int checked = 0;
  for (const dtn::ConvGeom& g : geos) {
    CAPTURE(g.h_in);
    CAPTURE(g.w_in);
    CAPTURE(g.kh);
    CAPTURE(g.kw);
    CAPTURE(g.stride);
    CAPTURE(g.pad);
    const int cnt = g.n;
    const long hw = static_cast<long>(g.h_out) * g.w_out, ckk = static_cast<long>(g.c_in) * g.kh * g.kw;
    const long in_img = static_cast<long>(g.c_in) * g.h_in * g.w_in, ld = (cnt + 2) * hw + 1, col0 = hw;
    std::vector<T> x(static_cast<std::size_t>(cnt * in_img));
    std::mt19937 gen(seed++);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    for (auto& v : x) v = static_cast<T>(u(gen));
    std::vector<T> want(static_cast<std::size_t>(ckk * ld), T(7)), got(want), via(want);
    expected(g, x, cnt, ld, col0, want);
    dtn::cpu::im2col(g, x.data(), cnt, in_img, via.data(), ld, col0);
    CHECK(via == want);
    if (!dtn::cpu::im2col_phases_fit<T>(g)) continue;
    dtn::cpu::im2col_phases(g, x.data(), cnt, in_img, got.data(), ld, col0);
    CHECK(got == want);
    ++checked;
  }
  CHECK(checked == static_cast<int>(geos.size()));  // every geometry here fits the phase buffer
  // im2col takes the phase planes for g.6's backward and D.3's unfolds (16x16 planes, 8x8 outputs)
  const dtn::ConvGeom& g6 = geos[geos.size() - 5];
  const dtn::ConvGeom& d3 = geos[geos.size() - 4];
  CHECK((g6.kh == 4 && g6.h_in == 16 && d3.kh == 3 && d3.h_in == 16));
  CHECK(dtn::cpu::im2col_phases_pays<T>(g6));
  CHECK(dtn::cpu::im2col_phases_pays<T>(d3));
  dtn::ConvGeom big = geos.back();
  big.h_in = big.w_in = 90;  // 4 phase planes of 46 x 46 values: more than the buffer holds
  big.kh = big.kw = 3;
  big.pad = 1;
  big.h_out = big.w_out = dtn::ConvGeom::out_size(90, 3, 2, 1);
  CHECK_FALSE(dtn::cpu::im2col_phases_fit<T>(big));
}
TEST_CASE("The polyphase unfold equals the unfold's definition in float") { check_phase_unfold<float>(); }
TEST_CASE("The polyphase unfold equals the unfold's definition in double") { check_phase_unfold<double>(); }

#if defined(DTN_OWN_SGEMM)
// dtn's packed GEMM can unfold a chunk inside its packing (UnfoldB, unfold.hpp); its packed panels
// must hold exactly the values the explicit column matrix gives when packed (both are copies),
// for the matrix and its transpose, over windows of rows and columns that start and end inside
// panels, and over geometries beyond those the convolutions send it (any plane size, strides 1-3,
// padding wider than the kernel's reach).
TEST_CASE("The packed unfold equals the packed explicit column matrix bit for bit") {
  std::vector<Geo> geos = kGeos;
  geos.push_back({3, 5, 16, 16, 1, 3, 1, 1});
  geos.push_back({2, 4, 16, 16, 1, 3, 2, 1});
  geos.push_back({1, 2, 32, 32, 1, 4, 2, 1});
  unsigned seed = 900;
  int checked = 0;
  for (const Geo& q : geos) {
    const dtn::ConvGeom g = make(q);
    CAPTURE(q);
    const long hw = static_cast<long>(g.h_out) * g.w_out, ckk = static_cast<long>(g.c_in) * g.kh * g.kw;
    const long in_img = static_cast<long>(g.c_in) * g.h_in * g.w_in, ld = g.n * hw;
    std::vector<float> x(static_cast<std::size_t>(g.n * in_img)), cols(static_cast<std::size_t>(ckk * ld));
    std::mt19937 gen(seed++);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (auto& v : x) v = u(gen);
    dtn::cpu::im2col(g, x.data(), g.n, in_img, cols.data(), ld, 0);
    for (bool trans : {false, true}) {
      CAPTURE(trans);
      const long k = trans ? ld : ckk, n = trans ? ckk : ld;  // B is [k, n]
      const int p0 = static_cast<int>(k / 3), j0 = static_cast<int>(n / 5);
      const int kc = static_cast<int>(k - p0), nc = static_cast<int>(n - j0);
      const std::size_t size = static_cast<std::size_t>((nc + 15) / 16 * 16) * kc;
      // packed panels are 32-byte aligned (the GEMM's buffers are 64-byte aligned)
      std::vector<float> a(size + 8, 7.f), b(size + 8, 7.f);
      const auto aligned = [](std::vector<float>& v) {
        return reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(v.data()) + 31) & ~std::uintptr_t(31));
      };
      float* pa = aligned(a);
      float* pb = aligned(b);
      dtn::cpu::UnfoldB{g, x.data(), in_img, trans}.pack(p0, j0, kc, nc, pa);
      dtn::cpu::sgemm::ViewB{dtn::cpu::plain_view<const float>(cols.data(), ld), trans}.pack(p0, j0, kc, nc, pb);
      CHECK(std::equal(pa, pa + size, pb));
      ++checked;
    }
  }
  CHECK(checked == 2 * static_cast<int>(kGeos.size() + 3));
}

// The packed unfold serves 16x16 input planes on Intel CPUs and 8x8 ones elsewhere (unfold.hpp):
// the vendor read with cpuid must be the one the kernel reports.
// (Reported as skipped where /proc/cpuinfo names no vendor: nothing to compare with.)
std::string cpuinfo_vendor() {
  std::ifstream info("/proc/cpuinfo");
  std::string line, vendor;
  while (vendor.empty() && std::getline(info, line))
    if (line.rfind("vendor_id", 0) == 0) vendor = line.substr(line.find(':') + 2);
  return vendor;
}
TEST_CASE("The packed unfold's plane limit follows the CPU vendor that /proc/cpuinfo reports" *
          doctest::skip(cpuinfo_vendor().empty())) {
  const std::string vendor = cpuinfo_vendor();
  REQUIRE(!vendor.empty());
  CAPTURE(vendor);
  const bool intel = vendor == "GenuineIntel";
  CHECK(dtn::cpu::cpu_is_intel() == intel);
  CHECK(dtn::cpu::packed_unfold_max_plane() == (intel ? 256 : 64));
  dtn::ConvGeom g;
  g.n = 2, g.c_in = 3, g.h_in = 16, g.w_in = 16;
  CHECK(dtn::cpu::unfold_packable(g, 2, 3 * 16 * 16) == intel);
  g.h_in = g.w_in = 8;
  CHECK(dtn::cpu::unfold_packable(g, 2, 3 * 8 * 8));
}
#endif

// The float convolutions end to end (chunking, GEMM, the SIMD unfold) against the double
// reference. Bound: y sums at most c_in*k*k = 432 float products of O(1) values, dx at most
// c_out*k*k = 1350, dw at most n*h_out*w_out = 1040; with float32 rounding (eps 6e-8) the worst
// case is K * eps relative to the largest partial sum: 3e-5, 8e-5 and 6e-5, all under 1e-4
// (rounding errors of random data grow like sqrt(K) * eps, ~2e-6), while an indexing error is O(1).
// Winograd's passes (K = 16 * 9 = 144 and 24 * 9 = 216 here) round transformed values, sums of
// up to 4 inputs and 9 filter taps, and add their 16 products' sums back with +-1: a worst case
// several times direct summation's, but for random data errors that still grow like sqrt(K) * eps
// times a small constant (~1e-6 here), two orders under the bound (the next test measures them).
TEST_CASE("Backend<Cpu> float convolution passes equal the double reference") {
  unsigned seed = 500;
  for (const Geo& q : kGeos) {
    CAPTURE(q);
    const ConvCase r(q, seed);
    const ConvCase::Reference ref = r.reference();
    const dtn::ConvGeom& g = r.g;
    std::vector<float> y(r.ny, std::numeric_limits<float>::quiet_NaN()),
        dx(r.nx, std::numeric_limits<float>::quiet_NaN()), dw(r.nw, 0.f);
    dtn::Backend<dtn::Cpu>::conv2d_forward(g, r.xf.data(), r.wf.data(), r.bf.data(), y.data());
    CHECK(max_rel_diff(to_double(y), ref.y) < 1e-4);
    // without a bias (the transposed convolutions' data gradient runs this way)
    Vec y_ref_nb = ref.y;
    for (std::size_t j = 0; j < r.ny; ++j)
      y_ref_nb[j] -= r.bias[(j / (static_cast<std::size_t>(g.h_out) * g.w_out)) % g.c_out];
    std::fill(y.begin(), y.end(), std::numeric_limits<float>::quiet_NaN());
    dtn::Backend<dtn::Cpu>::conv2d_forward(g, r.xf.data(), r.wf.data(), static_cast<const float*>(nullptr), y.data());
    CHECK(max_rel_diff(to_double(y), y_ref_nb) < 1e-4);
    dtn::Backend<dtn::Cpu>::conv2d_backward_data(g, r.dyf.data(), r.wf.data(), dx.data());
    CHECK(max_rel_diff(to_double(dx), ref.dx) < 1e-4);
    dtn::Backend<dtn::Cpu>::conv2d_backward_filter(g, r.xf.data(), r.dyf.data(), dw.data(), static_cast<float*>(nullptr));
    CHECK(max_rel_diff(to_double(dw), ref.dw) < 1e-4);
  }
}

TEST_CASE("Backend<Cpu> batch norm statistics and gradients equal naive double loops") {
  // hw values that exercise every path of the reductions' lane loops (reduce.hpp: blocks of 32
  // lanes, blocks of 8 at lane offsets 0 and 8, a scalar tail), and hw = 1.
  for (long hw : {1L, 7L, 16L, 37L, 50L}) {
    CAPTURE(hw);
    dtn::BnGeom g;
    g.n = 5;
    g.c = 3;
    g.hw = hw;
    const std::size_t total = static_cast<std::size_t>(g.n) * g.c * hw;
    Vec x = random_vec(total, 11), dy = random_vec(total, 12), gamma = random_vec(3, 13), beta = random_vec(3, 14);
    for (auto& v : x) v = 3 * v + 2;  // a mean away from 0, as after a conv with bias
    Vec rm = {0.1, -0.2, 0.3}, rv = {1.5, 0.5, 2.0};
    const double nan = std::numeric_limits<double>::quiet_NaN();  // outputs start unwritten
    Vec y(total, nan), mean(3, nan), invstd(3, nan), dx(total, nan), dgamma(3, 0.0), dbeta(3, 0.0);
    Vec rm_ref = rm, rv_ref = rv;
    B::batchnorm_forward_train(g, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), y.data(), mean.data(),
                               invstd.data());
    B::batchnorm_backward(g, x.data(), dy.data(), gamma.data(), mean.data(), invstd.data(), dx.data(), dgamma.data(),
                          dbeta.data());
    const double m = static_cast<double>(g.n) * hw;
    Vec y_ref(total), dx_ref(total);
    for (int ch = 0; ch < g.c; ++ch) {
      auto at = [&](int i, long j) { return (static_cast<std::size_t>(i) * g.c + ch) * hw + j; };
      double mu = 0, var = 0;
      for (int i = 0; i < g.n; ++i)
        for (long j = 0; j < hw; ++j) mu += x[at(i, j)];
      mu /= m;
      for (int i = 0; i < g.n; ++i)
        for (long j = 0; j < hw; ++j) var += (x[at(i, j)] - mu) * (x[at(i, j)] - mu);
      const double is = 1 / std::sqrt(var / m + g.eps);
      double sdy = 0, sdyx = 0;
      for (int i = 0; i < g.n; ++i)
        for (long j = 0; j < hw; ++j) {
          const double xh = (x[at(i, j)] - mu) * is;
          y_ref[at(i, j)] = gamma[ch] * xh + beta[ch];
          sdy += dy[at(i, j)];
          sdyx += dy[at(i, j)] * xh;
        }
      for (int i = 0; i < g.n; ++i)
        for (long j = 0; j < hw; ++j) {
          const double xh = (x[at(i, j)] - mu) * is;
          dx_ref[at(i, j)] = gamma[ch] * is / m * (m * dy[at(i, j)] - sdy - xh * sdyx);
        }
      CHECK(mean[static_cast<std::size_t>(ch)] == doctest::Approx(mu).epsilon(1e-12));
      CHECK(invstd[static_cast<std::size_t>(ch)] == doctest::Approx(is).epsilon(1e-12));
      CHECK(dgamma[static_cast<std::size_t>(ch)] == doctest::Approx(sdyx).epsilon(1e-12));
      CHECK(dbeta[static_cast<std::size_t>(ch)] == doctest::Approx(sdy).epsilon(1e-12));
      const double unbiased = m > 1 ? var / (m - 1) : var / m;
      CHECK(rm[static_cast<std::size_t>(ch)] == doctest::Approx(0.9 * rm_ref[static_cast<std::size_t>(ch)] + 0.1 * mu).epsilon(1e-12));
      CHECK(rv[static_cast<std::size_t>(ch)] ==
            doctest::Approx(0.9 * rv_ref[static_cast<std::size_t>(ch)] + 0.1 * unbiased).epsilon(1e-12));
    }
    CHECK(max_rel_diff(y, y_ref) < kBound);
    CHECK(max_rel_diff(dx, dx_ref) < kBound);
  }
}

// Batch norm sweeps blocks of channels image by image (backend.hpp, cpu::channel_blocks); each
// channel's lanes still take its planes in order, so every output must be the bits of a sweep one
// channel at a time, written here with the same lane helpers, whatever the block width and the
// thread count (1, 2 and 3 threads give different widths). Float, as in training; shapes with
// blocks of one channel, several, and a narrower last block; ReLU fused and not, with the input
// gradient (in place too) and without it.
struct BnSweep {
  std::vector<float> y, mean, invstd, rm, rv, dx, dgamma, dbeta;
};
template <class Act>
BnSweep bn_by_channel(const dtn::BnGeom& g, const std::vector<float>& x, const std::vector<float>& dy,
                      const std::vector<float>& gamma, const std::vector<float>& beta, const Act& act, bool want_dx) {
  constexpr int L = dtn::cpu::kLanes;
  const std::size_t total = x.size();
  const double m = static_cast<double>(g.n) * static_cast<double>(g.hw);
  BnSweep r;
  r.y.assign(total, 0.f);
  r.dx.assign(want_dx ? total : 0, 0.f);
  r.mean.assign(static_cast<std::size_t>(g.c), 0.f);
  r.invstd = r.mean;
  r.rm.assign(static_cast<std::size_t>(g.c), 0.25f);
  r.rv.assign(static_cast<std::size_t>(g.c), 2.0f);
  r.dgamma = r.dbeta = r.mean;
  std::vector<float> dz(total);
  for (int ch = 0; ch < g.c; ++ch) {
    const auto c = static_cast<std::size_t>(ch);
    auto plane = [&](int i) { return (static_cast<std::size_t>(i) * g.c + c) * static_cast<std::size_t>(g.hw); };
    double a[L] = {};
    for (int i = 0; i < g.n; ++i) dtn::cpu::add_plane_sum(a, x.data() + plane(i), g.hw);
    const double mean = dtn::cpu::lanes_total(a) / m;
    std::fill(a, a + L, 0.0);
    for (int i = 0; i < g.n; ++i) dtn::cpu::add_plane_sq_dev(a, x.data() + plane(i), g.hw, mean);
    const double sq = dtn::cpu::lanes_total(a), var = sq / m, invstd = 1.0 / std::sqrt(var + g.eps);
    const double ka = gamma[c] * invstd, kb = beta[c] - mean * ka;
    for (int i = 0; i < g.n; ++i)
      for (long j = 0; j < g.hw; ++j) r.y[plane(i) + j] = act.forward(static_cast<float>(x[plane(i) + j] * ka + kb));
    r.mean[c] = static_cast<float>(mean);
    r.invstd[c] = static_cast<float>(invstd);
    r.rm[c] = static_cast<float>((1 - g.momentum) * r.rm[c] + g.momentum * mean);
    r.rv[c] = static_cast<float>((1 - g.momentum) * r.rv[c] + g.momentum * (m > 1 ? sq / (m - 1) : var));
    // backward, from the rounded statistics as the backend's backward takes them
    const double sm = r.mean[c], si = r.invstd[c];
    double sa[L] = {}, sd[L] = {};
    for (int i = 0; i < g.n; ++i) {
      for (long j = 0; j < g.hw; ++j) dz[plane(i) + j] = act.grad_from_output(r.y[plane(i) + j], dy[plane(i) + j]);
      dtn::cpu::add_plane_sum_dot_dev(sa, sd, dz.data() + plane(i), x.data() + plane(i), g.hw, sm);
    }
    const double sdy = dtn::cpu::lanes_total(sa), sdyx = dtn::cpu::lanes_total(sd) * si;
    r.dgamma[c] = static_cast<float>(sdyx);
    r.dbeta[c] = static_cast<float>(sdy);
    if (!want_dx) continue;
    const double k = gamma[c] * si / m;
    for (int i = 0; i < g.n; ++i)
      for (long j = 0; j < g.hw; ++j) {
        const std::size_t q = plane(i) + static_cast<std::size_t>(j);
        const double xhat = (x[q] - sm) * si;
        r.dx[q] = static_cast<float>(k * (m * static_cast<double>(dz[q]) - sdy - xhat * sdyx));
      }
  }
  return r;
}

template <class Act>
void check_bn_blocks(const Act& act) {
  struct Shape3 {
    int n, c;
    long hw;
  };
  // blocks (cpu::channel_blocks) on 1, 2 and 3 threads: backward of one channel each (1 KiB
  // planes of 512 images, four tensors: one channel fills 2 MiB), forward of at most two; 5 or 6 blocks
  // of 6-8 of 40 channels; 1, 2 (9 + 8) and 3 (5 + 6 + 6) blocks of 17 channels of 4x4 planes;
  // 1, 2 and 3 blocks of 5 channels of one value
  for (const Shape3 sh : {Shape3{512, 5, 256}, Shape3{64, 40, 256}, Shape3{33, 17, 16}, Shape3{4, 5, 1}}) {
    dtn::BnGeom g;
    g.n = sh.n;
    g.c = sh.c;
    g.hw = sh.hw;
    CAPTURE(g.n);
    CAPTURE(g.c);
    CAPTURE(g.hw);
    const std::size_t total = static_cast<std::size_t>(g.n) * g.c * static_cast<std::size_t>(g.hw);
    const auto tof = [](const Vec& v) { return std::vector<float>(v.begin(), v.end()); };
    Vec xd = random_vec(total, 21);
    for (auto& v : xd) v = 3 * v + 1;
    const std::vector<float> x = tof(xd), dy = tof(random_vec(total, 22)), gamma = tof(random_vec(g.c, 23)),
                             beta = tof(random_vec(g.c, 24));
    const int saved = dtn::num_threads();
    for (const bool want_dx : {true, false}) {
      CAPTURE(want_dx);
      const BnSweep ref = bn_by_channel(g, x, dy, gamma, beta, act, want_dx);
      for (const int threads : {1, 2, 3}) {
        CAPTURE(threads);
        dtn::set_num_threads(threads);
        BnSweep r;
        r.y.assign(total, std::numeric_limits<float>::quiet_NaN());
        r.mean.assign(static_cast<std::size_t>(g.c), std::numeric_limits<float>::quiet_NaN());
        r.invstd = r.mean;
        r.rm.assign(static_cast<std::size_t>(g.c), 0.25f);
        r.rv.assign(static_cast<std::size_t>(g.c), 2.0f);
        r.dgamma.assign(static_cast<std::size_t>(g.c), 0.f);
        r.dbeta = r.dgamma;
        B::batchnorm_forward_train(g, x.data(), gamma.data(), beta.data(), r.rm.data(), r.rv.data(), r.y.data(),
                                   r.mean.data(), r.invstd.data(), act);
        CHECK(r.y == ref.y);
        CHECK(r.mean == ref.mean);
        CHECK(r.invstd == ref.invstd);
        CHECK(r.rm == ref.rm);
        CHECK(r.rv == ref.rv);
        r.dx.assign(want_dx ? total : 0, std::numeric_limits<float>::quiet_NaN());
        B::batchnorm_backward(g, x.data(), dy.data(), gamma.data(), r.mean.data(), r.invstd.data(),
                              want_dx ? r.dx.data() : nullptr, r.dgamma.data(), r.dbeta.data(), r.y.data(), act);
        CHECK(r.dx == ref.dx);
        CHECK(r.dgamma == ref.dgamma);
        CHECK(r.dbeta == ref.dbeta);
        if (!want_dx) continue;
        // in place: the input gradient over the output gradient's storage
        std::vector<float> inplace = dy, dgamma(static_cast<std::size_t>(g.c), 0.f), dbeta = dgamma;
        B::batchnorm_backward(g, x.data(), inplace.data(), gamma.data(), r.mean.data(), r.invstd.data(),
                              inplace.data(), dgamma.data(), dbeta.data(), r.y.data(), act);
        CHECK(inplace == ref.dx);
        CHECK(dgamma == ref.dgamma);
        // a convolution's bias gradient is swept the same way (conv.hpp): dbeta of plain batch norm
        if (std::is_same<Act, dtn::ops::Identity>::value) {
          std::vector<float> db(static_cast<std::size_t>(g.c), 0.f);
          dtn::cpu::bias_grad(g.n, g.c, g.hw, dy.data(), db.data());
          CHECK(db == ref.dbeta);
        }
      }
    }
    dtn::set_num_threads(saved);
  }
}

// Threads: OpenMP's where the build has it, one where it has not (DTN_OPENMP=OFF, a compiler
// without OpenMP); either way the backend's parallel regions run and the answers say how many.
TEST_CASE("dtn::set_num_threads gives OpenMP's threads where the build has OpenMP and one thread where not") {
  CHECK(dtn::has_openmp() == static_cast<bool>(DTN_TEST_EXPECT_OPENMP));
  const int saved = dtn::num_threads();
  const int want = dtn::has_openmp() ? 3 : 1;
  dtn::set_num_threads(3);
  CHECK(dtn::num_threads() == want);
  std::vector<int> seen(8, 0);
  int team = 0, unaware = 0;  // unaware: threads of an OpenMP region that in_parallel() calls outside one
  CHECK_FALSE(dtn::cpu::in_parallel());
  DTN_OMP(parallel)
  {
    DTN_OMP(critical)
    {
      team = dtn::cpu::team_size();
      ++seen[static_cast<std::size_t>(std::min(dtn::cpu::thread_num(), 7))];
      if (dtn::has_openmp() && !dtn::cpu::in_parallel()) ++unaware;
    }
  }
  CHECK(team == want);
  CHECK(unaware == 0);
  for (int t = 0; t < 8; ++t) CHECK(seen[static_cast<std::size_t>(t)] == (t < want ? 1 : 0));
  dtn::set_num_threads(0);  // fewer than one: one
  CHECK(dtn::num_threads() == 1);
  dtn::set_num_threads(saved);
  CHECK(dtn::num_threads() == saved);
}

// The thread count a pass asks for ends with the pass: the next parallel region, dtn's or the
// caller's, runs on the count in force (num_threads() at the time). Clang's OpenMP left a
// num_threads request behind where the same directive's if clause was false (parallel.hpp), so
// the stride-2 filter passes' last loop, on fewer than 4096 filters, gave its count to whatever
// region ran next. Each pass runs with 1 and 2 threads and then a region is opened with 3.
TEST_CASE("Backend<Cpu> convolution passes leave no thread count behind for the next parallel region") {
  const int saved = dtn::num_threads();
  const int want = dtn::has_openmp() ? 3 : 1;
  const auto next_team = [] {
    dtn::set_num_threads(3);
    int team = 0;
    DTN_OMP(parallel)
    {
      DTN_OMP(single)
      team = dtn::cpu::team_size();
    }
    return team;
  };
  unsigned seed = 900;
  for (const Geo& q : kGeos) {
    CAPTURE(q);
    const ConvCase r(q, seed);
    const dtn::ConvGeom& g = r.g;
    std::vector<float> y(r.ny), dx(r.nx), dw(r.nw, 0.f);
    for (const int threads : {1, 2}) {
      CAPTURE(threads);
      dtn::set_num_threads(threads);
      B::conv2d_forward(g, r.xf.data(), r.wf.data(), r.bf.data(), y.data());
      CHECK(next_team() == want);
      dtn::set_num_threads(threads);
      B::conv2d_backward_data(g, r.dyf.data(), r.wf.data(), dx.data());
      CHECK(next_team() == want);
      dtn::set_num_threads(threads);
      B::conv2d_backward_filter(g, r.xf.data(), r.dyf.data(), dw.data(), static_cast<float*>(nullptr));
      CHECK(next_team() == want);
    }
  }
  dtn::set_num_threads(saved);
}

TEST_CASE("Backend<Cpu> batch norm in blocks of channels gives the bits of a sweep one channel at a time") {
  SUBCASE("plain") { check_bn_blocks(dtn::ops::Identity{}); }
  SUBCASE("ReLU fused") { check_bn_blocks(dtn::ops::Relu{}); }
}

TEST_CASE("cpu::channel_blocks: blocks within L2, as many as a multiple of the threads, the DTN step's counts") {
  using dtn::cpu::channel_blocks;
  struct Case {
    int n, c;
    long hw;
    int tensors, threads;
  };
  for (const Case q : {Case{128, 128, 256, 4, 2}, Case{128, 512, 16, 2, 2}, Case{64, 256, 64, 3, 1},
                       Case{512, 5, 256, 4, 2}, Case{33, 17, 16, 4, 3}, Case{4, 5, 1, 2, 2}, Case{1, 1, 1, 4, 8},
                       Case{2048, 64, 4096, 4, 2}, Case{64, 5, 4096, 4, 4}, Case{64, 7, 256, 4, 3}}) {
    CAPTURE(q.n);
    CAPTURE(q.c);
    CAPTURE(q.hw);
    CAPTURE(q.threads);
    const int blocks = channel_blocks(q.n, q.c, q.hw, q.tensors, sizeof(float), q.threads);
    REQUIRE(blocks >= 1);
    REQUIRE(blocks <= q.c);
    // as many blocks as a multiple of the threads, or one a channel where there are too few
    CHECK((blocks % q.threads == 0 || blocks == q.c));
    const int widest = (q.c + blocks - 1) / blocks;
    const double plane = static_cast<double>(q.hw) * sizeof(float);
    // within 2 MiB, unless one channel alone is more
    if (widest > 1) CHECK(widest * plane * q.n * q.tensors <= dtn::cpu::kBlockBytes);
  }
  // the DTN step's shapes on 2 threads (batch 128): 1 KiB planes fill 2 MiB with four tensors
  // at 4 channels (32 blocks of 128 channels); 64-byte planes want 128 channels for an 8 KiB run
  CHECK(channel_blocks(128, 128, 256, 4, sizeof(float), 2) == 32);
  CHECK(channel_blocks(128, 512, 16, 2, sizeof(float), 2) == 4);
  CHECK(channel_blocks(1, 1, 1, 4, sizeof(float), 8) == 1);
  CHECK(channel_blocks(0, 3, 16, 4, sizeof(float), 2) == 1);
}

// The float 2x2 pool (AVX-512 or AVX2 where compiled for it) against the generic loop, values and argmax,
// exactly: widths 2-41 (partial, whole and several 8- and 16-lane blocks, odd widths that drop a
// column), with ties (values rounded to -1, 0, 1) and NaNs, including a NaN that comes after a
// larger value in its window and one in the first position.
TEST_CASE("CPU 2x2 max pool in float equals the generic loop bit for bit" *
#if defined(__AVX512F__) || defined(__AVX2__)
          doctest::skip(false)
#else
          doctest::skip(true)  // no AVX-512 or AVX2 in this build: only the generic loop exists
#endif
) {
  int checked = 0;
  for (int w : {2, 3, 8, 9, 16, 17, 31, 32, 33, 41}) {
    for (int h : {2, 5, 6}) {
      CAPTURE(w);
      CAPTURE(h);
      dtn::PoolGeom g;
      g.n = g.c = 1;
      g.h_in = h;
      g.w_in = w;
      g.h_out = h / 2;
      g.w_out = w / 2;
      std::mt19937 gen(static_cast<unsigned>(w * 10 + h));
      std::uniform_real_distribution<float> u(-1.5f, 1.5f);
      std::vector<float> x(static_cast<std::size_t>(h * w));
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = i % 3 == 0 ? std::round(u(gen)) : u(gen);
      for (std::size_t i = 5; i < x.size(); i += 11) x[i] = std::numeric_limits<float>::quiet_NaN();
      x[0] = std::numeric_limits<float>::quiet_NaN();
      const std::size_t nout = static_cast<std::size_t>(g.h_out * g.w_out);
      std::vector<float> ya(nout, 7.f), yb(nout, -9.f);  // different sentinels: an unwritten
      std::vector<int> aa(nout, -1), ab(nout, -2);       // element on either side shows
      dtn::cpu::maxpool2x2_plane(g, x.data(), ya.data(), aa.data());
      dtn::cpu::maxpool2x2_plane_generic(g, x.data(), yb.data(), ab.data());
      CHECK(aa == ab);
      bool same = true;
      for (std::size_t i = 0; i < nout; ++i)
        same = same && (std::isnan(ya[i]) ? std::isnan(yb[i]) : ya[i] == yb[i]);
      CHECK(same);
      ++checked;
    }
  }
  CHECK(checked == 30);
}

TEST_CASE("Backend<Cpu> max pooling: first maximum wins, NaN propagates, overlapping windows") {
  struct P {
    int h, w, k, stride;
  };
  for (const P q : {P{6, 6, 2, 2}, P{8, 8, 4, 4}, P{7, 5, 3, 2}, P{5, 5, 2, 1}}) {
    CAPTURE(q.k);
    CAPTURE(q.stride);
    dtn::PoolGeom g;
    g.n = 2;
    g.c = 3;
    g.h_in = q.h;
    g.w_in = q.w;
    g.k = q.k;
    g.stride = q.stride;
    g.h_out = (q.h - q.k) / q.stride + 1;
    g.w_out = (q.w - q.k) / q.stride + 1;
    const std::size_t nin = static_cast<std::size_t>(g.n) * g.c * q.h * q.w;
    Vec x = random_vec(nin, 21);
    for (std::size_t i = 0; i < nin; i += 5) x[i] = std::round(x[i]);  // ties: -1, 0, 1 repeated
    x[7] = std::numeric_limits<double>::quiet_NaN();
    x[8] = std::numeric_limits<double>::quiet_NaN();
    const std::size_t nout = static_cast<std::size_t>(g.n) * g.c * g.h_out * g.w_out;
    Vec y(nout, 1e300);  // sentinels no window can produce
    std::vector<int> arg(nout, -7);
    B::maxpool_forward(g, x.data(), y.data(), arg.data());
    for (int p = 0; p < g.n * g.c; ++p)
      for (int oh = 0; oh < g.h_out; ++oh)
        for (int ow = 0; ow < g.w_out; ++ow) {
          int best = -1;
          for (int i = 0; i < g.k; ++i)
            for (int j = 0; j < g.k; ++j) {
              const int idx = (oh * g.stride + i) * g.w_in + ow * g.stride + j;
              const double v = x[static_cast<std::size_t>(p) * q.h * q.w + static_cast<std::size_t>(idx)];
              if (best < 0) {
                best = idx;
                continue;
              }
              const double bv = x[static_cast<std::size_t>(p) * q.h * q.w + static_cast<std::size_t>(best)];
              if (std::isnan(bv)) continue;               // the first NaN is kept
              if (std::isnan(v) || v > bv) best = idx;    // NaN wins; ties keep the first
            }
          const std::size_t o = (static_cast<std::size_t>(p) * g.h_out + oh) * g.w_out + ow;
          CHECK(arg[o] == best);
          const double expect = x[static_cast<std::size_t>(p) * q.h * q.w + static_cast<std::size_t>(best)];
          if (std::isnan(expect))
            CHECK(std::isnan(y[o]));
          else
            CHECK(y[o] == expect);
        }
  }
}

TEST_CASE("an out-of-range class index makes Backend<Cpu>'s cross-entropy NaN, as on the GPU, not a read past the row") {
  // CrossEntropyLoss throws before this on the CPU; the backend, called directly, must not read
  // outside the row either, and gives the GPU backend's documented answer.
  std::vector<float> logits(4 * 3);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = 0.25f * static_cast<float>(i % 5) - 0.5f;
  for (int bad : {3, -1, 1 << 20}) {
    CAPTURE(bad);
    const std::vector<int> targets = {0, bad, 1, 2};
    float loss = 0;
    std::vector<float> grad(12, 0.0f);
    B::softmax_cross_entropy(4, 3, logits.data(), targets.data(), &loss, grad.data(), 1.0f);
    CHECK(std::isnan(loss));
    for (std::size_t j = 0; j < grad.size(); ++j) CHECK(std::isnan(grad[j]) == (j / 3 == 1));  // exactly the bad row
    B::softmax_cross_entropy(4, 3, logits.data(), targets.data(), &loss, static_cast<float*>(nullptr), 1.0f);
    CHECK(std::isnan(loss));
  }
}

// The forward, data and filter passes of convolution q through the Winograd path and im2col +
// GEMM (winograd::set_enabled), in float, each against the double reference within kFloatSum
// relative to the largest output (the bound's argument is at each caller); the filter pass adds
// to what dw holds. Where a pass goes through the Winograd path (forward and data always here;
// the filter pass where filter_path, F(2x2, 2x2)'s), the two paths round differently, so their
// bits differ somewhere: that shows the switch takes effect; and, with dtn's GEMM, the Winograd
// path's bits are the same on 1, 2 and 3 threads. Draws its four random tensors from seeds
// seed .. seed + 3.
namespace {
void check_winograd_and_im2col(const Geo& q, unsigned seed, bool filter_path) {
  namespace wg = dtn::cpu::winograd;
  constexpr double kFloatSum = 2e-5;
  CAPTURE(q);
  const ConvCase c(q, seed);
  const ConvCase::Reference ref = c.reference();
  const dtn::ConvGeom& g = c.g;
  const std::size_t nx = c.nx, nw = c.nw, ny = c.ny;
  struct Passes {
    std::vector<float> y, dx, dw;
  };
  const auto run = [&] {
    Passes r{std::vector<float>(ny, std::numeric_limits<float>::quiet_NaN()),
             std::vector<float>(nx, std::numeric_limits<float>::quiet_NaN()), std::vector<float>(nw, 0.5f)};
    dtn::Backend<dtn::Cpu>::conv2d_forward(g, c.xf.data(), c.wf.data(), c.bf.data(), r.y.data());
    dtn::Backend<dtn::Cpu>::conv2d_backward_data(g, c.dyf.data(), c.wf.data(), r.dx.data());
    dtn::Backend<dtn::Cpu>::conv2d_backward_filter(g, c.xf.data(), c.dyf.data(), r.dw.data(), static_cast<float*>(nullptr));
    return r;
  };
  Passes p[2];
  for (int path = 0; path < 2; ++path) {  // 0: Winograd, 1: im2col + GEMM
    wg::set_enabled(path == 0);
    p[path] = run();
    INFO("path " << (path == 0 ? "Winograd" : "im2col + GEMM"));
    CHECK(max_rel_diff(to_double(p[path].y), ref.y) < kFloatSum);
    CHECK(max_rel_diff(to_double(p[path].dx), ref.dx) < kFloatSum);
    Vec dw = to_double(p[path].dw);
    for (auto& v : dw) v -= 0.5;  // added to what dw held
    CHECK(max_rel_diff(dw, ref.dw) < kFloatSum);
  }
  wg::set_enabled(true);
  CHECK(p[0].y != p[1].y);
  CHECK(p[0].dx != p[1].dx);
  CHECK((p[0].dw != p[1].dw) == filter_path);
#if defined(DTN_OWN_SGEMM)
  // With dtn's GEMM the products' sums do not depend on their columns' split into chunks, which
  // follows the thread count (Eigen's blocking, which portable builds take, follows the shape).
  const int saved = dtn::num_threads();
  for (const int threads : {1, 3}) {
    CAPTURE(threads);
    dtn::set_num_threads(threads);
    const Passes r = run();
    CHECK(r.y == p[0].y);
    CHECK(r.dx == p[0].dx);
    if (filter_path) CHECK(r.dw == p[0].dw);  // (im2col + GEMM's filter pass sums in an order set by the threads)
  }
  dtn::set_num_threads(saved);
#endif
}
}  // namespace

// Winograd F(2x2, 3x3) (winograd.hpp) is what the float forward and data passes of f's 3x3
// convolutions run, and it can be switched off (winograd::set_enabled) for the im2col + GEMM path.
// At f's layer shapes (batch 8) both paths agree with the double reference within
// kFloatSum = 2e-5 relative to the largest output: K = c_in*9 = 576-2304 float products of O(1)
// values, random-data errors ~sqrt(K) * eps * a few (~1e-5 worst here; measured 2-5e-7 for the
// max over ~1M outputs), far below the O(1) of an indexing error. The two paths round differently,
// so their bits differ somewhere: that shows the switch takes effect.
TEST_CASE("CPU Winograd F(2x2, 3x3): where it applies, and both conv paths equal the double reference") {
  namespace wg = dtn::cpu::winograd;
  const auto geo = [](int c_in, int h, int w, int c_out, int k, int stride, int pad) {
    return make(Geo{8, c_in, h, w, c_out, k, stride, pad});
  };
  CHECK(wg::fits(geo(64, 16, 16, 128, 3, 1, 1)));   // f.3
  CHECK(wg::fits(geo(128, 8, 8, 256, 3, 1, 1)));    // f.6
  CHECK(wg::fits(geo(256, 4, 4, 128, 3, 1, 1)));    // f.9
  CHECK_FALSE(wg::fits(geo(3, 32, 32, 64, 3, 1, 1)));   // f.0: 3 input channels (small-k kernel)
  CHECK_FALSE(wg::fits(geo(8, 16, 16, 3, 3, 1, 1)));    // 3 output channels
  CHECK_FALSE(wg::fits(geo(64, 16, 16, 128, 3, 2, 1)));  // D's stride 2
  CHECK_FALSE(wg::fits(geo(64, 9, 16, 128, 3, 1, 1)));   // odd height
  CHECK_FALSE(wg::fits(geo(64, 16, 15, 128, 3, 1, 1)));  // odd width
  CHECK_FALSE(wg::fits(geo(64, 16, 16, 128, 3, 1, 0)));  // no padding: output smaller
  CHECK_FALSE(wg::fits(geo(64, 16, 16, 128, 5, 1, 2)));  // 5x5
  CHECK(wg::enabled());  // on by default

  unsigned seed = 900;
  for (const Geo& q : {Geo{8, 64, 16, 16, 128, 3, 1, 1}, Geo{8, 128, 8, 8, 256, 3, 1, 1}, Geo{8, 256, 4, 4, 128, 3, 1, 1}})
    check_winograd_and_im2col(q, (seed += 4) - 4, false);
}

// The same for F(2x2, 2x2) per parity (winograd_s2.hpp), the path of 4x4 stride-2 convolutions
// that halve the plane (g.3's and g.6's transposed convolutions run its data pass forward and its
// forward and filter passes backward): at their layer shapes (batch 8; K = 4 c_in * 9 = 4608 and
// 9216 transformed products per forward output, c_out * 9 = 4608 and 2304 per data output, 9
// times the batch's 32 and 128 tiles per filter tap) all three passes of both paths agree with the
// double reference within the same kFloatSum: each transformed value sums at most 4 inputs, taps
// or dy values with +-1, each output 4 products' sums, so the random-data error is again
// ~sqrt(K) * eps * a few (~2e-5 / 10 here), and an indexing error is O(1).
TEST_CASE("CPU Winograd F(2x2, 2x2) for 4x4 stride-2 convolutions: where it applies, and both conv paths equal the double reference") {
  namespace wg = dtn::cpu::winograd;
  namespace ws = dtn::cpu::winograd_s2;
  const auto geo = [](int c_in, int h, int w, int c_out, int k, int stride, int pad) {
    return make(Geo{8, c_in, h, w, c_out, k, stride, pad});
  };
  CHECK(ws::fits(geo(256, 8, 8, 512, 4, 2, 1)));    // g.3 (as the convolution whose data pass it is)
  CHECK(ws::fits(geo(128, 16, 16, 256, 4, 2, 1)));  // g.6
  CHECK(ws::fits(geo(4, 4, 4, 4, 4, 2, 1)));        // the least: 4 channels each way, one 2x2 tile
  CHECK_FALSE(ws::fits(geo(1, 32, 32, 128, 4, 2, 1)));  // g.9: one channel
  CHECK_FALSE(ws::fits(geo(8, 32, 32, 3, 4, 2, 1)));    // 3 output channels
  CHECK_FALSE(ws::fits(geo(128, 16, 16, 256, 3, 2, 1)));  // D's 3x3
  CHECK_FALSE(ws::fits(geo(128, 16, 16, 256, 4, 1, 1)));  // stride 1
  CHECK_FALSE(ws::fits(geo(128, 16, 16, 256, 4, 2, 0)));  // no padding: 7x7 output
  CHECK(ws::fits(geo(128, 12, 16, 256, 4, 2, 1)));        // 6x8 output, not square
  CHECK_FALSE(ws::fits(geo(128, 6, 16, 256, 4, 2, 1)));   // odd output height (3)
  CHECK_FALSE(ws::fits(geo(128, 16, 10, 256, 4, 2, 1)));  // odd output width (5)
  CHECK_FALSE(ws::fits(geo(128, 2, 2, 256, 4, 2, 1)));    // 1x1 output: no 2x2 tile
  CHECK_FALSE(wg::fits(geo(256, 8, 8, 512, 4, 2, 1)));    // not the 3x3 path's

  unsigned seed = 950;
  for (const Geo& q : {Geo{8, 256, 8, 8, 512, 4, 2, 1}, Geo{8, 128, 16, 16, 256, 4, 2, 1}}) {
    REQUIRE(ws::fits(make(q)));
    check_winograd_and_im2col(q, (seed += 4) - 4, true);
  }
}

// The same for D's 3x3 stride-2 convolutions (winograd_s2k3.hpp: F(2x2, 2x2) per parity, the
// parities stacked along the GEMMs' depth or rows), at D.3's and D.6's shapes (batch 8; K = 25 c_in
// = 3200 and 6400 transformed products per forward output, 9 c_out = 2304 and 4608 per data
// output, 9 times the batch's 128 and 32 tiles per filter tap): each transformed value again sums
// at most 4 values with +-1 and each output at most 4 products' sums, so the same kFloatSum holds
// with the same margin.
TEST_CASE("CPU Winograd F(2x2, 2x2) for 3x3 stride-2 convolutions: where it applies, and both conv paths equal the double reference") {
  namespace wg = dtn::cpu::winograd;
  namespace ws = dtn::cpu::winograd_s2;
  namespace w3 = dtn::cpu::winograd_s2k3;
  const auto geo = [](int c_in, int h, int w, int c_out, int k, int stride, int pad) {
    return make(Geo{8, c_in, h, w, c_out, k, stride, pad});
  };
  CHECK(w3::fits(geo(128, 16, 16, 256, 3, 2, 1)));  // D.3
  CHECK(w3::fits(geo(256, 8, 8, 512, 3, 2, 1)));    // D.6
  CHECK(w3::fits(geo(4, 4, 4, 4, 3, 2, 1)));        // the least: 4 channels each way, one 2x2 tile
  CHECK_FALSE(w3::fits(geo(1, 32, 32, 128, 3, 2, 1)));    // D.0: one input channel
  CHECK_FALSE(w3::fits(geo(512, 4, 4, 3, 4, 1, 0)));      // D.9: 4x4 valid, 3 outputs
  CHECK_FALSE(w3::fits(geo(128, 16, 16, 256, 4, 2, 1)));  // g's 4x4
  CHECK_FALSE(w3::fits(geo(128, 16, 16, 256, 3, 1, 1)));  // stride 1 (f's)
  CHECK_FALSE(w3::fits(geo(128, 16, 16, 256, 3, 2, 0)));  // no padding: 7x7 output
  CHECK_FALSE(w3::fits(geo(128, 15, 16, 256, 3, 2, 1)));  // odd input height: 8 rows out of 15
  CHECK_FALSE(w3::fits(geo(128, 12, 10, 256, 3, 2, 1)));  // odd output width (5)
  CHECK_FALSE(w3::fits(geo(128, 2, 2, 256, 3, 2, 1)));    // 1x1 output: no 2x2 tile
  CHECK_FALSE(ws::fits(geo(128, 16, 16, 256, 3, 2, 1)));  // not the 4x4 path's
  CHECK_FALSE(wg::fits(geo(128, 16, 16, 256, 3, 2, 1)));  // nor the stride-1 path's

  unsigned seed = 970;
  for (const Geo& q : {Geo{8, 128, 16, 16, 256, 3, 2, 1}, Geo{8, 256, 8, 8, 512, 3, 2, 1}}) {
    REQUIRE(w3::fits(make(q)));
    check_winograd_and_im2col(q, (seed += 4) - 4, true);
  }
}

// The per-parity paths' chunk transforms for float with AVX-512: the input transforms through
// gathers of 16 tile columns at a time (winograd_s2::transform_chunk, transform_chunk_dy,
// winograd_s2k3::transform_chunk) and the output transforms through loads
// of 16 columns and scatters (winograd_s2::output_chunk, winograd_s2k3::output_parities_chunk),
// against the loops over the planes that every other build runs, exactly (the same additions of
// the same values in the same order):
// tiles per image 1 to 64, square and not, 16-column blocks that span images and end short, a
// block of channels [c0, c1) of more, dy's four window origins, the outputs with a bias and into
// each parity's quarter of dx. Both sides start as the same NaN pattern, so the whole buffers are
// compared, and every value a transform owns must have been written.
TEST_CASE("CPU Winograd per-parity chunk transforms: gathers and scatters equal the loops over the planes bit for bit" *
#if defined(__AVX512F__)
          doctest::skip(false)
#else
          doctest::skip(true)  // no AVX-512 in this build: only the loops over the planes exist
#endif
) {
  namespace ws = dtn::cpu::winograd_s2;
  namespace w3 = dtn::cpu::winograd_s2k3;
  struct Case {
    int cnt, c, h, w, c0, c1;  // h x w the small plane (the output's); x is [cnt, c, 2h, 2w]
  };
  const float sentinel = std::numeric_limits<float>::quiet_NaN();
  int checked = 0;
  for (const Case& k : {Case{1, 5, 2, 2, 0, 5}, Case{3, 4, 4, 4, 1, 3}, Case{5, 3, 8, 8, 0, 3}, Case{2, 2, 4, 6, 0, 2},
                        Case{7, 2, 6, 4, 1, 2}, Case{3, 2, 16, 16, 0, 2}, Case{9, 1, 2, 4, 0, 1}}) {
    CAPTURE(k.cnt);
    CAPTURE(k.c);
    CAPTURE(k.h);
    CAPTURE(k.w);
    const int tiles = (k.h / 2) * (k.w / 2);
    const long tcols = static_cast<long>(k.cnt) * tiles, in_plane = 4L * k.h * k.w, plane = static_cast<long>(k.h) * k.w;
    std::mt19937 gen(static_cast<unsigned>(k.cnt * 100 + k.h * 10 + k.w));
    std::uniform_real_distribution<float> u(-2.f, 2.f);
    std::vector<float> x(static_cast<std::size_t>(k.cnt * k.c * in_plane)), dy(static_cast<std::size_t>(k.cnt * k.c * plane));
    for (float& e : x) e = u(gen);
    for (float& e : dy) e = u(gen);
    std::vector<float> pad(static_cast<std::size_t>((k.h + 2) * (k.w + 2)), 0.f);
    // Each position's matrix has up to 4 c rows of tcols columns, positions vs apart.
    const long vs = ws::position_stride(4L * k.c * tcols);
    const auto run = [&](auto transform, auto&& owned) {
      std::vector<float> a(static_cast<std::size_t>(9 * vs), sentinel), b = a;
      transform(true, a.data());
      transform(false, b.data());
      CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
      long unwritten = 0, rows = 0;
      for (int xi = 0; xi < 9; ++xi)
        for (long row = 0; row < 4L * k.c; ++row) {
          if (!owned(xi, row)) continue;
          ++rows;
          for (long t = 0; t < tcols; ++t) unwritten += std::isnan(a[static_cast<std::size_t>(xi * vs + row * tcols + t)]);
        }
      CHECK(rows > 0);
      CHECK(unwritten == 0);
      ++checked;
    };
    const auto in_block = [&](long ch) { return ch >= k.c0 && ch < k.c1; };
    run([&](bool gathered, float* v) {
          if (gathered)
            ws::transform_chunk<float>(x.data(), k.cnt, k.c, k.h, k.w, in_plane, pad.data(), v, tcols, vs, k.c0, k.c1);
          else
            ws::transform_chunk_planes<float>(x.data(), k.cnt, k.c, k.h, k.w, in_plane, pad.data(), v, tcols, vs, k.c0,
                                              k.c1);
        },
        [&](int, long row) { return in_block(row % k.c); });  // parity ab of channel c: row ab * c + c
    for (int oy : {-1, 0})
      for (int ox : {-1, 0}) {
        CAPTURE(oy);
        CAPTURE(ox);
        run([&](bool gathered, float* v) {
              (gathered ? ws::transform_chunk_dy<float> : ws::transform_chunk_dy_planes<float>)(
                  dy.data(), k.cnt, k.c, k.h, k.w, oy, ox, pad.data(), v, tcols, vs);
            },
            [&](int, long row) { return row < k.c; });
      }
    // The output transforms: M (a channel per row) into y [cnt, c, h, w] with a bias, and into one
    // parity's quarter of dx [cnt, c, 2h, 2w] (rows and columns 2 apart, from (a, b)) without.
    std::vector<float> m(static_cast<std::size_t>(9 * vs)), bias(static_cast<std::size_t>(k.c));
    for (float& e : m) e = u(gen);
    for (float& e : bias) e = u(gen);
    for (int ab = -1; ab < 4; ++ab) {  // -1: the forward's y
      CAPTURE(ab);
      const bool fwd = ab < 0;
      const long img_plane = fwd ? plane : in_plane, rs = fwd ? k.w : 4L * k.w, cs = fwd ? 1 : 2;
      const long at = fwd ? 0 : (ab / 2) * 2L * k.w + ab % 2;
      std::vector<float> ya(static_cast<std::size_t>(k.cnt * k.c * img_plane), sentinel), yb = ya;
      ws::output_chunk<float>(m.data(), vs, tcols, k.c, k.h / 2, k.w / 2, fwd ? bias.data() : nullptr, ya.data() + at,
                              k.c * img_plane, img_plane, rs, cs);
      ws::output_chunk_planes<float>(m.data(), vs, tcols, k.c, k.h / 2, k.w / 2, fwd ? bias.data() : nullptr,
                                     yb.data() + at, k.c * img_plane, img_plane, rs, cs);
      CHECK(std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(float)) == 0);
      long written = 0;
      for (float e : ya) written += !std::isnan(e);
      CHECK(written == k.cnt * k.c * plane);  // every output of y, or of the parity's quarter
      ++checked;
    }
    {  // winograd_s2k3's data pass: all four parities of each channel of dx from M's stacked rows
      std::vector<float> da(static_cast<std::size_t>(k.cnt * k.c * in_plane), sentinel), db = da;
      w3::output_parities_chunk<float>(m.data(), vs, tcols, k.c, k.h / 2, k.w / 2, da.data(), k.c * in_plane, in_plane,
                                       2 * k.w);
      w3::output_parities_chunk_planes<float>(m.data(), vs, tcols, k.c, k.h / 2, k.w / 2, db.data(), k.c * in_plane,
                                              in_plane, 2 * k.w);
      CHECK(std::memcmp(da.data(), db.data(), da.size() * sizeof(float)) == 0);
      long written = 0;
      for (float e : da) written += !std::isnan(e);
      CHECK(written == static_cast<long>(da.size()));
      ++checked;
    }
    const auto& sl = w3::slots();
    run([&](bool gathered, float* v) {
          (gathered ? w3::transform_chunk<float> : w3::transform_chunk_planes<float>)(
              x.data(), k.cnt, k.c, k.h, k.w, in_plane, pad.data(), v, tcols, vs, k.c0, k.c1);
        },
        [&](int xi, long row) { return row < sl.count[xi] * k.c && in_block(row % k.c); });
  }
  CHECK(checked == 7 * 12);
}
