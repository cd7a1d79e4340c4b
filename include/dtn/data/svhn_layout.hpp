#pragma once
// The pixel layout of SVHN format-2 files, shared by the libmatio and the zlib-only readers.
#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace dtn {
namespace data {
namespace detail {

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

// An SVHN label (1..10, 10 meaning the digit 0) as a digit 0..9; io_error naming `where` and the
// index otherwise.
inline std::uint8_t svhn_digit(double l, std::size_t i, const std::string& where) {
  if (!(l >= 1 && l <= 10) || l != std::floor(l))
    throw io_error(where + ": label at index " + std::to_string(i) + " is " + std::to_string(l) +
                   ", expected an integer 1..10 (10 = digit 0)");
  return static_cast<std::uint8_t>(l == 10 ? 0 : l);
}

}  // namespace detail
}  // namespace data
}  // namespace dtn
