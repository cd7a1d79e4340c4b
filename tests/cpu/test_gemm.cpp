// The CPU GEMM in float (dtn's packed kernel where compiled for it, sgemm.hpp: AVX-512 or AVX2;
// Eigen elsewhere) against a double reference, over shapes that cross every blocking boundary of
// the packed kernel (MR = 8 or 6 row edges; NR = 16 panel edges and micro-kernels on 1, 2 or 3
// panels; KC = 384 or 256 depth blocks; MC = 144 row blocks; NC = 3072 column blocks), all four
// transpose combinations, alpha and beta, and padded leading dimensions.
//
// Bound: every term of C's sum (k products and beta * c) passes through at most k + 4 float
// roundings whatever the summation order or blocking (its product, at most k - 1 additions, the
// alpha and beta scalings, the addition of a depth block to C), so the result differs from the
// exact value by at most gamma_(k+4) * (|alpha| sum_p |a_ip b_pj| + |beta c_ij|), with
// gamma_n = n u / (1 - n u) and u = 2^-24 (Higham, Accuracy and Stability of Numerical
// Algorithms, 2nd ed., sections 2.2 and 3.1; an FMA only removes roundings). The reference is computed in double
// (its own error is ~1e-16 relative, negligible), so the check uses that worst-case bound per
// element; an indexing or blocking mistake (a dropped, doubled or misplaced term) is O(1).
// The shapes also take the packed kernel's two other paths: B read in place for products of at
// most 64 rows with B not transposed, in depth sub-blocks of 128; and dot products
// for A B^T with at most 12 columns and k >= 64.
#include <doctest/doctest.h>

#include <cmath>
#include <dtn/dtn.hpp>
#include <limits>
#include <ostream>
#include <random>
#include <vector>

namespace {

struct Case {
  int m, n, k;
};
std::ostream& operator<<(std::ostream& os, const Case& c) { return os << "{m " << c.m << ", n " << c.n << ", k " << c.k << "}"; }

struct Problem {
  bool ta, tb;
  int m, n, k, lda, ldb, ldc;
  float alpha, beta;
  std::vector<float> a, b, c;  // stored op(A), op(B) and C, with padding columns
};

Problem make_problem(const Case& s, bool ta, bool tb, float alpha, float beta, unsigned seed) {
  Problem p{ta, tb, s.m, s.n, s.k, 0, 0, 0, alpha, beta, {}, {}, {}};
  const int a_rows = ta ? s.k : s.m, a_cols = ta ? s.m : s.k;
  const int b_rows = tb ? s.n : s.k, b_cols = tb ? s.k : s.n;
  p.lda = a_cols + 3;
  p.ldb = b_cols + 5;
  p.ldc = s.n + 2;
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  p.a.resize(static_cast<std::size_t>(a_rows) * p.lda + 1);
  p.b.resize(static_cast<std::size_t>(b_rows) * p.ldb + 1);
  p.c.resize(static_cast<std::size_t>(s.m) * p.ldc + 1);
  for (auto& v : p.a) v = u(gen);
  for (auto& v : p.b) v = u(gen);
  for (auto& v : p.c) v = u(gen);
  return p;
}

float at(const std::vector<float>& x, int ld, bool trans, int i, int j) {
  return trans ? x[static_cast<std::size_t>(j) * ld + i] : x[static_cast<std::size_t>(i) * ld + j];
}

// Runs dtn's GEMM on a copy of p.c and checks every element against the bound above, and that
// the padding columns of C are untouched. With beta = 0, C starts as NaN: it must not be read.
std::vector<float> run_and_check(const Problem& p) {
  std::vector<float> c = p.c;
  if (p.beta == 0.f)
    for (int i = 0; i < p.m; ++i)
      for (int j = 0; j < p.n; ++j) c[static_cast<std::size_t>(i) * p.ldc + j] = std::numeric_limits<float>::quiet_NaN();
  dtn::cpu::gemm<float>(p.ta, p.tb, p.m, p.n, p.k, p.alpha, p.a.data(), p.lda, p.b.data(), p.ldb, p.beta, c.data(),
                        p.ldc);
  const double u = std::ldexp(1.0, -24), nu = (p.k + 4) * u, gamma = nu / (1 - nu);
  long bad = 0, pad_changed = 0;
  for (int i = 0; i < p.m; ++i) {
    for (int j = 0; j < p.n; ++j) {
      double exact = 0, mag = 0;
      for (int q = 0; q < p.k; ++q) {
        const double t = static_cast<double>(at(p.a, p.lda, p.ta, i, q)) * at(p.b, p.ldb, p.tb, q, j);
        exact += t;
        mag += std::abs(t);
      }
      const double c0 = p.c[static_cast<std::size_t>(i) * p.ldc + j];
      exact = p.alpha * exact + (p.beta == 0.f ? 0.0 : p.beta * c0);
      mag = std::abs(p.alpha) * mag + std::abs(p.beta * c0);
      const double got = c[static_cast<std::size_t>(i) * p.ldc + j];
      if (!(std::abs(got - exact) <= gamma * mag + 1e-30)) ++bad;
    }
    for (int j = p.n; j < p.ldc; ++j)
      if (c[static_cast<std::size_t>(i) * p.ldc + j] != p.c[static_cast<std::size_t>(i) * p.ldc + j]) ++pad_changed;
  }
  CHECK(bad == 0);
  CHECK(pad_changed == 0);
  return c;
}

const std::vector<Case> kCases = {
    {1, 1, 1},     {5, 7, 3},      {6, 16, 8},     {7, 17, 9},     {12, 32, 256}, {13, 33, 257}, {11, 21, 600},
    {150, 40, 70}, {300, 19, 300}, {9, 3100, 20},  {64, 3, 700},   {3, 200, 5},   {145, 49, 513},
    {16, 16, 4},   {17, 15, 33},   {47, 48, 100},  {8, 48, 384},   {9, 80, 385},  {15, 95, 769}, {24, 144, 10},
    // A B^T with few columns and k >= 64 (the dot-product path): column blocks 3 + 3 + 3 and
    // 4 + 3 + 3, row blocks of 4 with 1-3 left over, depth tails of 13 and 2 lanes
    {9, 9, 100},   {7, 10, 64},    {5, 5, 77},     {6, 12, 2050},  {64, 3, 1000},
};

}  // namespace

TEST_CASE("CPU float GEMM equals a double reference within the float error bound") {
  unsigned seed = 1;
  int checked = 0;
  for (const Case& s : kCases)
    for (int t = 0; t < 4; ++t) {
      CAPTURE(s);
      CAPTURE(t);
      for (const auto& ab : {std::pair<float, float>{1.f, 0.f}, {1.f, 1.f}, {-0.5f, 0.25f}}) {
        CAPTURE(ab.first);
        CAPTURE(ab.second);
        run_and_check(make_problem(s, t & 1, t & 2, ab.first, ab.second, seed++));
        ++checked;
      }
    }
  CHECK(checked == static_cast<int>(kCases.size()) * 12);
}

TEST_CASE("CPU float GEMM: empty products scale C by beta, and m = 0 or n = 0 writes nothing") {
  Problem p = make_problem({4, 5, 0}, false, false, 1.f, 0.5f, 7);
  const std::vector<float> c = run_and_check(p);
  CHECK(c[0] == p.c[0] * 0.5f);
  Problem z = make_problem({4, 5, 0}, true, true, 2.f, 0.f, 8);
  const std::vector<float> cz = run_and_check(z);
  CHECK(cz[0] == 0.f);
  Problem e = make_problem({0, 5, 3}, false, false, 1.f, 0.f, 9);
  std::vector<float> ce = e.c;
  dtn::cpu::gemm<float>(false, false, 0, 5, 3, 1.f, e.a.data(), e.lda, e.b.data(), e.ldb, 0.f, ce.data(), e.ldc);
  CHECK(ce == e.c);
}

#if defined(DTN_OWN_SGEMM)
// dtn's packed GEMM splits a large product over threads by blocks of C, never over k, so every
// element is summed in the same order whatever the thread count (sgemm.hpp): 1 and 2 threads
// give the same bits, outside a parallel region and from inside one (each thread with its own
// packing buffers).
TEST_CASE("dtn's packed float GEMM gives the same bits on 1 and 2 threads and inside a parallel region") {
  const int saved = dtn::num_threads();
  // A B^T: packed, packed, dot products (rows split over the threads); A B: B read in place
  // (columns split), 100 rows split into two blocks of at most 64 (which must stay on the packed
  // path: whether B is read in place is decided for the whole product), and 16 rows in place
  // split into two single-panel blocks (summed in the same depth sub-blocks as both panels)
  const std::pair<Case, bool> cases[] = {{{300, 200, 300}, true},
                                         {{40, 700, 260}, true},
                                         {{64, 3, 5000}, true},
                                         {{3, 9000, 64}, false},
                                         {{100, 50, 3000}, false},
                                         {{16, 8, 20000}, false}};
  for (const auto& st : cases) {
    const Case& s = st.first;  // not a structured binding: CAPTURE's lambda cannot capture one before C++20
    const bool tb = st.second;
    CAPTURE(s);
    const Problem p = make_problem(s, false, tb, 1.f, 1.f, 42);
    std::vector<std::vector<float>> out;
    for (int threads : {1, 2}) {
      dtn::set_num_threads(threads);
      std::vector<float> c = p.c;
      dtn::cpu::gemm<float>(p.ta, p.tb, p.m, p.n, p.k, p.alpha, p.a.data(), p.lda, p.b.data(), p.ldb, p.beta, c.data(),
                            p.ldc);
      out.push_back(std::move(c));
    }
    CHECK(out[0] == out[1]);
    if (!dtn::has_openmp()) continue;  // no parallel region to call it from (and one thread above)
    std::vector<float> c0 = p.c, c1 = p.c;
    DTN_OMP(parallel num_threads(2))
    {
      std::vector<float>& c = dtn::cpu::thread_num() == 0 ? c0 : c1;
      dtn::cpu::gemm<float>(p.ta, p.tb, p.m, p.n, p.k, p.alpha, p.a.data(), p.lda, p.b.data(), p.ldb, p.beta, c.data(),
                            p.ldc);
    }
    CHECK(c0 == out[0]);
    CHECK(c1 == out[0]);
  }
  dtn::set_num_threads(saved);
}
#endif

// Grouped views (matview.hpp), as the convolutions use them: dy [n, c_out, hw] read as a
// [c_out, n*hw] matrix (as op(B), or as op(A) over the depth), y written as one, with a row bias.
// Groups of 5, 16 and 37 columns: micro-tiles and packed panels that start, end or cross a group
// boundary. Bound as above, with the bias as one more term (k + 5 roundings). Each product is
// run with 70 and 9 rows (B grouped: packed, or read in place) and 19 and 9 columns (A grouped:
// packed, or dot products once the depth reaches 64). The convolutions read grouped operands
// untransposed only; the transposed ones (cases 5 to 8: runs of rows along a stored row that
// cross a group) are part of gemm_view's contract too.
TEST_CASE("CPU float GEMM through grouped views, with a row bias, equals a double reference") {
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  int checked = 0;
  for (long hw : {5L, 16L, 37L})
    for (int cnt : {1, 3, 7})
      for (int which = 0; which < 9; ++which) {  // 0: C grouped + bias, 1, 3: B grouped, 2, 4: A grouped (depth),
                                                 // 5, 7: A grouped, transposed; 6, 8: B grouped, transposed
        CAPTURE(hw);
        CAPTURE(cnt);
        CAPTURE(which);
        const int rows = 11;             // c_out: the grouped operand's rows
        const long cols = cnt * hw;      // n*hw: its columns
        const long img = rows * hw + 3;  // group stride, with a gap between images
        std::vector<float> grouped(static_cast<std::size_t>(cnt * img), 9.f),
            other(static_cast<std::size_t>(300 * (rows + cols)));  // A and B of case 0 side by side
        for (auto& v : grouped) v = u(gen);
        for (auto& v : other) v = u(gen);
        std::vector<float> bias(64);
        for (auto& v : bias) v = u(gen);
        const dtn::cpu::MatView<float> gv{grouped.data(), hw, hw, img};
        const dtn::cpu::MatView<const float> gc{grouped.data(), hw, hw, img};
        const std::vector<float> before = grouped;
        // Each case: C = op(A) op(B) (+ beta C), one operand the grouped view, the other plain.
        using View = dtn::cpu::MatView<const float>;
        int m, n, k;
        bool ta = false, tb = false;
        View A{}, B{};
        float beta = 0.f;  // beta = 0: C must be written without being read, so it starts as NaN
        if (which == 0) {  // C [rows, cols] (grouped) = bias + A [rows, 300] * B [300, cols]
          m = rows, n = static_cast<int>(cols), k = 300;
          A = dtn::cpu::plain_view<const float>(other.data(), k);
          B = dtn::cpu::plain_view<const float>(other.data() + rows * k, n);
        } else if (which == 1 || which == 3) {  // C [70 or 9, cols] = A^T [m, rows] * B [rows, cols] (grouped)
          m = which == 1 ? 70 : 9, n = static_cast<int>(cols), k = rows;
          ta = true, A = dtn::cpu::plain_view<const float>(other.data(), m), B = gc;
        } else if (which == 2 || which == 4) {  // C [rows, 19 or 9] = A [rows, cols] (grouped) * B^T [cols, n]
          m = rows, n = which == 2 ? 19 : 9, k = static_cast<int>(cols);
          tb = true, A = gc, B = dtn::cpu::plain_view<const float>(other.data(), k), beta = 1.f;
        } else if (which == 5 || which == 7) {  // C [cols, 19 or 9] = (A [rows, cols] grouped)^T * B [rows, n]
          m = static_cast<int>(cols), n = which == 5 ? 19 : 9, k = rows;
          ta = true, A = gc, B = dtn::cpu::plain_view<const float>(other.data(), n), beta = 1.f;
        } else {  // C [70 or 9, rows] = A [m, cols] * (B [rows, cols] grouped)^T
          m = which == 6 ? 70 : 9, n = rows, k = static_cast<int>(cols);
          tb = true, A = dtn::cpu::plain_view<const float>(other.data(), k), B = gc;
        }
        const float c_start = beta != 0.f ? 0.5f : std::numeric_limits<float>::quiet_NaN();
        std::vector<float> out(static_cast<std::size_t>(m) * n, c_start);
        if (which == 0)
          dtn::cpu::gemm_view<float>(ta, tb, m, n, k, 1.f, A, B, 0.f, gv, bias.data());
        else
          dtn::cpu::gemm_view<float>(ta, tb, m, n, k, 1.f, A, B, beta, dtn::cpu::plain_view(out.data(), n));
        const double uu = std::ldexp(1.0, -24), nu = (k + 5) * uu, gamma = nu / (1 - nu);
        long bad = 0;
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < n; ++j) {
            double exact = 0, mag = 0;
            for (int q = 0; q < k; ++q) {
              const double a = ta ? *A.at(q, i) : *A.at(i, q), b = tb ? *B.at(j, q) : *B.at(q, j);
              exact += a * b;
              mag += std::abs(a * b);
            }
            const double extra = which == 0 ? bias[static_cast<std::size_t>(i)] : beta * 0.5;
            exact += extra;
            mag += std::abs(extra);
            const double got = which == 0 ? *gv.at(i, j) : out[static_cast<std::size_t>(i) * n + j];
            if (!(std::abs(got - exact) <= gamma * mag + 1e-30)) ++bad;
          }
        CHECK(bad == 0);
        if (which == 0) {  // the gaps between the groups are untouched
          long gap_changed = 0;
          for (int i = 0; i < cnt; ++i)
            for (long e = rows * hw; e < img; ++e)
              gap_changed += grouped[static_cast<std::size_t>(i * img + e)] != before[static_cast<std::size_t>(i * img + e)];
          CHECK(gap_changed == 0);
        }
        ++checked;
      }
  CHECK(checked == 81);
}
