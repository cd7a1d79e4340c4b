#pragma once
// SVHN "format 2" reader (cropped 32x32 digits) through libmatio.
//
// The official files (train_32x32.mat, test_32x32.mat, extra_32x32.mat) are MATLAB v5 files with
//   X: uint8, 32 x 32 x 3 x N, column-major, i.e. X(row, col, channel, n)
//   y: N x 1 labels 1..10 (10 means the digit 0); the official files store double, others uint8.
// read_svhn_mat returns NCHW uint8 with labels 0..9. Every malformed input raises dtn::io_error
// naming the file and the variable, with what was expected and what was found.
//
// Memory: X is read straight into the ImageSet's pixel buffer (Mat_VarReadDataLinear; matio
// inflates compressed variables on the fly) and each image is then reordered in place from
// column-major HxWxC to CHW through one image of scratch: the peak is 1x the uint8 size
// (1.6 GB for SVHN extra). Only a variable of more than 2^31 - 1 elements (matio counts linear
// reads in int; no SVHN file is that large) falls back to Mat_VarRead plus a copy: 2x the uint8
// size at its peak. No float copy is ever made.
//
// Robustness: only MAT v5 files are accepted (SVHN's format; v4 and v7.3/HDF5 files are rejected
// with an io_error). Before matio parses anything, the file's top-level elements and each
// variable's header are checked against the file size (see mat5_check_elements), since matio
// trusts sizes written in the file. Known libmatio 1.5.23 behaviour: when a deflated X is corrupt
// in the middle of its data, Mat_VarReadDataLinear fails (reported here as io_error) and leaks
// its zlib stream copy (about 40 KB per failed read).
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "image_set.hpp"
#include "mat5_native.hpp"
#include "svhn_layout.hpp"

// libmatio is used where it is installed (DTN_NO_MATIO opts out); elsewhere the zlib-only reader
// of mat5_native.hpp reads the same files.
#if __has_include(<matio.h>) && !defined(DTN_NO_MATIO)
#define DTN_HAVE_MATIO 1
#include <matio.h>
#endif

#if defined(DTN_HAVE_MATIO)
namespace dtn {
namespace data {

namespace detail {

struct MatFile {
  mat_t* m = nullptr;
  explicit MatFile(const std::string& path) : m(Mat_Open(path.c_str(), MAT_ACC_RDONLY)) {}
  ~MatFile() {
    if (m) Mat_Close(m);
  }
  MatFile(const MatFile&) = delete;
  MatFile& operator=(const MatFile&) = delete;
};

struct MatVar {
  matvar_t* v = nullptr;
  explicit MatVar(matvar_t* p) : v(p) {}
  ~MatVar() {
    if (v) Mat_VarFree(v);
  }
  MatVar(const MatVar&) = delete;
  MatVar& operator=(const MatVar&) = delete;
};

inline const char* mat_class_name(int c) {
  switch (c) {
    case MAT_C_CELL: return "cell";
    case MAT_C_STRUCT: return "struct";
    case MAT_C_OBJECT: return "object";
    case MAT_C_CHAR: return "char";
    case MAT_C_SPARSE: return "sparse";
    case MAT_C_DOUBLE: return "double";
    case MAT_C_SINGLE: return "single";
    case MAT_C_INT8: return "int8";
    case MAT_C_UINT8: return "uint8";
    case MAT_C_INT16: return "int16";
    case MAT_C_UINT16: return "uint16";
    case MAT_C_INT32: return "int32";
    case MAT_C_UINT32: return "uint32";
    case MAT_C_INT64: return "int64";
    case MAT_C_UINT64: return "uint64";
    case MAT_C_FUNCTION: return "function";
    default: return "unknown";
  }
}

inline std::string mat_dims_str(const matvar_t* v) {
  std::string s;
  for (int i = 0; i < v->rank; ++i) s += (i ? "x" : "") + std::to_string(v->dims[i]);
  return s.empty() ? "(rank 0)" : s;
}

// Elements of a variable, or SIZE_MAX when the product overflows.
inline std::size_t mat_numel(const matvar_t* v) {
  std::size_t n = 1;
  for (int i = 0; i < v->rank; ++i) {
    const std::size_t d = v->dims[i];
    if (d != 0 && n > SIZE_MAX / d) return SIZE_MAX;
    n *= d;
  }
  return n;
}

inline std::size_t mat_class_bytes(int c) {
  switch (c) {
    case MAT_C_DOUBLE: case MAT_C_INT64: case MAT_C_UINT64: return 8;
    case MAT_C_SINGLE: case MAT_C_INT32: case MAT_C_UINT32: return 4;
    case MAT_C_INT16: case MAT_C_UINT16: return 2;
    case MAT_C_INT8: case MAT_C_UINT8: return 1;
    default: return 0;
  }
}

// Element i of a numeric real variable as double (integers up to 2^53 exactly, which covers 1..10).
inline double mat_element(const matvar_t* v, std::size_t i) {
  const unsigned char* p = static_cast<const unsigned char*>(v->data) + i * mat_class_bytes(v->class_type);
  switch (v->class_type) {
    case MAT_C_DOUBLE: { double x; std::memcpy(&x, p, 8); return x; }
    case MAT_C_SINGLE: { float x; std::memcpy(&x, p, 4); return x; }
    case MAT_C_INT64: { std::int64_t x; std::memcpy(&x, p, 8); return static_cast<double>(x); }
    case MAT_C_UINT64: { std::uint64_t x; std::memcpy(&x, p, 8); return static_cast<double>(x); }
    case MAT_C_INT32: { std::int32_t x; std::memcpy(&x, p, 4); return x; }
    case MAT_C_UINT32: { std::uint32_t x; std::memcpy(&x, p, 4); return x; }
    case MAT_C_INT16: { std::int16_t x; std::memcpy(&x, p, 2); return x; }
    case MAT_C_UINT16: { std::uint16_t x; std::memcpy(&x, p, 2); return x; }
    case MAT_C_INT8: { std::int8_t x; std::memcpy(&x, p, 1); return x; }
    case MAT_C_UINT8: return *p;
    default: return NAN;
  }
}


// matio trusts the sizes written inside a file: it does not notice a file cut short inside a
// variable's data (it returns zeros or stale bytes), and it allocates whatever an array header
// claims (a dimension list or a name of gigabytes in a file of a few hundred bytes). So a MAT v5
// file is checked before matio sees it:
//  - after the 128-byte header, each top-level element (8-byte tag: type, byte count; then the
//    data) must be a matrix (miMATRIX) or a deflated matrix (miCOMPRESSED) lying wholly inside
//    the file;
//  - each matrix's header (its first few hundred bytes, inflated when deflated) must be sane: the
//    matrix size fits what its element can hold (a deflated byte gives at most 1032 bytes), the
//    dimension list and name fit inside it, and the class is a numeric or char array (a format-2
//    file holds nothing else; cells and structs would need a full recursive check).
// This costs a few seeks and at most 64 KB of reading per variable. Files that are not v5 (v4,
// v7.3/HDF5) are rejected: SVHN's files are v5, and matio's v4 and HDF5 paths are not checked.
struct Mat5Reader {
  bool le = true;
  std::uint32_t u32(const unsigned char* p) const {
    return le ? (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24)
              : (std::uint32_t(p[3]) | std::uint32_t(p[2]) << 8 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[0]) << 24);
  }
};

// Checks the header of one matrix element: `p` holds its first `avail` bytes (tag included),
// `max_bytes` bounds the matrix's byte count.
inline void mat5_check_matrix_header(const Mat5Reader& r, const unsigned char* p, std::size_t avail,
                                     std::uint64_t max_bytes, const std::string& where) {
  auto bad = [&](const std::string& what) { throw io_error(where + ": " + what + " (corrupt file)"); };
  if (avail < 8) bad("matrix tag cut short");
  if (r.u32(p) != 14) bad("expected a matrix (type 14), found element type " + std::to_string(r.u32(p)));
  const std::uint64_t m = r.u32(p + 4);
  if (m > max_bytes)
    bad("matrix declares " + std::to_string(m) + " bytes, its element can hold at most " + std::to_string(max_bytes));
  if (m == 0) return;  // an empty placeholder matrix
  // Array flags: tag (miUINT32, 8 bytes), then class in the low byte of the first word.
  if (avail < 8 + 16 || m < 16) bad("array flags cut short");
  if (r.u32(p + 8) != 6 || r.u32(p + 12) != 8) bad("malformed array flags");
  const unsigned cls = r.u32(p + 16) & 0xff;
  if (cls < 4 || cls > 15 || cls == 5)
    bad("array class " + std::to_string(cls) + " is not a numeric or char array (format-2 files hold only those)");
  // Dimensions: miINT32, 2..64 of them.
  if (avail < 32 || m < 24) bad("dimensions cut short");
  const std::uint32_t dt = r.u32(p + 24);
  if (dt >> 16) bad("dimension list of fewer than 2 entries");
  const std::uint64_t dn = r.u32(p + 28);
  if (dt != 5 || dn < 8 || dn > 256 || dn % 4) bad("malformed dimension list (" + std::to_string(dn) + " bytes)");
  const std::uint64_t next = 32 + (dn + 7) / 8 * 8;
  if (next > 8 + m) bad("dimension list runs past the matrix");
  // Name: miINT8, either small (in the tag) or at most 4096 bytes.
  if (avail < next + 8) bad("name cut short");
  const std::uint32_t nt = r.u32(p + next);
  if (nt >> 16) {
    if ((nt & 0xffff) != 1 || (nt >> 16) > 4) bad("malformed variable name");
  } else {
    const std::uint64_t nn = r.u32(p + next + 4);
    if (nt != 1 || nn > 4096 || next + 8 + nn > 8 + m) bad("malformed variable name (" + std::to_string(nn) + " bytes)");
  }
}

inline void mat5_check_elements(const std::string& path) {
  Mat5File file = mat5_open(path);
  std::FILE* f = file.fp.get();
  Mat5Reader r;
  r.le = file.le;
  const std::uint64_t size = file.size;
  constexpr std::size_t kHead = 512;  // enough for tag, flags, 64 dimensions and the name tag
  std::vector<unsigned char> buf;
  std::uint64_t pos = 128;
  while (pos < size) {
    unsigned char tag[8];
    if (pos + 8 > size || std::fseek(f, static_cast<long>(pos), SEEK_SET) != 0 || std::fread(tag, 1, 8, f) != 8)
      throw io_error(path + ": truncated MAT file: an element tag at byte " + std::to_string(pos) +
                     " needs 8 bytes, the file ends at " + std::to_string(size));
    const std::uint32_t type = r.u32(tag), nbytes = r.u32(tag + 4);
    const std::string where = path + ": element at byte " + std::to_string(pos);
    if (type != 14 && type != 15)
      throw io_error(where + ": expected a matrix (type 14) or a compressed matrix (type 15), found type " +
                     std::to_string(type) + " (corrupt file)");
    const std::uint64_t next = pos + 8 + nbytes;
    if (next > size)
      throw io_error(path + ": truncated MAT file: the element at byte " + std::to_string(pos) + " declares " +
                     std::to_string(nbytes) + " bytes, expected them before the end of the file at " +
                     std::to_string(size) + ", found " + std::to_string(size - pos - 8));
    if (type == 14) {
      const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kHead - 8, nbytes));
      buf.assign(tag, tag + 8);
      buf.resize(8 + want);
      if (std::fread(buf.data() + 8, 1, want, f) != want) throw io_error(where + ": read error");
      mat5_check_matrix_header(r, buf.data(), buf.size(), nbytes, where);
    } else {
      // Inflate just the start of the stream.
      const std::size_t in_len = static_cast<std::size_t>(std::min<std::uint64_t>(nbytes, 65536));
      std::vector<unsigned char> in(in_len);
      if (std::fread(in.data(), 1, in_len, f) != in_len) throw io_error(where + ": read error");
      buf.assign(kHead, 0);
      z_stream zs;
      std::memset(&zs, 0, sizeof zs);
      if (inflateInit(&zs) != Z_OK) throw io_error(where + ": zlib inflateInit failed");
      zs.next_in = in.data();
      zs.avail_in = static_cast<uInt>(in_len);
      zs.next_out = buf.data();
      zs.avail_out = static_cast<uInt>(kHead);
      const int rc = inflate(&zs, Z_SYNC_FLUSH);
      const std::size_t got = kHead - zs.avail_out;
      inflateEnd(&zs);
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
        throw io_error(where + ": corrupt deflate stream at the start of a compressed variable");
      // zlib's deflate expands by at most 1032:1; 8 bytes of slack for the matrix tag.
      mat5_check_matrix_header(r, buf.data(), got, std::uint64_t(nbytes) * 1032 + 8, where);
    }
    pos = next;
    if (type == 14 /* miMATRIX: data padded to 8 bytes */ && pos % 8 && pos + (8 - pos % 8) <= size) pos += 8 - pos % 8;
  }
}

// y must be real numeric with N elements, N x 1 or 1 x N.
inline void check_labels_header(const matvar_t* yv, const std::string& ywhere, std::size_t N) {
  if (mat_class_bytes(yv->class_type) == 0 || yv->isComplex)
    throw io_error(ywhere + ": expected a real numeric class (double or an integer type), found " +
                   mat_class_name(yv->class_type) + (yv->isComplex ? " complex" : ""));
  if (yv->rank != 2 || (yv->dims[0] != 1 && yv->dims[1] != 1) || mat_numel(yv) != N)
    throw io_error(ywhere + ": expected " + std::to_string(N) + "x1 labels (one per image in X), found " +
                   mat_dims_str(yv));
}

}  // namespace detail

// Reads X and y from a format-2 .mat file. X must be uint8 H x W x 3 x N (32 x 32 for SVHN; other
// sizes are accepted; a file with one image may store 32 x 32 x 3, as MATLAB drops a trailing 1),
// y numeric real with N elements, N x 1 or 1 x N, integer labels 1..10 (10 -> 0).
inline ImageSet read_svhn_mat(const std::string& path) {
  detail::mat5_check_elements(path);
  detail::MatFile file(path);
  if (!file.m) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) throw io_error(path + ": cannot open: no such file");
    throw io_error(path + ": cannot open as a MATLAB .mat file (expected a MAT v5 file, as SVHN's format 2)");
  }

  // ---- X: header first, to check class and shape before any data is read.
  detail::MatVar xinfo(Mat_VarReadInfo(file.m, "X"));
  if (!xinfo.v) throw io_error(path + ": variable X not found (expected uint8 32x32x3xN images)");
  const matvar_t* xv = xinfo.v;
  const std::string xwhere = path + ": variable X";
  if (xv->class_type != MAT_C_UINT8 || xv->isComplex || xv->isLogical)
    throw io_error(xwhere + ": expected class uint8 (real), found " + detail::mat_class_name(xv->class_type) +
                   (xv->isComplex ? " complex" : "") + (xv->isLogical ? " logical" : ""));
  if (xv->rank != 4 && xv->rank != 3)
    throw io_error(xwhere + ": expected rank 4 (32x32x3xN), found rank " + std::to_string(xv->rank) + " (" +
                   detail::mat_dims_str(xv) + ")");
  const std::size_t H = xv->dims[0], W = xv->dims[1], C = xv->dims[2];
  const std::size_t N = xv->rank == 4 ? xv->dims[3] : 1;
  if (C != 3 || H == 0 || W == 0 || H > 65536 || W > 65536)
    throw io_error(xwhere + ": expected dimensions HxWx3xN (32x32x3xN for SVHN), found " + detail::mat_dims_str(xv));
  if (N > static_cast<std::size_t>(INT_MAX))
    throw io_error(xwhere + ": " + std::to_string(N) + " images, expected at most " + std::to_string(INT_MAX));
  const std::size_t ss = H * W * C;
  if (N != 0 && ss > SIZE_MAX / N) throw io_error(xwhere + ": size overflows (" + detail::mat_dims_str(xv) + ")");
  const std::size_t total = N * ss;
  // Before allocating: the file must be able to hold that much. Stored, X takes `total` bytes of
  // the file; deflated, at most 1032 bytes come out of one (zlib's maximum ratio).
  {
    std::error_code ec;
    const std::uintmax_t fsize = std::filesystem::file_size(path, ec);
    const std::uintmax_t ratio = xv->compression == MAT_COMPRESSION_NONE ? 1 : 1032;
    if (!ec && total / ratio > fsize)
      throw io_error(xwhere + ": " + detail::mat_dims_str(xv) + " = " + std::to_string(total) +
                     " bytes cannot fit in a file of " + std::to_string(fsize) + " bytes (truncated or corrupt file)");
  }

  // ---- y: header first (matio allocates whatever a header claims), then the data.
  const std::string ywhere = path + ": variable y";
  {
    detail::MatVar yinfo(Mat_VarReadInfo(file.m, "y"));
    if (!yinfo.v) throw io_error(path + ": variable y not found (expected " + std::to_string(N) + "x1 labels 1..10)");
    detail::check_labels_header(yinfo.v, ywhere, N);
  }
  detail::MatVar yvar(Mat_VarRead(file.m, "y"));
  if (!yvar.v) throw io_error(ywhere + ": cannot read its data (truncated or corrupt file)");
  const matvar_t* yv = yvar.v;
  detail::check_labels_header(yv, ywhere, N);
  const std::size_t yb = detail::mat_class_bytes(yv->class_type);
  if (N != 0 && (!yv->data || yv->data_size <= 0 || static_cast<std::size_t>(yv->data_size) != yb || yv->nbytes / yb < N))
    throw io_error(ywhere + ": data missing or shorter than its " + std::to_string(N) + " elements");

  ImageSet set;
  set.n = static_cast<int>(N);
  set.c = static_cast<int>(C);
  set.h = static_cast<int>(H);
  set.w = static_cast<int>(W);
  set.labels.resize(N);
  for (std::size_t i = 0; i < N; ++i) set.labels[i] = detail::svhn_digit(detail::mat_element(yv, i), i, ywhere);

  // ---- X data, straight into the pixel buffer (see the memory note at the top).
  if (total > 0) {
    if (total <= static_cast<std::size_t>(INT_MAX)) {
      set.pixels.resize(total);
      if (Mat_VarReadDataLinear(file.m, xinfo.v, set.pixels.data(), 0, 1, static_cast<int>(total)) != 0)
        throw io_error(xwhere + ": cannot read its " + std::to_string(total) + " bytes (truncated or corrupt file)");
    } else {
      detail::MatVar xfull(Mat_VarRead(file.m, "X"));
      if (!xfull.v || !xfull.v->data || xfull.v->nbytes < total)
        throw io_error(xwhere + ": cannot read its " + std::to_string(total) + " bytes (truncated or corrupt file)");
      const std::uint8_t* src = static_cast<const std::uint8_t*>(xfull.v->data);
      set.pixels.assign(src, src + total);
    }
    detail::hwc_colmajor_to_chw(set.pixels.data(), N, C, H, W);
  }
  return set;
}

#else
namespace dtn {
namespace data {
inline ImageSet read_svhn_mat(const std::string& path) { return read_svhn_mat_native(path); }
#endif  // DTN_HAVE_MATIO

// SVHN split from `dir`: "train", "test" or "extra" reads <split>_32x32.mat. Also reads the
// SYNTHETIC stand-ins in SVHN's format (e.g. /work/shared/data/synthdigits) unchanged.
inline ImageSet load_svhn(const std::string& dir, const std::string& split) {
  if (split != "train" && split != "test" && split != "extra")
    throw argument_error("dtn::data::load_svhn: split \"" + split + "\", expected \"train\", \"test\" or \"extra\"");
  return read_svhn_mat((std::filesystem::path(dir) / (split + "_32x32.mat")).string());
}

}  // namespace data
}  // namespace dtn
