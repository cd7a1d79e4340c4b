#pragma once
// PNG output (and input, for checks) through libpng's simplified API, and image grids.
//
// Pixels are planar C x H x W uint8 (one sample of an NCHW batch), 1 channel (gray) or 3 (RGB).
// Files are written atomically (temporary file + rename, see atomic_file.hpp): a crash leaves the
// old picture or the new one, never half a PNG. Every failure raises dtn::io_error naming the file.
//
// Grids: rows of float images in [-1, 1] (CPU, NCHW, 1 or 3 channels), e.g. a row of source
// images above the row of their transfers, separated and framed by a `gap`-pixel (default 2)
// border. Link: libpng (CMake target dtn::data).
#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "atomic_file.hpp"

namespace dtn {
namespace io {

// One 8-bit picture, planar: pixels[ch * h * w + row * w + col].
struct Image8 {
  int c = 0, h = 0, w = 0;
  std::vector<std::uint8_t> pixels;
};

namespace detail {
inline void check_png_geometry(const std::string& where, int c, int h, int w) {
  if ((c != 1 && c != 3) || h <= 0 || w <= 0 || h > 1000000 || w > 1000000)
    throw argument_error(where + ": expected 1 or 3 channels and 1..1000000 rows and columns, found c=" +
                         std::to_string(c) + " h=" + std::to_string(h) + " w=" + std::to_string(w));
}
}  // namespace detail

// The PNG file bytes of a planar C x H x W image (c = 1 gray, 3 RGB).
inline std::vector<std::uint8_t> encode_png(const std::uint8_t* chw, int c, int h, int w,
                                            const std::string& name = "PNG image") {
  detail::check_png_geometry("dtn::io::encode_png (" + name + ")", c, h, w);
  const std::size_t plane = static_cast<std::size_t>(h) * static_cast<std::size_t>(w);
  std::vector<std::uint8_t> hwc(plane * static_cast<std::size_t>(c));
  for (std::size_t p = 0; p < plane; ++p)
    for (int ch = 0; ch < c; ++ch) hwc[p * c + ch] = chw[static_cast<std::size_t>(ch) * plane + p];

  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(w);
  img.height = static_cast<png_uint_32>(h);
  img.format = c == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  // First call sizes the output, second writes it.
  if (!png_image_write_to_memory(&img, nullptr, &size, 0, hwc.data(), 0, nullptr)) {
    const std::string msg = img.message;
    png_image_free(&img);
    throw io_error(name + ": PNG encoding failed: " + msg);
  }
  std::vector<std::uint8_t> out(size);
  if (!png_image_write_to_memory(&img, out.data(), &size, 0, hwc.data(), 0, nullptr)) {
    const std::string msg = img.message;
    png_image_free(&img);
    throw io_error(name + ": PNG encoding failed: " + msg);
  }
  out.resize(size);
  return out;
}

// Writes a planar C x H x W uint8 image as PNG, atomically.
inline void write_png(const std::string& path, const std::uint8_t* chw, int c, int h, int w) {
  const std::vector<std::uint8_t> bytes = encode_png(chw, c, h, w, path);
  write_file_atomic(path, bytes.data(), bytes.size());
}
inline void write_png(const std::string& path, const Image8& im) {
  if (im.pixels.size() != static_cast<std::size_t>(im.c) * static_cast<std::size_t>(im.h) * static_cast<std::size_t>(im.w))
    throw argument_error("dtn::io::write_png (" + path + "): pixel buffer of " + std::to_string(im.pixels.size()) +
                         " bytes does not match " + std::to_string(im.c) + "x" + std::to_string(im.h) + "x" +
                         std::to_string(im.w));
  write_png(path, im.pixels.data(), im.c, im.h, im.w);
}

// Reads a PNG as 8-bit gray (1 channel) when the file has no colour, else RGB (3 channels);
// alpha is composited onto black, 16-bit samples are reduced to 8 bits by libpng.
inline Image8 read_png(const std::string& path) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str())) {
    const std::string msg = img.message;
    png_image_free(&img);
    throw io_error(path + ": cannot read as PNG: " + msg);
  }
  const bool color = (img.format & PNG_FORMAT_FLAG_COLOR) != 0;
  img.format = color ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  Image8 out;
  out.c = color ? 3 : 1;
  out.h = static_cast<int>(img.height);
  out.w = static_cast<int>(img.width);
  const std::size_t plane = static_cast<std::size_t>(img.height) * img.width;
  std::vector<std::uint8_t> hwc(PNG_IMAGE_SIZE(img));
  png_color black{0, 0, 0};
  if (!png_image_finish_read(&img, &black, hwc.data(), 0, nullptr)) {
    const std::string msg = img.message;
    png_image_free(&img);
    throw io_error(path + ": cannot decode PNG: " + msg);
  }
  out.pixels.resize(plane * static_cast<std::size_t>(out.c));
  for (std::size_t p = 0; p < plane; ++p)
    for (int ch = 0; ch < out.c; ++ch)
      out.pixels[static_cast<std::size_t>(ch) * plane + p] = hwc[p * static_cast<std::size_t>(out.c) + ch];
  return out;
}

// A float in [-1, 1] to 0..255: round((v + 1) * 127.5), clamped; NaN becomes 0.
inline std::uint8_t signed_to_u8(float v) {
  if (!(v == v)) return 0;
  const float s = (v + 1.0f) * 127.5f;
  if (s <= 0.0f) return 0;
  if (s >= 255.0f) return 255;
  return static_cast<std::uint8_t>(std::lround(s));
}

struct GridOptions {
  int gap = 2;                    // pixels between cells and around the border
  std::uint8_t background = 255;  // gap colour (white; MNIST digits are white on black)
};

// Lays out rows of images (each a CPU NCHW float view in [-1, 1], 1 or 3 channels) one row per
// view, left to right. Cells are max(h) x max(w) of all images; a smaller image is centred.
// The grid is RGB when any row has 3 channels (gray rows are repeated into R, G and B), else gray.
inline Image8 make_image_grid(const std::vector<View<const float, Cpu>>& rows, const GridOptions& opt = {}) {
  if (rows.empty()) throw argument_error("dtn::io::make_image_grid: no rows");
  if (opt.gap < 0 || opt.gap > 1000) throw argument_error("dtn::io::make_image_grid: gap " + std::to_string(opt.gap));
  int cell_h = 0, cell_w = 0, channels = 1;
  std::int64_t cols = 0;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const Shape& s = rows[r].shape;
    if (s.rank() != 4 || (s[1] != 1 && s[1] != 3) || s[2] <= 0 || s[3] <= 0 || s[2] > 65536 || s[3] > 65536)
      throw_shape("dtn::io::make_image_grid: row " + std::to_string(r), "NCHW with 1 or 3 channels", s);
    if (s[0] > 0 && rows[r].data == nullptr)
      throw argument_error("dtn::io::make_image_grid: row " + std::to_string(r) + " has no data");
    cell_h = std::max(cell_h, static_cast<int>(s[2]));
    cell_w = std::max(cell_w, static_cast<int>(s[3]));
    if (s[1] == 3) channels = 3;
    cols = std::max(cols, s[0]);
  }
  if (cols == 0) throw argument_error("dtn::io::make_image_grid: every row is empty");
  const std::int64_t gh = static_cast<std::int64_t>(rows.size()) * (cell_h + opt.gap) + opt.gap;
  const std::int64_t gw = cols * (cell_w + opt.gap) + opt.gap;
  if (gh > 1000000 || gw > 1000000)
    throw argument_error("dtn::io::make_image_grid: grid of " + std::to_string(gh) + "x" + std::to_string(gw) +
                         " pixels is too large");
  Image8 g;
  g.c = channels;
  g.h = static_cast<int>(gh);
  g.w = static_cast<int>(gw);
  const std::size_t gplane = static_cast<std::size_t>(gh) * static_cast<std::size_t>(gw);
  g.pixels.assign(gplane * static_cast<std::size_t>(channels), opt.background);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const Shape& s = rows[r].shape;
    const int n = static_cast<int>(s[0]), c = static_cast<int>(s[1]), h = static_cast<int>(s[2]),
              w = static_cast<int>(s[3]);
    const std::size_t plane = static_cast<std::size_t>(h) * static_cast<std::size_t>(w);
    for (int i = 0; i < n; ++i) {
      const int top = opt.gap + static_cast<int>(r) * (cell_h + opt.gap) + (cell_h - h) / 2;
      const int left = opt.gap + i * (cell_w + opt.gap) + (cell_w - w) / 2;
      const float* img = rows[r].data + static_cast<std::size_t>(i) * static_cast<std::size_t>(c) * plane;
      for (int ch = 0; ch < channels; ++ch) {
        const float* src = img + static_cast<std::size_t>(c == 1 ? 0 : ch) * plane;
        std::uint8_t* dst = g.pixels.data() + static_cast<std::size_t>(ch) * gplane;
        for (int y = 0; y < h; ++y)
          for (int x = 0; x < w; ++x)
            dst[static_cast<std::size_t>(top + y) * static_cast<std::size_t>(gw) + static_cast<std::size_t>(left + x)] =
                signed_to_u8(src[static_cast<std::size_t>(y) * static_cast<std::size_t>(w) + static_cast<std::size_t>(x)]);
      }
    }
  }
  return g;
}

// make_image_grid written as PNG, atomically.
inline void write_image_grid(const std::string& path, const std::vector<View<const float, Cpu>>& rows,
                             const GridOptions& opt = {}) {
  write_png(path, make_image_grid(rows, opt));
}

// One batch (CPU NCHW float in [-1, 1]) as a grid of `cols` columns, row by row.
inline void write_image_grid(const std::string& path, View<const float, Cpu> batch, int cols,
                             const GridOptions& opt = {}) {
  if (cols <= 0) throw argument_error("dtn::io::write_image_grid: " + std::to_string(cols) + " columns");
  if (batch.shape.rank() != 4) throw_shape("dtn::io::write_image_grid", "an NCHW batch", batch.shape);
  std::vector<View<const float, Cpu>> rows;
  const std::int64_t n = batch.shape[0];
  for (std::int64_t b = 0; b < n; b += cols) rows.push_back(batch.slice(b, std::min<std::int64_t>(cols, n - b)));
  write_image_grid(path, rows, opt);
}

}  // namespace io
}  // namespace dtn
