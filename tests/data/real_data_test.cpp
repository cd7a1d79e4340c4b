// Real-data checks: run when DTN_DATA_DIR points at a folder with mnist/ and synthdigits/
// (e.g. /work/shared/data); otherwise each case prints "SKIPPED: DTN_DATA_DIR not set" and exits
// with 77, which CTest reports as skipped (each test case runs in its own process there).
// This file sorts last among tests/data/*.cpp, so a plain run of the whole executable runs the
// other cases before the first exit here.
#include <chrono>
#include <cmath>

#include <dtn/data/idx.hpp>
#include <dtn/data/svhn_mat.hpp>
// svhn_mat.hpp defines DTN_HAVE_MATIO (and includes matio.h) where the build links libmatio.

#include "helpers.hpp"

using namespace dtn_test;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
double mean_pixel(const dtn::data::ImageSet& s) {
  double sum = 0;
  for (std::uint8_t p : s.pixels) sum += p;
  return sum / static_cast<double>(s.pixels.size()) / 255.0;
}
}  // namespace

TEST_CASE("real data: MNIST train and test") {
  const std::string dir = data_dir_or_skip() + "/mnist";
  auto t0 = std::chrono::steady_clock::now();
  const auto train = dtn::data::load_mnist(dir, "train");
  MESSAGE("MNIST train loaded in " << seconds_since(t0) << " s");
  const auto test = dtn::data::load_mnist(dir, "test");
  REQUIRE(train.n == 60000);
  REQUIRE(test.n == 10000);
  CHECK(train.c == 1);
  CHECK(train.h == 28);
  CHECK(train.w == 28);
  CHECK_NOTHROW(train.validate());
  CHECK_NOTHROW(test.validate());
  // Published facts about MNIST, independent of this code: the per-digit counts of both splits,
  // the first ten labels of each, and the mean pixel intensity of train, 0.1307 (the constant
  // every MNIST normalisation uses; the exact value is 0.13066).
  const std::vector<std::size_t> train_hist = {5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949};
  const std::vector<std::size_t> test_hist = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
  CHECK(dtn::data::label_histogram(train) == train_hist);
  CHECK(dtn::data::label_histogram(test) == test_hist);
  const std::vector<std::uint8_t> train_first = {5, 0, 4, 1, 9, 2, 1, 3, 1, 4};
  const std::vector<std::uint8_t> test_first = {7, 2, 1, 0, 4, 1, 4, 9, 5, 9};
  CHECK(std::vector<std::uint8_t>(train.labels.begin(), train.labels.begin() + 10) == train_first);
  CHECK(std::vector<std::uint8_t>(test.labels.begin(), test.labels.begin() + 10) == test_first);
  // 0.13066 is the published mean to 5 digits; 5e-5 allows for that rounding only.
  CHECK(std::fabs(mean_pixel(train) - 0.13066) < 5e-5);
}

TEST_CASE("real data: synthdigits (SYNTHETIC stand-in in SVHN's format) train and test") {
  const std::string dir = data_dir_or_skip() + "/synthdigits";
  auto t0 = std::chrono::steady_clock::now();
  const auto train = dtn::data::load_svhn(dir, "train");
  MESSAGE("synthdigits train loaded in " << seconds_since(t0) << " s");
  const auto test = dtn::data::load_svhn(dir, "test");
  REQUIRE(train.n == 30000);
  REQUIRE(test.n == 10000);
  for (const auto* s : {&train, &test}) {
    CHECK(s->c == 3);
    CHECK(s->h == 32);
    CHECK(s->w == 32);
    CHECK_NOTHROW(s->validate());  // labels 0..9, buffer sizes
    // Every digit occurs (at least 5% of the set each; a uniform draw gives 10%).
    for (std::size_t count : dtn::data::label_histogram(*s)) CHECK(count > s->size() / 20);
  }
}

#if defined(DTN_HAVE_MATIO)
TEST_CASE("real data: the SVHN sample crops, written as a format-2 .mat, read back in HWC order") {
  // svhn_sample holds 7 real SVHN crops as raw N x H x W x C bytes. Writing them into a .mat in
  // SVHN's column-major layout and reading them back checks the reader's reordering on real
  // pictures against an independent layout.
  const std::string dir = data_dir_or_skip() + "/svhn_sample";
  const auto hwc = read_bytes(dir + "/images_u8_N32x32x3_HWC.bin");
  const auto labels = read_bytes(dir + "/labels_u8.bin");
  REQUIRE(hwc.size() == 7u * 32 * 32 * 3);
  REQUIRE(labels.size() == 7u);
  std::vector<std::uint8_t> colmajor(hwc.size());
  for (std::size_t n = 0; n < 7; ++n)
    for (std::size_t r = 0; r < 32; ++r)
      for (std::size_t c = 0; c < 32; ++c)
        for (std::size_t ch = 0; ch < 3; ++ch)
          colmajor[r + 32 * (c + 32 * (ch + 3 * n))] = hwc[((n * 32 + r) * 32 + c) * 3 + ch];
  std::vector<double> y(7);
  for (std::size_t i = 0; i < 7; ++i) y[i] = labels[i] == 0 ? 10.0 : labels[i];
  TempDir tmp;
  const std::string f = tmp.file("test_32x32.mat");
  mat_t* m = Mat_CreateVer(f.c_str(), nullptr, MAT_FT_MAT5);
  REQUIRE(m != nullptr);
  std::size_t xd[4] = {32, 32, 3, 7}, yd[2] = {7, 1};
  matvar_t* xv = Mat_VarCreate("X", MAT_C_UINT8, MAT_T_UINT8, 4, xd, colmajor.data(), MAT_F_DONT_COPY_DATA);
  matvar_t* yv = Mat_VarCreate("y", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, yd, y.data(), MAT_F_DONT_COPY_DATA);
  REQUIRE(Mat_VarWrite(m, xv, MAT_COMPRESSION_ZLIB) == 0);
  REQUIRE(Mat_VarWrite(m, yv, MAT_COMPRESSION_ZLIB) == 0);
  Mat_VarFree(xv);
  Mat_VarFree(yv);
  Mat_Close(m);
  const auto set = dtn::data::load_svhn(tmp.path.string(), "test");
  REQUIRE(set.n == 7);
  CHECK(set.labels == labels);
  std::size_t bad = 0;
  for (std::size_t n = 0; n < 7; ++n)
    for (std::size_t ch = 0; ch < 3; ++ch)
      for (std::size_t r = 0; r < 32; ++r)
        for (std::size_t c = 0; c < 32; ++c)
          bad += set.pixels[((n * 3 + ch) * 32 + r) * 32 + c] != hwc[((n * 32 + r) * 32 + c) * 3 + ch];
  CHECK(bad == 0);
}

TEST_CASE("real data: dtn's zlib-only MAT reader reads synthdigits exactly as libmatio does") {
  const std::string dir = data_dir_or_skip() + "/synthdigits";
  for (const char* split : {"test", "train"}) {
    const std::string f = dir + "/" + split + "_32x32.mat";
    const auto a = dtn::data::read_svhn_mat(f);
    const auto b = dtn::data::read_svhn_mat_native(f);
    CHECK(a.n == b.n);
    CHECK(a.pixels == b.pixels);
    CHECK(a.labels == b.labels);
  }
}
#endif
