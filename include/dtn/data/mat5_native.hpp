#pragma once
// A reader of SVHN format-2 .mat files (MAT v5) that needs only zlib: used where libmatio is not
// installed (the CUDA images of GPU machines, for one), and checked against the libmatio reader
// by the tests wherever both exist.
//
// MAT v5 layout: a 128-byte header (version 0x0100 and the byte-order mark 'IM' at bytes
// 124..127), then top-level elements, each an 8-byte tag (type, byte count) and its data:
// miMATRIX (14) directly, or miCOMPRESSED (15): a zlib stream holding one miMATRIX element.
// A matrix holds sub-elements: array flags (class in the low byte), dimensions (miINT32), name
// (miINT8), and the real part, whose storage type may be narrower than the class (MATLAB stores
// a double array of small integers as miUINT8). A sub-element whose byte count is at most 4 may
// be packed into its tag ("small data element"); other elements are padded to 8 bytes.
//
// Memory: X is inflated straight into the ImageSet's pixel buffer and reordered in place, so the
// peak is 1x its uint8 size (1.6 GB for SVHN extra); compressed input is streamed in 1 MB chunks.
#include <zlib.h>

#include <algorithm>
#include <cerrno>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "image_set.hpp"
#include "svhn_layout.hpp"

namespace dtn {
namespace data {
namespace detail {

// Bytes of a file region, read raw or through inflate; read() delivers exactly n bytes or throws.
class Mat5Stream {
 public:
  Mat5Stream(std::FILE* f, std::uint64_t begin, std::uint64_t size, bool deflated, std::string where)
      : f_(f), left_(size), deflated_(deflated), where_(std::move(where)) {
    if (std::fseek(f_, static_cast<long>(begin), SEEK_SET) != 0) fail("cannot seek");
    if (deflated_) {
      std::memset(&zs_, 0, sizeof zs_);
      if (inflateInit(&zs_) != Z_OK) fail("zlib inflateInit failed");
      zinit_ = true;
      in_.resize(1 << 20);
    }
  }
  ~Mat5Stream() {
    if (zinit_) inflateEnd(&zs_);
  }
  Mat5Stream(const Mat5Stream&) = delete;
  Mat5Stream& operator=(const Mat5Stream&) = delete;

  void read(void* dst, std::uint64_t n) {
    unsigned char* out = static_cast<unsigned char*>(dst);
    if (!deflated_) {
      if (n > left_) fail("the element ends before its data (truncated or corrupt file)");
      if (n && std::fread(out, 1, static_cast<std::size_t>(n), f_) != n) fail("the file ends inside a variable (truncated)");
      left_ -= n;
      return;
    }
    while (n > 0) {
      if (zs_.avail_in == 0 && left_ > 0) {
        const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(left_, in_.size()));
        if (std::fread(in_.data(), 1, chunk, f_) != chunk) fail("the file ends inside a compressed variable (truncated)");
        left_ -= chunk;
        zs_.next_in = in_.data();
        zs_.avail_in = static_cast<uInt>(chunk);
      }
      const uInt step = static_cast<uInt>(std::min<std::uint64_t>(n, 1u << 30));
      zs_.next_out = out;
      zs_.avail_out = step;
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      const uInt got = step - zs_.avail_out;
      out += got;
      n -= got;
      if (n == 0) break;
      if (rc == Z_STREAM_END) fail("the compressed variable ends before its declared size (corrupt file)");
      if (rc != Z_OK && !(rc == Z_BUF_ERROR && zs_.avail_in == 0 && left_ > 0))
        fail("corrupt deflate stream (zlib error " + std::to_string(rc) + ")");
      if (got == 0 && zs_.avail_in == 0 && left_ == 0) fail("the compressed variable is cut short (truncated file)");
    }
  }
  void skip(std::uint64_t n) {
    unsigned char buf[4096];
    while (n > 0) {
      const std::uint64_t k = std::min<std::uint64_t>(n, sizeof buf);
      read(buf, k);
      n -= k;
    }
  }
  [[noreturn]] void fail(const std::string& what) const { throw io_error(where_ + ": " + what); }

 private:
  std::FILE* f_;
  std::uint64_t left_;
  bool deflated_;
  std::string where_;
  z_stream zs_{};
  bool zinit_ = false;
  std::vector<unsigned char> in_;
};

struct Mat5Tag {
  std::uint32_t type = 0;
  std::uint64_t bytes = 0;
  bool small = false;
  unsigned char inline_data[4] = {0, 0, 0, 0};
};

inline std::uint32_t mat5_u32(const unsigned char* p, bool le) {
  return le ? (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24)
            : (std::uint32_t(p[3]) | std::uint32_t(p[2]) << 8 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[0]) << 24);
}

inline Mat5Tag mat5_tag(Mat5Stream& s, bool le) {
  unsigned char t[8];
  s.read(t, 8);
  Mat5Tag tag;
  const std::uint32_t w = mat5_u32(t, le);
  if (w >> 16) {  // small data element: byte count in the high half, data in the next 4 bytes
    tag.small = true;
    tag.type = w & 0xffff;
    tag.bytes = w >> 16;
    if (tag.bytes > 4) s.fail("malformed small data element (" + std::to_string(tag.bytes) + " bytes)");
    std::memcpy(tag.inline_data, t + 4, 4);
  } else {
    tag.type = w;
    tag.bytes = mat5_u32(t + 4, le);
  }
  return tag;
}
inline std::uint64_t mat5_pad8(std::uint64_t n) { return (n + 7) / 8 * 8; }

// Bytes per element of a MAT storage type (0: not numeric).
inline std::size_t mat5_type_bytes(std::uint32_t t) {
  switch (t) {
    case 1: case 2: return 1;    // miINT8, miUINT8
    case 3: case 4: return 2;    // miINT16, miUINT16
    case 5: case 6: case 7: return 4;  // miINT32, miUINT32, miSINGLE
    case 9: case 12: case 13: return 8;  // miDOUBLE, miINT64, miUINT64
    default: return 0;
  }
}
inline double mat5_value(const unsigned char* p, std::uint32_t t, bool le) {
  unsigned char b[8];
  const std::size_t n = mat5_type_bytes(t);
  for (std::size_t i = 0; i < n; ++i) b[i] = le ? p[i] : p[n - 1 - i];
  switch (t) {
    case 1: { std::int8_t v; std::memcpy(&v, b, 1); return v; }
    case 2: return b[0];
    case 3: { std::int16_t v; std::memcpy(&v, b, 2); return v; }
    case 4: { std::uint16_t v; std::memcpy(&v, b, 2); return v; }
    case 5: { std::int32_t v; std::memcpy(&v, b, 4); return v; }
    case 6: { std::uint32_t v; std::memcpy(&v, b, 4); return v; }
    case 7: { float v; std::memcpy(&v, b, 4); return v; }
    case 9: { double v; std::memcpy(&v, b, 8); return v; }
    case 12: { std::int64_t v; std::memcpy(&v, b, 8); return static_cast<double>(v); }
    case 13: { std::uint64_t v; std::memcpy(&v, b, 8); return static_cast<double>(v); }
    default: return NAN;
  }
}

inline const char* mat5_class_name(unsigned c) {
  static const char* names[] = {"unknown", "cell",  "struct", "object", "char",  "sparse", "double", "single", "int8",
                                "uint8",   "int16", "uint16", "int32",  "uint32", "int64", "uint64", "function"};
  return c < sizeof names / sizeof names[0] ? names[c] : "unknown";
}
inline std::string mat5_dims(const std::vector<std::uint64_t>& d) {
  std::string s;
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? "x" : "") + std::to_string(d[i]);
  return s;
}

// An open MAT v5 file after its 128-byte header: the header and byte order checked, with an
// io_error naming the file otherwise (shared by the zlib-only reader and the libmatio pre-check).
struct Mat5File {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> fp{nullptr, &std::fclose};
  std::uint64_t size = 0;
  bool le = true;
};
inline Mat5File mat5_open(const std::string& path) {
  Mat5File m;
  m.fp.reset(std::fopen(path.c_str(), "rb"));
  if (!m.fp) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) throw io_error(path + ": cannot open: no such file");
    throw io_error(path + ": cannot open for reading: " + std::strerror(errno));
  }
  std::error_code ec;
  m.size = std::filesystem::file_size(path, ec);
  if (ec) throw io_error(path + ": cannot read its size");
  unsigned char hdr[128];
  const std::size_t got = std::fread(hdr, 1, 128, m.fp.get());
  if (got != 128)
    throw io_error(path + ": not a MAT v5 file: expected a 128-byte header, the file has " + std::to_string(got) +
                   " bytes");
  m.le = hdr[126] == 'I' && hdr[127] == 'M';
  const bool be = hdr[126] == 'M' && hdr[127] == 'I';
  const unsigned version = m.le ? (hdr[124] | hdr[125] << 8) : (hdr[124] << 8 | hdr[125]);
  if ((!m.le && !be) || version != 0x0100)
    throw io_error(path + ": not a MAT v5 file (the format of SVHN's .mat files): " +
                   (version == 0x0200 ? std::string("found MAT v7.3 (HDF5), which this reader does not accept; "
                                                    "re-save it with save(..., '-v7')")
                                      : std::string("no v5 header (version 0x0100 and the 'IM'/'MI' byte-order mark at "
                                                    "bytes 124..127)")));
  return m;
}

}  // namespace detail

// Reads X and y of a format-2 .mat file with zlib alone. Same result and checks as the libmatio
// reader: NCHW uint8 images, labels 0..9; io_error naming the file and variable otherwise.
inline ImageSet read_svhn_mat_native(const std::string& path) {
  detail::Mat5File file = detail::mat5_open(path);
  std::FILE* f = file.fp.get();
  const std::uint64_t size = file.size;
  const bool le = file.le;

  ImageSet set;
  bool have_x = false, have_y = false;
  std::vector<double> labels;
  std::string y_dims;
  std::size_t H = 0, W = 0, C = 0, N = 0;
  std::uint64_t pos = 128;
  while (pos + 8 <= size && !(have_x && have_y)) {
    unsigned char tb[8];
    if (std::fseek(f, static_cast<long>(pos), SEEK_SET) != 0 || std::fread(tb, 1, 8, f) != 8)
      throw io_error(path + ": truncated MAT file at byte " + std::to_string(pos));
    const std::uint32_t type = detail::mat5_u32(tb, le);
    const std::uint64_t nbytes = detail::mat5_u32(tb + 4, le);
    const std::string at = path + ": element at byte " + std::to_string(pos);
    if (type != 14 && type != 15)
      throw io_error(at + ": expected a matrix (type 14) or a compressed matrix (type 15), found type " +
                     std::to_string(type) + " (corrupt file)");
    if (pos + 8 + nbytes > size)
      throw io_error(path + ": truncated MAT file: the element at byte " + std::to_string(pos) + " declares " +
                     std::to_string(nbytes) + " bytes, the file ends at " + std::to_string(size));
    const std::uint64_t next = pos + 8 + (type == 14 ? detail::mat5_pad8(nbytes) : nbytes);
    detail::Mat5Stream s(f, pos + 8, nbytes, type == 15, at);
    std::uint64_t mbytes = nbytes;
    if (type == 15) {
      const detail::Mat5Tag mt = detail::mat5_tag(s, le);
      if (mt.type != 14) s.fail("a compressed element holds type " + std::to_string(mt.type) + ", expected a matrix (14)");
      mbytes = mt.bytes;
    }
    if (mbytes == 0) {
      pos = next;
      continue;
    }
    // Array flags.
    const detail::Mat5Tag ft = detail::mat5_tag(s, le);
    if (ft.type != 6 || ft.bytes != 8 || ft.small) s.fail("malformed array flags (corrupt file)");
    unsigned char flags[8];
    s.read(flags, 8);
    const unsigned cls = detail::mat5_u32(flags, le) & 0xff;
    const bool complex = (detail::mat5_u32(flags, le) >> 11) & 1;
    if (cls < 4 || cls > 15 || cls == 5)
      s.fail("array class " + std::to_string(cls) +
             " is not a numeric or char array (format-2 files hold only those) (corrupt file)");
    // Dimensions.
    const detail::Mat5Tag dt = detail::mat5_tag(s, le);
    // (at least two dimensions, 8 bytes: never a small data element)
    if (dt.small || dt.type != 5 || dt.bytes < 8 || dt.bytes > 256 || dt.bytes % 4)
      s.fail("malformed dimension list (corrupt file)");
    std::vector<unsigned char> db(static_cast<std::size_t>(detail::mat5_pad8(dt.bytes)));
    s.read(db.data(), db.size());
    std::vector<std::uint64_t> dims;
    for (std::uint64_t i = 0; i < dt.bytes / 4; ++i) dims.push_back(detail::mat5_u32(db.data() + 4 * i, le));
    // Name.
    const detail::Mat5Tag nt = detail::mat5_tag(s, le);
    if (nt.type != 1 || nt.bytes > 4096) s.fail("malformed variable name (corrupt file)");
    std::string name;
    if (nt.small) {
      name.assign(reinterpret_cast<const char*>(nt.inline_data), static_cast<std::size_t>(nt.bytes));
    } else {
      std::vector<char> nb(static_cast<std::size_t>(detail::mat5_pad8(nt.bytes)));
      s.read(nb.data(), nb.size());
      name.assign(nb.data(), static_cast<std::size_t>(nt.bytes));
    }
    if (name != "X" && name != "y") {
      pos = next;
      continue;
    }
    const std::string where = path + ": variable " + name;
    const std::string found = std::string(detail::mat5_class_name(cls)) + (complex ? " complex" : "");
    if (name == "X" && (cls != 9 || complex)) throw io_error(where + ": expected class uint8 (real), found " + found);
    if (name == "y" && (cls < 6 || cls > 15 || complex))
      throw io_error(where + ": expected a real numeric class (double or an integer type), found " + found);
    std::uint64_t numel = 1;
    for (std::uint64_t d : dims) {
      if (d != 0 && numel > (std::uint64_t(1) << 40) / d) throw io_error(where + ": dimensions overflow (corrupt file)");
      numel *= d;
    }
    const detail::Mat5Tag rt = detail::mat5_tag(s, le);
    const std::size_t eb = detail::mat5_type_bytes(rt.type);
    if (eb == 0 || rt.bytes != numel * eb)
      throw io_error(where + ": its data holds " + std::to_string(rt.bytes) + " bytes of type " + std::to_string(rt.type) +
                     ", expected " + std::to_string(numel) + " numeric elements (corrupt file)");
    if (name == "X") {
      if (rt.type != 2) throw io_error(where + ": uint8 data stored as type " + std::to_string(rt.type) + " (corrupt file)");
      if (dims.size() != 4 && dims.size() != 3)
        throw io_error(where + ": expected rank 4 (32x32x3xN), found rank " + std::to_string(dims.size()) + " (" +
                       detail::mat5_dims(dims) + ")");
      H = dims[0];
      W = dims[1];
      C = dims[2];
      N = dims.size() == 4 ? dims[3] : 1;
      if (C != 3 || H == 0 || W == 0 || H > 65536 || W > 65536 || N > static_cast<std::uint64_t>(INT32_MAX))
        throw io_error(where + ": expected dimensions HxWx3xN (32x32x3xN for SVHN), found " + detail::mat5_dims(dims));
      // Before allocating: the element must be able to hold that much (zlib expands by at most 1032x).
      if (numel / (type == 15 ? 1032 : 1) > nbytes)
        throw io_error(where + ": " + std::to_string(numel) + " bytes cannot fit in its element of " +
                       std::to_string(nbytes) + " bytes (truncated or corrupt file)");
      set.pixels.resize(static_cast<std::size_t>(numel));
      if (rt.small) std::memcpy(set.pixels.data(), rt.inline_data, static_cast<std::size_t>(numel));
      else s.read(set.pixels.data(), numel);
      have_x = true;
    } else {
      if (dims.size() != 2 || (dims[0] != 1 && dims[1] != 1))
        throw io_error(where + ": expected Nx1 labels (one per image in X), found " + detail::mat5_dims(dims));
      y_dims = detail::mat5_dims(dims);
      if (numel * eb / (type == 15 ? 1032 : 1) > nbytes + 8)
        throw io_error(where + ": labels cannot fit in their element (truncated or corrupt file)");
      std::vector<unsigned char> raw(static_cast<std::size_t>(numel * eb));
      if (rt.small) std::memcpy(raw.data(), rt.inline_data, raw.size());
      else s.read(raw.data(), raw.size());
      labels.resize(static_cast<std::size_t>(numel));
      for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = detail::mat5_value(raw.data() + i * eb, rt.type, le);
      have_y = true;
    }
    pos = next;
  }
  if (!have_x) throw io_error(path + ": variable X not found (expected uint8 32x32x3xN images)");
  if (!have_y) throw io_error(path + ": variable y not found (expected " + std::to_string(N) + "x1 labels 1..10)");
  if (labels.size() != N)
    throw io_error(path + ": variable y: expected " + std::to_string(N) + "x1 labels (one per image in X), found " +
                   y_dims);
  set.n = static_cast<int>(N);
  set.c = static_cast<int>(C);
  set.h = static_cast<int>(H);
  set.w = static_cast<int>(W);
  set.labels.resize(N);
  for (std::size_t i = 0; i < N; ++i) set.labels[i] = detail::svhn_digit(labels[i], i, path + ": variable y");
  if (N > 0) detail::hwc_colmajor_to_chw(set.pixels.data(), N, C, H, W);
  return set;
}

}  // namespace data
}  // namespace dtn
