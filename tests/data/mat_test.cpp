// SVHN format-2 .mat reader on files the tests write with matio (compressed and not).
#include <matio.h>

#include <dtn/data/svhn_mat.hpp>

#include "helpers.hpp"

using namespace dtn_test;

namespace {

struct MatVarSpec {
  std::string name;
  matio_classes cls;
  matio_types type;
  std::vector<std::size_t> dims;
  std::vector<std::uint8_t> bytes;  // raw element bytes, column-major
};

void write_mat(const std::string& path, const std::vector<MatVarSpec>& vars, matio_compression comp) {
  mat_t* m = Mat_CreateVer(path.c_str(), nullptr, MAT_FT_MAT5);
  REQUIRE(m != nullptr);
  for (const auto& v : vars) {
    std::vector<std::size_t> dims = v.dims;
    std::vector<std::uint8_t> bytes = v.bytes;
    matvar_t* mv = Mat_VarCreate(v.name.c_str(), v.cls, v.type, static_cast<int>(dims.size()), dims.data(),
                                 bytes.empty() ? nullptr : bytes.data(), MAT_F_DONT_COPY_DATA);
    REQUIRE(mv != nullptr);
    REQUIRE(Mat_VarWrite(m, mv, comp) == 0);
    Mat_VarFree(mv);
  }
  REQUIRE(Mat_Close(m) == 0);
}

// X(row, col, ch, n) = a value that encodes all four indices (mod 256), column-major.
std::uint8_t x_value(std::size_t r, std::size_t c, std::size_t ch, std::size_t n) {
  return static_cast<std::uint8_t>((r * 1 + c * 37 + ch * 101 + n * 53) & 0xff);
}

MatVarSpec make_x(std::size_t H, std::size_t W, std::size_t C, std::size_t N) {
  MatVarSpec x{"X", MAT_C_UINT8, MAT_T_UINT8, {H, W, C, N}, {}};
  x.bytes.resize(H * W * C * N);
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t ch = 0; ch < C; ++ch)
      for (std::size_t c = 0; c < W; ++c)
        for (std::size_t r = 0; r < H; ++r) x.bytes[r + H * (c + W * (ch + C * n))] = x_value(r, c, ch, n);
  return x;
}

template <class T>
MatVarSpec make_y(const std::vector<T>& labels, matio_classes cls, matio_types type, bool row = false) {
  MatVarSpec y{"y", cls, type, row ? std::vector<std::size_t>{1, labels.size()} : std::vector<std::size_t>{labels.size(), 1}, {}};
  y.bytes.resize(labels.size() * sizeof(T));
  std::memcpy(y.bytes.data(), labels.data(), y.bytes.size());
  return y;
}

std::vector<double> svhn_labels(std::size_t n) {
  std::vector<double> l(n);
  for (std::size_t i = 0; i < n; ++i) l[i] = static_cast<double>(i % 10 + 1);  // 1..10
  return l;
}

void check_set(const dtn::data::ImageSet& s, std::size_t N, std::size_t H = 32, std::size_t W = 32) {
  REQUIRE(s.n == static_cast<int>(N));
  REQUIRE(s.c == 3);
  REQUIRE(s.h == static_cast<int>(H));
  REQUIRE(s.w == static_cast<int>(W));
  REQUIRE(s.pixels.size() == N * 3 * H * W);
  std::size_t bad = 0;
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t ch = 0; ch < 3; ++ch)
      for (std::size_t r = 0; r < H; ++r)
        for (std::size_t c = 0; c < W; ++c)
          bad += s.pixels[((n * 3 + ch) * H + r) * W + c] != x_value(r, c, ch, n);
  CHECK(bad == 0);
  for (std::size_t i = 0; i < N; ++i) CHECK(s.labels[i] == static_cast<std::uint8_t>((i % 10 + 1) % 10));
}

}  // namespace

TEST_CASE("svhn mat: X column-major 32x32x3xN becomes NCHW, labels 10 -> 0, compressed or not") {
  const std::size_t N = 23;
  for (matio_compression comp : {MAT_COMPRESSION_NONE, MAT_COMPRESSION_ZLIB}) {
    CAPTURE(static_cast<int>(comp));
    TempDir dir;
    // The official files hold y as double; synthdigits holds uint8: both are read.
    write_mat(dir.file("train_32x32.mat"), {make_x(32, 32, 3, N), make_y(svhn_labels(N), MAT_C_DOUBLE, MAT_T_DOUBLE)},
              comp);
    check_set(dtn::data::load_svhn(dir.path.string(), "train"), N);
    std::vector<std::uint8_t> l8(N);
    for (std::size_t i = 0; i < N; ++i) l8[i] = static_cast<std::uint8_t>(i % 10 + 1);
    write_mat(dir.file("test_32x32.mat"), {make_y(l8, MAT_C_UINT8, MAT_T_UINT8, true), make_x(32, 32, 3, N)}, comp);
    check_set(dtn::data::load_svhn(dir.path.string(), "test"), N);
  }
}

// Labels of every real numeric class MATLAB, scipy.io.savemat or matio may write (scipy keeps
// the array's dtype: int64 for a NumPy integer array, single for float32).
template <class T>
void labels_of_class(matio_classes cls, matio_types type) {
  const std::size_t N = 13;
  std::vector<T> l(N);
  for (std::size_t i = 0; i < N; ++i) l[i] = static_cast<T>(i % 10 + 1);
  for (matio_compression comp : {MAT_COMPRESSION_NONE, MAT_COMPRESSION_ZLIB}) {
    CAPTURE(static_cast<int>(comp));
    TempDir dir;
    const std::string f = dir.file("a.mat");
    write_mat(f, {make_x(32, 32, 3, N), make_y(l, cls, type)}, comp);
    check_set(dtn::data::read_svhn_mat(f), N);
    // Out of range in that class: 11, and 0 (SVHN's labels are 1..10).
    for (const T bad : {T(11), T(0)}) {
      std::vector<T> lb = l;
      lb[N - 1] = bad;
      write_mat(f, {make_x(32, 32, 3, N), make_y(lb, cls, type)}, comp);
      require_io_error([&] { dtn::data::read_svhn_mat(f); }, {f, "variable y", "index 12", "1..10"});
    }
  }
}

TEST_CASE("svhn mat: labels of every real numeric class") {
  SUBCASE("int8") { labels_of_class<std::int8_t>(MAT_C_INT8, MAT_T_INT8); }
  SUBCASE("uint8") { labels_of_class<std::uint8_t>(MAT_C_UINT8, MAT_T_UINT8); }
  SUBCASE("int16") { labels_of_class<std::int16_t>(MAT_C_INT16, MAT_T_INT16); }
  SUBCASE("uint16") { labels_of_class<std::uint16_t>(MAT_C_UINT16, MAT_T_UINT16); }
  SUBCASE("int32") { labels_of_class<std::int32_t>(MAT_C_INT32, MAT_T_INT32); }
  SUBCASE("uint32") { labels_of_class<std::uint32_t>(MAT_C_UINT32, MAT_T_UINT32); }
  SUBCASE("int64") { labels_of_class<std::int64_t>(MAT_C_INT64, MAT_T_INT64); }
  SUBCASE("uint64") { labels_of_class<std::uint64_t>(MAT_C_UINT64, MAT_T_UINT64); }
  SUBCASE("single") { labels_of_class<float>(MAT_C_SINGLE, MAT_T_SINGLE); }
  SUBCASE("double") { labels_of_class<double>(MAT_C_DOUBLE, MAT_T_DOUBLE); }
}

TEST_CASE("svhn mat: non-square images and a single image stored as rank 3") {
  TempDir dir;
  const std::string f = dir.file("a.mat");
  write_mat(f, {make_x(5, 7, 3, 4), make_y(svhn_labels(4), MAT_C_DOUBLE, MAT_T_DOUBLE)}, MAT_COMPRESSION_ZLIB);
  check_set(dtn::data::read_svhn_mat(f), 4, 5, 7);
  MatVarSpec x1 = make_x(32, 32, 3, 1);
  x1.dims = {32, 32, 3};  // MATLAB drops the trailing singleton dimension
  write_mat(f, {x1, make_y(svhn_labels(1), MAT_C_DOUBLE, MAT_T_DOUBLE)}, MAT_COMPRESSION_NONE);
  check_set(dtn::data::read_svhn_mat(f), 1);
}

TEST_CASE("svhn mat: malformed files raise io_error naming file and variable") {
  TempDir dir;
  const std::string f = dir.file("bad_32x32.mat");
  const std::size_t N = 6;
  const auto y = make_y(svhn_labels(N), MAT_C_DOUBLE, MAT_T_DOUBLE);
  auto read = [&] { dtn::data::read_svhn_mat(f); };

  SUBCASE("missing file") { require_io_error(read, {f, "no such file"}); }
  SUBCASE("not a .mat file") {
    write_bytes(f, std::vector<std::uint8_t>(300, 'x'));
    require_io_error(read, {f, "MAT"});
  }
  SUBCASE("empty file") {
    write_bytes(f, {});
    require_io_error(read, {f});
  }
  SUBCASE("X missing") {
    write_mat(f, {y}, MAT_COMPRESSION_NONE);
    require_io_error(read, {f, "variable X not found"});
  }
  SUBCASE("y missing") {
    write_mat(f, {make_x(32, 32, 3, N)}, MAT_COMPRESSION_ZLIB);
    require_io_error(read, {f, "variable y not found"});
  }
  SUBCASE("X of class double") {
    MatVarSpec x{"X", MAT_C_DOUBLE, MAT_T_DOUBLE, {32, 32, 3, N}, std::vector<std::uint8_t>(32 * 32 * 3 * N * 8, 0)};
    write_mat(f, {x, y}, MAT_COMPRESSION_NONE);
    require_io_error(read, {f, "variable X", "uint8", "double"});
  }
  SUBCASE("X of rank 2") {
    MatVarSpec x = make_x(32, 32, 3, N);
    x.dims = {32 * 32, 3 * N};
    write_mat(f, {x, y}, MAT_COMPRESSION_NONE);
    require_io_error(read, {f, "variable X", "rank 4", "1024x18"});
  }
  SUBCASE("X with one channel") {
    MatVarSpec x = make_x(32, 32, 1, 3 * N);
    x.dims = {32, 32, 1, 3 * N};
    write_mat(f, {x, y}, MAT_COMPRESSION_NONE);
    require_io_error(read, {f, "variable X", "32x32x3xN", "32x32x1x18"});
  }
  SUBCASE("y count differs from X") {
    write_mat(f, {make_x(32, 32, 3, N + 1), y}, MAT_COMPRESSION_ZLIB);
    require_io_error(read, {f, "variable y", "7x1", "6x1"});
  }
  SUBCASE("y not a vector") {
    MatVarSpec y2 = y;
    y2.dims = {2, 3};
    write_mat(f, {make_x(32, 32, 3, N), y2}, MAT_COMPRESSION_NONE);
    require_io_error(read, {f, "variable y", "2x3"});
  }
  SUBCASE("y of class char") {
    MatVarSpec y2{"y", MAT_C_CHAR, MAT_T_UINT8, {N, 1}, std::vector<std::uint8_t>(N, '1')};
    write_mat(f, {make_x(32, 32, 3, N), y2}, MAT_COMPRESSION_NONE);
    require_io_error(read, {f, "variable y", "char"});
  }
  SUBCASE("label 0") {
    auto l = svhn_labels(N);
    l[3] = 0;
    write_mat(f, {make_x(32, 32, 3, N), make_y(l, MAT_C_DOUBLE, MAT_T_DOUBLE)}, MAT_COMPRESSION_NONE);
    require_io_error(read, {f, "variable y", "index 3", "1..10"});
  }
  SUBCASE("label 11") {
    std::vector<std::uint8_t> l(N, 1);
    l[5] = 11;
    write_mat(f, {make_x(32, 32, 3, N), make_y(l, MAT_C_UINT8, MAT_T_UINT8)}, MAT_COMPRESSION_ZLIB);
    require_io_error(read, {f, "variable y", "index 5", "11"});
  }
  SUBCASE("non-integer label") {
    auto l = svhn_labels(N);
    l[0] = 2.5;
    write_mat(f, {make_x(32, 32, 3, N), make_y(l, MAT_C_DOUBLE, MAT_T_DOUBLE)}, MAT_COMPRESSION_NONE);
    require_io_error(read, {f, "variable y", "index 0", "2.5"});
  }
}

TEST_CASE("svhn mat: headers that claim more than the file holds are refused before matio reads them") {
  TempDir dir;
  const std::string good = dir.file("good.mat"), f = dir.file("patched.mat");
  // Stored (not deflated) so the header bytes can be patched in place: X is the first element at
  // byte 128; its array flags data at 128 + 16, its dimension tag at 128 + 24.
  write_mat(good, {make_x(32, 32, 3, 2), make_y(svhn_labels(2), MAT_C_DOUBLE, MAT_T_DOUBLE)}, MAT_COMPRESSION_NONE);
  const auto bytes = read_bytes(good);
  REQUIRE(bytes.size() > 200);
  auto patch32 = [&](std::size_t at, std::uint32_t v) {
    auto b = bytes;
    for (int i = 0; i < 4; ++i) b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
    write_bytes(f, b);
  };
  auto read = [&] { dtn::data::read_svhn_mat(f); };
  patch32(128 + 28, 0x7ffffff0u);  // a dimension list of 2 GB
  require_io_error(read, {f, "element at byte 128", "dimension list"});
  patch32(128 + 16, 2);  // class 2: a struct
  require_io_error(read, {f, "element at byte 128", "array class 2"});
  patch32(128, 9);  // top-level element type 9 (miDOUBLE): not a matrix
  require_io_error(read, {f, "element at byte 128", "found type 9"});
  patch32(124, 0x4d490200);  // version 0x0200: v7.3 (HDF5)
  require_io_error(read, {f, "v7.3"});
  write_bytes(f, std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 100));
  require_io_error(read, {f, "128-byte header", "100 bytes"});
}

TEST_CASE("svhn mat: truncated files raise io_error, never garbage") {
  const std::size_t N = 40;
  for (matio_compression comp : {MAT_COMPRESSION_NONE, MAT_COMPRESSION_ZLIB}) {
    TempDir dir;
    const std::string good = dir.file("good.mat");
    // y first, X last: a cut inside X leaves the header and y intact, so only the X data read can
    // notice it.
    write_mat(good, {make_y(svhn_labels(N), MAT_C_DOUBLE, MAT_T_DOUBLE), make_x(32, 32, 3, N)}, comp);
    const auto bytes = read_bytes(good);
    for (double frac : {0.99, 0.9, 0.5, 0.1, 0.01}) {
      CAPTURE(static_cast<int>(comp));
      CAPTURE(frac);
      const std::string f = dir.file("cut.mat");
      write_bytes(f, std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() * frac)));
      require_io_error([&] { dtn::data::read_svhn_mat(f); }, {f});
    }
  }
}

TEST_CASE("svhn mat: unknown split is an argument error") {
  CHECK_THROWS_AS(dtn::data::load_svhn("/nonexistent", "valid"), dtn::argument_error);
  require_io_error([] { dtn::data::load_svhn("/nonexistent-dtn-dir", "extra"); },
                   {"/nonexistent-dtn-dir/extra_32x32.mat"});
}
