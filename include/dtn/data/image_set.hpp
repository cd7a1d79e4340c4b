#pragma once
// ImageSet: a labelled set of images held as uint8 NCHW in one contiguous buffer.
// Pixels stay uint8 in memory (SVHN extra is 531k images: 1.6 GB as uint8, four times that as
// float); conversion to float happens per batch, on the device that trains.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace dtn {
namespace data {

struct ImageSet {
  std::vector<std::uint8_t> pixels;  // n * c * h * w bytes, NCHW row-major
  int n = 0, c = 0, h = 0, w = 0;
  std::vector<std::uint8_t> labels;  // n labels, 0..9

  std::size_t sample_size() const {
    return static_cast<std::size_t>(c) * static_cast<std::size_t>(h) * static_cast<std::size_t>(w);
  }
  std::size_t size() const { return static_cast<std::size_t>(n); }
  bool empty() const { return n == 0; }

  // Pointer to the first byte of sample i (c*h*w bytes). Throws argument_error when out of range.
  const std::uint8_t* sample(std::size_t i) const {
    check_index(i, "sample");
    return pixels.data() + i * sample_size();
  }
  std::uint8_t* sample(std::size_t i) {
    check_index(i, "sample");
    return pixels.data() + i * sample_size();
  }

  // Throws argument_error when the buffers disagree with n, c, h, w or a label is > 9.
  // Readers call it on what they built; users may call it on sets they assemble themselves.
  void validate(const std::string& what = "dtn::data::ImageSet") const {
    if (n < 0 || c <= 0 || h <= 0 || w <= 0)
      throw argument_error(what + ": bad geometry n=" + std::to_string(n) + " c=" + std::to_string(c) +
                           " h=" + std::to_string(h) + " w=" + std::to_string(w));
    if (pixels.size() != size() * sample_size())
      throw argument_error(what + ": expected " + std::to_string(size() * sample_size()) + " pixel bytes, found " +
                           std::to_string(pixels.size()));
    if (labels.size() != size())
      throw argument_error(what + ": expected " + std::to_string(size()) + " labels, found " +
                           std::to_string(labels.size()));
    for (std::size_t i = 0; i < labels.size(); ++i)
      if (labels[i] > 9)
        throw argument_error(what + ": label " + std::to_string(labels[i]) + " at index " + std::to_string(i) +
                             " is outside 0..9");
  }

 private:
  void check_index(std::size_t i, const char* fn) const {
    if (i >= size())
      throw argument_error(std::string("dtn::data::ImageSet::") + fn + ": index " + std::to_string(i) +
                           " out of a set of " + std::to_string(n));
  }
};

// A new set holding the samples at `indices`, in that order (repeats allowed).
inline ImageSet subset(const ImageSet& set, const std::vector<std::size_t>& indices) {
  ImageSet out;
  out.c = set.c;
  out.h = set.h;
  out.w = set.w;
  out.n = static_cast<int>(indices.size());
  const std::size_t ss = set.sample_size();
  out.pixels.resize(indices.size() * ss);
  out.labels.resize(indices.size());
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const std::size_t i = indices[k];
    if (i >= set.size())
      throw argument_error("dtn::data::subset: index " + std::to_string(i) + " (position " + std::to_string(k) +
                           ") out of a set of " + std::to_string(set.n));
    const std::uint8_t* src = set.pixels.data() + i * ss;
    std::copy(src, src + ss, out.pixels.data() + k * ss);
    out.labels[k] = set.labels[i];
  }
  return out;
}

// The first `count` samples (or all, when the set is smaller): quick runs and tests.
inline ImageSet head(const ImageSet& set, std::size_t count) {
  if (count > set.size()) count = set.size();
  std::vector<std::size_t> idx(count);
  for (std::size_t i = 0; i < count; ++i) idx[i] = i;
  return subset(set, idx);
}

// Moves the last `count` samples of `set` into a new set (a held-out validation split) and
// shrinks `set` to the rest, without copying the kept part. Throws when count >= set.n (nothing
// would be left to train on).
inline ImageSet split_tail(ImageSet& set, std::size_t count) {
  if (count >= set.size())
    throw argument_error("dtn::data::split_tail: cannot hold out " + std::to_string(count) + " of a set of " +
                         std::to_string(set.n) + " samples (at least one must remain)");
  const std::size_t keep = set.size() - count, ss = set.sample_size();
  ImageSet out;
  out.c = set.c;
  out.h = set.h;
  out.w = set.w;
  out.n = static_cast<int>(count);
  out.pixels.assign(set.pixels.begin() + static_cast<std::ptrdiff_t>(keep * ss), set.pixels.end());
  out.labels.assign(set.labels.begin() + static_cast<std::ptrdiff_t>(keep), set.labels.end());
  set.pixels.resize(keep * ss);  // no shrink_to_fit: it would reallocate and copy the kept part
  set.labels.resize(keep);
  set.n = static_cast<int>(keep);
  return out;
}

// Per-class counts of the labels (10 entries).
inline std::vector<std::size_t> label_histogram(const ImageSet& set) {
  std::vector<std::size_t> h(10, 0);
  for (std::uint8_t l : set.labels) {
    if (l > 9) throw argument_error("dtn::data::label_histogram: label " + std::to_string(l) + " outside 0..9");
    ++h[l];
  }
  return h;
}

}  // namespace data
}  // namespace dtn
