// Writes the small seed corpora of the data-reader fuzz targets (each file < 10 KB):
//   fuzz/corpus/idx/: valid IDX image and label files, raw and gzip, and broken ones;
//   fuzz/corpus/mat/: valid SVHN-format .mat files (stored and deflated), and broken ones.
// Build and run from the repository root:
//   g++ -std=c++17 -Iinclude fuzz/make_data_seeds.cpp -o /tmp/make_data_seeds -lz -lmatio
//   /tmp/make_data_seeds fuzz/corpus
#include <matio.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {
using Bytes = std::vector<std::uint8_t>;

void put(const std::string& path, const Bytes& b) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(b.data(), 1, b.size(), f) != b.size() || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
}
Bytes get(const std::string& path) {
  Bytes b;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) std::exit(1);
  int ch;
  while ((ch = std::fgetc(f)) != EOF) b.push_back(static_cast<std::uint8_t>(ch));
  std::fclose(f);
  return b;
}
void be32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}
Bytes gz(const Bytes& in) {
  z_stream zs;
  std::memset(&zs, 0, sizeof zs);
  deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  Bytes out(deflateBound(&zs, static_cast<uLong>(in.size())) + 32);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}
Bytes images(std::uint32_t n, std::uint32_t h, std::uint32_t w) {
  Bytes b;
  be32(b, 2051);
  be32(b, n);
  be32(b, h);
  be32(b, w);
  for (std::uint32_t i = 0; i < n * h * w; ++i) b.push_back(static_cast<std::uint8_t>(i * 17));
  return b;
}
Bytes labels(std::uint32_t n, std::uint8_t bad = 0) {
  Bytes b;
  be32(b, 2049);
  be32(b, n);
  for (std::uint32_t i = 0; i < n; ++i) b.push_back(static_cast<std::uint8_t>(i % 10));
  if (bad && n) b.back() = bad;
  return b;
}

void mat(const std::string& path, std::size_t n, matio_compression comp, bool with_y = true,
         matio_classes ycls = MAT_C_DOUBLE, double label = 3) {
  mat_t* m = Mat_CreateVer(path.c_str(), nullptr, MAT_FT_MAT5);
  if (!m) std::exit(1);
  std::size_t xd[4] = {32, 32, 3, n}, yd[2] = {n, 1};
  Bytes x(32 * 32 * 3 * n);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<std::uint8_t>(i * 7);
  matvar_t* xv = Mat_VarCreate("X", MAT_C_UINT8, MAT_T_UINT8, n == 1 ? 3 : 4, xd, x.data(), MAT_F_DONT_COPY_DATA);
  Mat_VarWrite(m, xv, comp);
  Mat_VarFree(xv);
  if (with_y) {
    std::vector<double> yd64(n, label);
    std::vector<std::uint8_t> y8(n, static_cast<std::uint8_t>(label));
    matvar_t* yv = ycls == MAT_C_DOUBLE
                       ? Mat_VarCreate("y", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, yd, yd64.data(), MAT_F_DONT_COPY_DATA)
                       : Mat_VarCreate("y", MAT_C_UINT8, MAT_T_UINT8, 2, yd, y8.data(), MAT_F_DONT_COPY_DATA);
    Mat_VarWrite(m, yv, comp);
    Mat_VarFree(yv);
  }
  Mat_Close(m);
}
}  // namespace

int main(int argc, char** argv) {
  const std::string root = argc > 1 ? argv[1] : "fuzz/corpus";
  const std::string idx = root + "/idx/", mdir = root + "/mat/";
  put(idx + "images_3x28x28", images(3, 28, 28));
  put(idx + "images_5x4x6.gz", gz(images(5, 4, 6)));
  put(idx + "labels_20", labels(20));
  put(idx + "labels_20.gz", gz(labels(20)));
  put(idx + "labels_bad_value", labels(8, 11));
  Bytes cut = images(2, 8, 8);
  cut.resize(cut.size() - 9);
  put(idx + "images_truncated", cut);
  Bytes gcut = gz(images(4, 10, 10));
  gcut.resize(gcut.size() / 2);
  put(idx + "images_truncated.gz", gcut);
  Bytes two = gz(images(1, 2, 2));
  Bytes two_b = gz(labels(3));
  two.insert(two.end(), two_b.begin(), two_b.end());
  put(idx + "two_members.gz", two);

  mat(mdir + "two_stored.mat", 2, MAT_COMPRESSION_NONE);
  mat(mdir + "two_deflated_u8y.mat", 2, MAT_COMPRESSION_ZLIB, true, MAT_C_UINT8, 10);
  mat(mdir + "one_rank3.mat", 1, MAT_COMPRESSION_ZLIB);
  mat(mdir + "no_y.mat", 1, MAT_COMPRESSION_NONE, false);
  mat(mdir + "bad_label.mat", 2, MAT_COMPRESSION_ZLIB, true, MAT_C_DOUBLE, 0);
  Bytes m = get(mdir + "two_stored.mat");
  m.resize(m.size() - 1000);
  put(mdir + "truncated.mat", m);
  return 0;
}
