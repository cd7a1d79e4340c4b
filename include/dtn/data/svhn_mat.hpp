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
#include <matio.h>

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

// In place, per image: column-major (row fastest) H x W x C to C x H x W row-major.
inline void hwc_colmajor_to_chw(std::uint8_t* pixels, std::size_t n, std::size_t c, std::size_t h, std::size_t w) {
  const std::size_t plane = h * w, ss = c * plane;
  std::vector<std::uint8_t> scratch(ss);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t* img = pixels + i * ss;
    std::memcpy(scratch.data(), img, ss);
    for (std::size_t ch = 0; ch < c; ++ch) {
      const std::uint8_t* src = scratch.data() + ch * plane;  // src[col * h + row]
      std::uint8_t* dst = img + ch * plane;                    // dst[row * w + col]
      for (std::size_t row = 0; row < h; ++row)
        for (std::size_t col = 0; col < w; ++col) dst[row * w + col] = src[col * h + row];
    }
  }
}

// matio does not notice a file cut short inside a variable's data (it returns zeros or stale
// bytes), so a MAT v5 file is checked first: after the 128-byte header, the top-level elements
// (8-byte tag: type, byte count; then the data) must each lie wholly inside the file. This costs
// a few seeks. Files that are not v5 (v4, v7.3/HDF5) are left to matio.
inline void mat5_check_elements(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return;  // Mat_Open reports it
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  unsigned char hdr[128];
  if (std::fread(hdr, 1, 128, f) != 128) return;  // too short for v5: matio reports it
  const bool le = hdr[126] == 'I' && hdr[127] == 'M', be = hdr[126] == 'M' && hdr[127] == 'I';
  if (!le && !be) return;
  const unsigned version = le ? (hdr[124] | hdr[125] << 8) : (hdr[124] << 8 | hdr[125]);
  if (version != 0x0100) return;
  if (std::fseek(f, 0, SEEK_END) != 0) return;
  const long end = std::ftell(f);
  if (end < 0) return;
  const std::uint64_t size = static_cast<std::uint64_t>(end);
  auto u32 = [&](const unsigned char* p) {
    return le ? (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24)
              : (std::uint32_t(p[3]) | std::uint32_t(p[2]) << 8 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[0]) << 24);
  };
  std::uint64_t pos = 128;
  while (pos < size) {
    unsigned char tag[8];
    if (pos + 8 > size || std::fseek(f, static_cast<long>(pos), SEEK_SET) != 0 || std::fread(tag, 1, 8, f) != 8)
      throw io_error(path + ": truncated MAT file: an element tag at byte " + std::to_string(pos) +
                     " needs 8 bytes, the file ends at " + std::to_string(size));
    const std::uint32_t type = u32(tag), nbytes = u32(tag + 4);
    if (type >> 16) {  // small data element: the data sits in the tag itself
      pos += 8;
      continue;
    }
    const std::uint64_t next = pos + 8 + nbytes;
    if (next > size)
      throw io_error(path + ": truncated MAT file: the element at byte " + std::to_string(pos) + " declares " +
                     std::to_string(nbytes) + " bytes, expected them before the end of the file at " +
                     std::to_string(size) + ", found " + std::to_string(size - pos - 8));
    pos = next;
    if (type == 14 /* miMATRIX: data padded to 8 bytes */ && pos % 8 && pos + (8 - pos % 8) <= size) pos += 8 - pos % 8;
  }
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

  // ---- y: small; read whole.
  detail::MatVar yvar(Mat_VarRead(file.m, "y"));
  if (!yvar.v) throw io_error(path + ": variable y not found (expected " + std::to_string(N) + "x1 labels 1..10)");
  const matvar_t* yv = yvar.v;
  const std::string ywhere = path + ": variable y";
  const std::size_t yb = detail::mat_class_bytes(yv->class_type);
  if (yb == 0 || yv->isComplex)
    throw io_error(ywhere + ": expected a real numeric class (double or an integer type), found " +
                   detail::mat_class_name(yv->class_type) + (yv->isComplex ? " complex" : ""));
  const std::size_t yn = detail::mat_numel(yv);
  if (yv->rank != 2 || (yv->dims[0] != 1 && yv->dims[1] != 1) || yn != N)
    throw io_error(ywhere + ": expected " + std::to_string(N) + "x1 labels (one per image in X), found " +
                   detail::mat_dims_str(yv));
  if (N != 0 && (!yv->data || yv->data_size <= 0 || static_cast<std::size_t>(yv->data_size) != yb || yv->nbytes / yb < N))
    throw io_error(ywhere + ": data missing or shorter than its " + std::to_string(N) + " elements");

  ImageSet set;
  set.n = static_cast<int>(N);
  set.c = static_cast<int>(C);
  set.h = static_cast<int>(H);
  set.w = static_cast<int>(W);
  set.labels.resize(N);
  for (std::size_t i = 0; i < N; ++i) {
    const double l = detail::mat_element(yv, i);
    if (!(l >= 1 && l <= 10) || l != std::floor(l))
      throw io_error(ywhere + ": label at index " + std::to_string(i) + " is " + std::to_string(l) +
                     ", expected an integer 1..10 (10 = digit 0)");
    set.labels[i] = static_cast<std::uint8_t>(l == 10 ? 0 : l);
  }

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

// SVHN split from `dir`: "train", "test" or "extra" reads <split>_32x32.mat. Also reads the
// SYNTHETIC stand-ins in SVHN's format (e.g. /work/shared/data/synthdigits) unchanged.
inline ImageSet load_svhn(const std::string& dir, const std::string& split) {
  if (split != "train" && split != "test" && split != "extra")
    throw argument_error("dtn::data::load_svhn: split \"" + split + "\", expected \"train\", \"test\" or \"extra\"");
  return read_svhn_mat((std::filesystem::path(dir) / (split + "_32x32.mat")).string());
}

}  // namespace data
}  // namespace dtn
