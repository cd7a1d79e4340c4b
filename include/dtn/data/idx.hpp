#pragma once
// MNIST IDX reader: images (magic 2051 = 0x00000803: unsigned byte, 3 dimensions) and labels
// (magic 2049 = 0x00000801: unsigned byte, 1 dimension). Big-endian int32 header, then uint8 data
// row-major. Files may be gzip-compressed (detected by the magic 1f 8b) or raw.
//
// Every malformed input raises dtn::io_error naming the file and what was expected vs found.
// parse_idx_images / parse_idx_labels take bytes already in memory (the fuzz harness uses them).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "bytes.hpp"
#include "image_set.hpp"

namespace dtn {
namespace data {

struct IdxImages {
  int n = 0, h = 0, w = 0;
  std::vector<std::uint8_t> pixels;  // n * h * w bytes, row-major
};

namespace detail {

inline std::uint32_t read_be32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | std::uint32_t(p[3]);
}

inline std::string idx_magic_str(std::uint32_t m) {
  static const char* hex = "0123456789abcdef";
  std::string s = std::to_string(m) + " (0x";
  for (int i = 7; i >= 0; --i) s += hex[(m >> (4 * i)) & 0xf];
  return s + ")";
}

// Decompresses gzip input; returns raw input unchanged (as a view) otherwise.
struct IdxBytes {
  std::vector<std::uint8_t> owned;
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

inline IdxBytes idx_bytes(const std::uint8_t* data, std::size_t size, const std::string& name) {
  IdxBytes b;
  if (is_gzip(data, size)) {
    b.owned = gunzip(data, size, name);
    b.data = b.owned.data();
    b.size = b.owned.size();
  } else {
    b.data = data;
    b.size = size;
  }
  return b;
}

// Checks the magic and that the file holds exactly header + product(dims) bytes; returns the dims.
inline std::vector<std::uint32_t> idx_header(const std::uint8_t* data, std::size_t size, const std::string& name,
                                             std::uint32_t magic, int rank, const char* kind) {
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(rank);
  if (size < 4)
    throw io_error(name + ": truncated IDX file: expected at least a 4-byte magic, found " + std::to_string(size) +
                   " bytes");
  const std::uint32_t found = read_be32(data);
  if (found != magic)
    throw io_error(name + ": wrong IDX magic: expected " + idx_magic_str(magic) + ", an IDX " + kind +
                   " file, found " + idx_magic_str(found));
  if (size < header)
    throw io_error(name + ": truncated IDX header: expected " + std::to_string(header) + " bytes, found " +
                   std::to_string(size));
  std::vector<std::uint32_t> dims(static_cast<std::size_t>(rank));
  // Each dimension is at most 2^31 - 1 (ImageSet counts in int); the product of three of them,
  // at most 2^93, is computed with an overflow check against the bytes actually present.
  std::size_t expect = 1;
  bool overflow = false;
  std::string dims_str;
  for (int i = 0; i < rank; ++i) {
    const std::uint32_t d = read_be32(data + 4 + 4 * i);
    dims[static_cast<std::size_t>(i)] = d;
    dims_str += (i ? " x " : "") + std::to_string(d);
    if (d > 0x7fffffffu)
      throw io_error(name + ": IDX dimension " + std::to_string(i) + " is " + std::to_string(d) +
                     ", expected at most 2147483647");
    if (d != 0 && expect > std::numeric_limits<std::size_t>::max() / d) overflow = true;
    else expect *= d;
  }
  const std::size_t body = size - header;
  if (overflow || expect != body)
    throw io_error(name + ": IDX header says " + dims_str + " = " + (overflow ? std::string("(overflow)") : std::to_string(expect)) +
                   " data bytes after the " + std::to_string(header) + "-byte header, found " + std::to_string(body) +
                   (body < expect || overflow ? " (truncated file or wrong count)" : " (trailing bytes or wrong count)"));
  return dims;
}

}  // namespace detail

// Parses an IDX image file (raw or gzip) held in memory. `name` appears in error messages.
inline IdxImages parse_idx_images(const std::uint8_t* data, std::size_t size, const std::string& name) {
  const detail::IdxBytes b = detail::idx_bytes(data, size, name);
  const std::vector<std::uint32_t> dims = detail::idx_header(b.data, b.size, name, 0x00000803u, 3, "images");
  if (dims[1] == 0 || dims[2] == 0)
    throw io_error(name + ": IDX images of size " + std::to_string(dims[1]) + " x " + std::to_string(dims[2]) +
                   ", expected both sides > 0");
  IdxImages out;
  out.n = static_cast<int>(dims[0]);
  out.h = static_cast<int>(dims[1]);
  out.w = static_cast<int>(dims[2]);
  out.pixels.assign(b.data + 16, b.data + b.size);
  return out;
}

// Parses an IDX label file (raw or gzip) held in memory; labels must be 0..9.
inline std::vector<std::uint8_t> parse_idx_labels(const std::uint8_t* data, std::size_t size,
                                                  const std::string& name) {
  const detail::IdxBytes b = detail::idx_bytes(data, size, name);
  detail::idx_header(b.data, b.size, name, 0x00000801u, 1, "labels");
  std::vector<std::uint8_t> labels(b.data + 8, b.data + b.size);
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] > 9)
      throw io_error(name + ": label at index " + std::to_string(i) + " is " + std::to_string(labels[i]) +
                     ", expected 0..9");
  return labels;
}

inline IdxImages read_idx_images(const std::string& path) {
  const std::vector<std::uint8_t> bytes = read_file_bytes(path);
  return parse_idx_images(bytes.data(), bytes.size(), path);
}

inline std::vector<std::uint8_t> read_idx_labels(const std::string& path) {
  const std::vector<std::uint8_t> bytes = read_file_bytes(path);
  return parse_idx_labels(bytes.data(), bytes.size(), path);
}

// An ImageSet (n x 1 x h x w) from an image file and a label file; their counts must agree.
inline ImageSet load_idx(const std::string& images_path, const std::string& labels_path) {
  IdxImages im = read_idx_images(images_path);
  std::vector<std::uint8_t> labels = read_idx_labels(labels_path);
  if (labels.size() != static_cast<std::size_t>(im.n))
    throw io_error(images_path + " holds " + std::to_string(im.n) + " images but " + labels_path + " holds " +
                   std::to_string(labels.size()) + " labels; expected equal counts");
  ImageSet set;
  set.n = im.n;
  set.c = 1;
  set.h = im.h;
  set.w = im.w;
  set.pixels = std::move(im.pixels);
  set.labels = std::move(labels);
  return set;
}

namespace detail {
// dir/stem if it exists, else dir/stem.gz if that exists, else io_error naming both.
inline std::string find_idx_file(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  const fs::path raw = fs::path(dir) / stem;
  const fs::path gz = fs::path(dir) / (stem + ".gz");
  std::error_code ec;
  if (fs::is_regular_file(raw, ec)) return raw.string();
  if (fs::is_regular_file(gz, ec)) return gz.string();
  throw io_error("dtn::data::load_mnist: neither " + raw.string() + " nor " + gz.string() + " exists");
}
}  // namespace detail

// MNIST from `dir` with the standard file names, raw or .gz:
// split "train": train-images-idx3-ubyte, train-labels-idx1-ubyte (60000 images);
// split "test":  t10k-images-idx3-ubyte,  t10k-labels-idx1-ubyte  (10000 images).
// Returns n x 1 x 28 x 28 uint8 images with labels 0..9.
inline ImageSet load_mnist(const std::string& dir, const std::string& split) {
  std::string prefix;
  if (split == "train") prefix = "train";
  else if (split == "test") prefix = "t10k";
  else throw argument_error("dtn::data::load_mnist: split \"" + split + "\", expected \"train\" or \"test\"");
  // Two statements: argument evaluation order is unspecified, the images file is named first.
  const std::string images = detail::find_idx_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels = detail::find_idx_file(dir, prefix + "-labels-idx1-ubyte");
  return load_idx(images, labels);
}

}  // namespace data
}  // namespace dtn
