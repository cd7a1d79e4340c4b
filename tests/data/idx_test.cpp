// MNIST IDX reader on files the tests write: raw and gzip, and every malformed case.
#include <dtn/data/idx.hpp>

#include "helpers.hpp"

using namespace dtn_test;

namespace {
// n images of h x w with distinct, position-dependent pixel values; labels i % 10.
std::vector<std::uint8_t> make_pixels(std::size_t n, std::size_t h, std::size_t w) {
  std::vector<std::uint8_t> p(n * h * w);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::uint8_t>((i * 7 + i / 13) & 0xff);
  return p;
}
std::vector<std::uint8_t> make_labels(std::size_t n) {
  std::vector<std::uint8_t> l(n);
  for (std::size_t i = 0; i < n; ++i) l[i] = static_cast<std::uint8_t>((i * 3) % 10);
  return l;
}
}  // namespace

TEST_CASE("idx: raw and gzip files read back exactly, both through load_mnist") {
  const std::size_t n = 37, h = 28, w = 28;
  const auto pixels = make_pixels(n, h, w);
  const auto labels = make_labels(n);
  for (bool gz : {false, true}) {
    CAPTURE(gz);
    TempDir dir;
    const std::string sfx = gz ? ".gz" : "";
    auto im = idx_images(n, h, w, pixels), lb = idx_labels(labels);
    write_bytes(dir.file("t10k-images-idx3-ubyte" + sfx), gz ? gzip(im) : im);
    write_bytes(dir.file("t10k-labels-idx1-ubyte" + sfx), gz ? gzip(lb) : lb);
    const dtn::data::ImageSet set = dtn::data::load_mnist(dir.path.string(), "test");
    CHECK(set.n == static_cast<int>(n));
    CHECK(set.c == 1);
    CHECK(set.h == 28);
    CHECK(set.w == 28);
    CHECK(set.pixels == pixels);
    CHECK(set.labels == labels);
    CHECK_NOTHROW(set.validate());
  }
}

TEST_CASE("idx: non-square images and a multi-member gzip stream") {
  const auto pixels = make_pixels(5, 3, 4);
  auto raw = idx_images(5, 3, 4, pixels);
  // Split into two gzip members: gzip -c a b > f concatenates like this.
  std::vector<std::uint8_t> first(raw.begin(), raw.begin() + 10), second(raw.begin() + 10, raw.end());
  auto gz = gzip(first);
  auto gz2 = gzip(second);
  gz.insert(gz.end(), gz2.begin(), gz2.end());
  const auto im = dtn::data::parse_idx_images(gz.data(), gz.size(), "two-members.gz");
  CHECK(im.n == 5);
  CHECK(im.h == 3);
  CHECK(im.w == 4);
  CHECK(im.pixels == pixels);
}

TEST_CASE("idx: a raw and a gzip train split may be mixed, and missing files are named") {
  TempDir dir;
  const auto pixels = make_pixels(4, 28, 28);
  write_bytes(dir.file("train-images-idx3-ubyte"), idx_images(4, 28, 28, pixels));
  write_bytes(dir.file("train-labels-idx1-ubyte.gz"), gzip(idx_labels(make_labels(4))));
  CHECK(dtn::data::load_mnist(dir.path.string(), "train").n == 4);
  require_io_error([&] { dtn::data::load_mnist(dir.path.string(), "test"); },
                   {"t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"});
  CHECK_THROWS_AS(dtn::data::load_mnist(dir.path.string(), "validation"), dtn::argument_error);
}

TEST_CASE("idx: malformed files raise io_error naming the file, expected and found") {
  TempDir dir;
  const auto pixels = make_pixels(10, 28, 28);
  const auto good = idx_images(10, 28, 28, pixels);
  const std::string f = dir.file("bad-images-idx3-ubyte");
  auto read = [&] { dtn::data::read_idx_images(f); };

  SUBCASE("missing file") { require_io_error(read, {f, "cannot open"}); }
  SUBCASE("empty file") {
    write_bytes(f, {});
    require_io_error(read, {f, "truncated"});
  }
  SUBCASE("wrong magic: a label file given as images") {
    write_bytes(f, idx_labels(make_labels(10)));
    require_io_error(read, {f, "magic", "2051", "2049"});
  }
  SUBCASE("truncated header") {
    write_bytes(f, std::vector<std::uint8_t>(good.begin(), good.begin() + 10));
    require_io_error(read, {f, "truncated IDX header", "16", "10"});
  }
  SUBCASE("truncated data") {
    write_bytes(f, std::vector<std::uint8_t>(good.begin(), good.end() - 1));
    require_io_error(read, {f, "10 x 28 x 28", "7840", "7839"});
  }
  SUBCASE("truncated data, gzip") {
    write_bytes(f, gzip(std::vector<std::uint8_t>(good.begin(), good.end() - 100)));
    require_io_error(read, {f, "7840", "7740"});
  }
  SUBCASE("truncated gzip stream") {
    auto gz = gzip(good);
    gz.resize(gz.size() / 2);
    write_bytes(f, gz);
    require_io_error(read, {f, "truncated gzip"});
  }
  SUBCASE("corrupt gzip stream") {
    auto gz = gzip(good);
    for (std::size_t i = 12; i < gz.size() - 8; i += 3) gz[i] ^= 0x5a;
    write_bytes(f, gz);
    require_io_error(read, {f, "gzip"});
  }
  SUBCASE("count larger than the data") {
    write_bytes(f, idx_images(11, 28, 28, pixels));
    require_io_error(read, {f, "11 x 28 x 28", "8624", "7840"});
  }
  SUBCASE("trailing bytes") {
    auto b = good;
    b.push_back(0);
    write_bytes(f, b);
    require_io_error(read, {f, "7840", "7841"});
  }
  SUBCASE("huge dimensions do not overflow the size check") {
    write_bytes(f, idx_images(0x7fffffff, 0x7fffffff, 0x7fffffff, pixels));
    require_io_error(read, {f, "2147483647"});
  }
  SUBCASE("a dimension above 2^31 - 1") {
    write_bytes(f, idx_images(0x80000000u, 1, 1, {}));
    require_io_error(read, {f, "2147483648"});
  }
  SUBCASE("zero-sized images") {
    write_bytes(f, idx_images(10, 0, 28, {}));
    require_io_error(read, {f, "0 x 28"});
  }
}

TEST_CASE("idx: labels above 9 and image/label count mismatch") {
  TempDir dir;
  const std::string li = dir.file("labels-idx1-ubyte");
  auto labels = make_labels(6);
  labels[4] = 10;
  write_bytes(li, idx_labels(labels));
  require_io_error([&] { dtn::data::read_idx_labels(li); }, {li, "index 4", "10", "0..9"});

  const std::string im = dir.file("images-idx3-ubyte");
  write_bytes(im, idx_images(6, 2, 2, make_pixels(6, 2, 2)));
  write_bytes(li, gzip(idx_labels(make_labels(5))));
  require_io_error([&] { dtn::data::load_idx(im, li); }, {im, li, "6 images", "5 labels"});

  const std::string wrong = dir.file("wrong-labels");
  write_bytes(wrong, idx_images(6, 2, 2, make_pixels(6, 2, 2)));
  require_io_error([&] { dtn::data::read_idx_labels(wrong); }, {wrong, "2049", "2051"});
}

TEST_CASE("idx: gunzip guards the output size") {
  const std::vector<std::uint8_t> zeros(1 << 20, 0);
  const auto gz = gzip(zeros);
  CHECK(dtn::data::gunzip(gz.data(), gz.size(), "z.gz").size() == zeros.size());
  require_io_error([&] { dtn::data::gunzip(gz.data(), gz.size(), "z.gz", 1000); }, {"z.gz", "more than 1000"});
  // Bytes after the last member that are not another member.
  auto tail = gz;
  tail.push_back(0x42);
  require_io_error([&] { dtn::data::gunzip(tail.data(), tail.size(), "t.gz"); }, {"t.gz", "1 unexpected bytes"});
}
