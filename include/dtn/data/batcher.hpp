#pragma once
// Batcher: seeded shuffling batches over an ImageSet, plus to_grayscale.
//
// Each epoch visits every sample once in an order drawn from (seed, epoch) alone: the epoch's
// permutation is a Fisher-Yates shuffle driven by dtn::Rng (std::mt19937_64 with written-out
// bounded draws, so the order is the same with every standard library) seeded by
// splitmix64(seed, epoch). Its state (seed, epoch, position, permutation) restores exactly, for
// checkpoint resume: the next batch after restore() is the batch that would have come next.
//
// Batches are gathered into buffers the Batcher owns and reuses: no allocation per batch. A Batch
// points into them and is valid until the next call to next() or restore().
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "image_set.hpp"

namespace dtn {
namespace data {

struct Batch {
  const std::uint8_t* pixels = nullptr;  // n * c * h * w, NCHW
  const int* labels = nullptr;           // n labels 0..9
  int n = 0, c = 0, h = 0, w = 0;
  std::uint64_t epoch = 0;               // the epoch this batch belongs to
  std::size_t sample_size() const {
    return static_cast<std::size_t>(c) * static_cast<std::size_t>(h) * static_cast<std::size_t>(w);
  }
};

// Everything needed to resume: a POD part and the permutation of the current epoch.
// `permutation` may be left empty on save: restore() then recomputes it from (seed, epoch),
// which gives the same order (the shuffle is a pure function of seed, epoch and set size).
struct BatcherState {
  std::uint64_t seed = 0;
  std::uint64_t epoch = 0;
  std::uint64_t position = 0;    // samples of the current epoch already handed out
  std::uint64_t set_size = 0;    // the ImageSet's n, checked on restore
  std::uint64_t batch_size = 0;  // checked on restore
  std::uint64_t drop_last = 1;
  std::vector<std::uint32_t> permutation;
};

namespace detail {
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace detail

// Fills p (its size is the set size) with the order in which epoch `epoch` visits the samples.
inline void fill_epoch_permutation(std::uint64_t seed, std::uint64_t epoch, std::vector<std::uint32_t>& p) {
  const std::size_t n = p.size();
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::uint32_t>(i);
  Rng rng(detail::splitmix64(seed ^ detail::splitmix64(epoch)));
  for (std::size_t i = n; i > 1; --i) std::swap(p[i - 1], p[static_cast<std::size_t>(rng.below(i))]);
}

inline std::vector<std::uint32_t> epoch_permutation(std::uint64_t seed, std::uint64_t epoch, std::size_t n) {
  std::vector<std::uint32_t> p(n);
  fill_epoch_permutation(seed, epoch, p);
  return p;
}

class Batcher {
 public:
  // drop_last: every batch has exactly batch_size samples and the tail of an epoch that does not
  // fill a batch is skipped (it is in a different place next epoch); otherwise the last batch of
  // an epoch is smaller. The set must outlive the Batcher.
  // A temporary set would dangle: the Batcher keeps a pointer to it.
  Batcher(ImageSet&&, int, std::uint64_t, bool = true) = delete;
  Batcher(const ImageSet& set, int batch_size, std::uint64_t seed, bool drop_last = true)
      : set_(&set), batch_size_(batch_size), seed_(seed), drop_last_(drop_last) {
    if (batch_size <= 0)
      throw argument_error("dtn::data::Batcher: batch size " + std::to_string(batch_size) + ", expected > 0");
    if (set.n <= 0) throw argument_error("dtn::data::Batcher: empty image set");
    if (set.size() > 0xffffffffull)
      throw argument_error("dtn::data::Batcher: " + std::to_string(set.n) + " samples, at most 2^32 supported");
    if (drop_last && set.n < batch_size)
      throw argument_error("dtn::data::Batcher: batch size " + std::to_string(batch_size) + " exceeds the " +
                           std::to_string(set.n) + " samples of the set (with drop_last)");
    if (set.pixels.size() != set.size() * set.sample_size() || set.labels.size() != set.size())
      throw argument_error("dtn::data::Batcher: the image set's buffers do not match n, c, h, w");
    pixels_.resize(static_cast<std::size_t>(batch_size) * set.sample_size());
    labels_.resize(static_cast<std::size_t>(batch_size));
    perm_ = epoch_permutation(seed_, epoch_, set.size());
  }

  // Batches per epoch.
  std::size_t batches_per_epoch() const {
    const std::size_t n = set_->size(), b = static_cast<std::size_t>(batch_size_);
    return drop_last_ ? n / b : (n + b - 1) / b;
  }
  std::uint64_t epoch() const { return epoch_; }
  std::size_t position() const { return position_; }
  int batch_size() const { return batch_size_; }

  // The next batch; starts a new epoch (new order) when the current one is used up.
  Batch next() {
    const std::size_t n = set_->size(), b = static_cast<std::size_t>(batch_size_);
    const std::size_t left = n - position_;
    if (left == 0 || (drop_last_ && left < b)) {
      ++epoch_;
      position_ = 0;
      shuffle_in_place();
    }
    const std::size_t count = std::min(b, n - position_);
    const std::size_t ss = set_->sample_size();
    for (std::size_t k = 0; k < count; ++k) {
      const std::size_t i = perm_[position_ + k];
      std::memcpy(pixels_.data() + k * ss, set_->pixels.data() + i * ss, ss);
      labels_[k] = set_->labels[i];
    }
    position_ += count;
    Batch out;
    out.pixels = pixels_.data();
    out.labels = labels_.data();
    out.n = static_cast<int>(count);
    out.c = set_->c;
    out.h = set_->h;
    out.w = set_->w;
    out.epoch = epoch_;
    return out;
  }

  BatcherState state(bool with_permutation = true) const {
    BatcherState s;
    s.seed = seed_;
    s.epoch = epoch_;
    s.position = position_;
    s.set_size = set_->size();
    s.batch_size = static_cast<std::uint64_t>(batch_size_);
    s.drop_last = drop_last_ ? 1 : 0;
    if (with_permutation) s.permutation = perm_;
    return s;
  }

  // Resumes from a saved state; throws argument_error when it does not belong to this set and
  // batch size, or the permutation is not a permutation of 0..n-1.
  void restore(const BatcherState& s) {
    const std::size_t n = set_->size();
    if (s.set_size != n || s.batch_size != static_cast<std::uint64_t>(batch_size_) ||
        s.drop_last != (drop_last_ ? 1u : 0u))
      throw argument_error("dtn::data::Batcher::restore: state for a set of " + std::to_string(s.set_size) +
                           " samples, batch " + std::to_string(s.batch_size) + ", drop_last " +
                           std::to_string(s.drop_last) + "; this batcher has " + std::to_string(n) + ", " +
                           std::to_string(batch_size_) + ", " + std::to_string(drop_last_ ? 1 : 0));
    if (s.position > n)
      throw argument_error("dtn::data::Batcher::restore: position " + std::to_string(s.position) +
                           " beyond the set's " + std::to_string(n) + " samples");
    std::vector<std::uint32_t> p;
    if (s.permutation.empty()) {
      p = epoch_permutation(s.seed, s.epoch, n);
    } else {
      if (s.permutation.size() != n)
        throw argument_error("dtn::data::Batcher::restore: permutation of " + std::to_string(s.permutation.size()) +
                             " entries, expected " + std::to_string(n));
      std::vector<bool> seen(n, false);
      for (std::uint32_t i : s.permutation) {
        if (i >= n || seen[i])
          throw argument_error("dtn::data::Batcher::restore: the saved order is not a permutation of 0.." +
                               std::to_string(n - 1));
        seen[i] = true;
      }
      p = s.permutation;
    }
    seed_ = s.seed;
    epoch_ = s.epoch;
    position_ = static_cast<std::size_t>(s.position);
    perm_ = std::move(p);
  }

 private:
  // Draws the new epoch's order into perm_ without allocating.
  void shuffle_in_place() { fill_epoch_permutation(seed_, epoch_, perm_); }

  const ImageSet* set_;
  int batch_size_;
  std::uint64_t seed_;
  bool drop_last_;
  std::uint64_t epoch_ = 0;
  std::size_t position_ = 0;
  std::vector<std::uint32_t> perm_;
  std::vector<std::uint8_t> pixels_;
  std::vector<int> labels_;
};

// RGB to one channel by ITU-R BT.601 luma, Y = 0.299 R + 0.587 G + 0.114 B, rounded to nearest
// in integer arithmetic (exact: (299 R + 587 G + 114 B + 500) / 1000 <= 255). A 1-channel set is
// returned as a copy. Used by the no-adaptation baseline (an MNIST classifier on SVHN).
inline ImageSet to_grayscale(const ImageSet& set) {
  if (set.c == 1) return set;
  if (set.c != 3)
    throw argument_error("dtn::data::to_grayscale: expected 1 or 3 channels, found " + std::to_string(set.c));
  if (set.pixels.size() != set.size() * set.sample_size())
    throw argument_error("dtn::data::to_grayscale: the image set's pixel buffer does not match n, c, h, w");
  ImageSet out;
  out.n = set.n;
  out.c = 1;
  out.h = set.h;
  out.w = set.w;
  out.labels = set.labels;
  const std::size_t plane = static_cast<std::size_t>(set.h) * static_cast<std::size_t>(set.w);
  out.pixels.resize(set.size() * plane);
  for (std::size_t i = 0; i < set.size(); ++i) {
    const std::uint8_t* r = set.pixels.data() + i * 3 * plane;
    const std::uint8_t* g = r + plane;
    const std::uint8_t* b = g + plane;
    std::uint8_t* y = out.pixels.data() + i * plane;
    for (std::size_t k = 0; k < plane; ++k)
      y[k] = static_cast<std::uint8_t>((299u * r[k] + 587u * g[k] + 114u * b[k] + 500u) / 1000u);
  }
  return out;
}

}  // namespace data
}  // namespace dtn
