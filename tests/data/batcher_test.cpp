// Batcher: coverage of each epoch, determinism, exact restore; subset; to_grayscale.
#include <dtn/data/batcher.hpp>

#include <algorithm>
#include <set>

#include "helpers.hpp"

namespace {
// n samples of 1x2x2; sample i's pixels all equal i % 256, label i % 10 (so a batch says which
// samples it holds).
dtn::data::ImageSet make_set(int n) {
  dtn::data::ImageSet s;
  s.n = n;
  s.c = 1;
  s.h = 2;
  s.w = 2;
  s.pixels.resize(static_cast<std::size_t>(n) * 4);
  s.labels.resize(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < 4; ++k) s.pixels[static_cast<std::size_t>(i) * 4 + k] = static_cast<std::uint8_t>(i % 256);
    s.labels[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i % 10);
  }
  return s;
}
// The sample ids of a batch (from the first pixel of each sample).
std::vector<int> ids(const dtn::data::Batch& b) {
  std::vector<int> v;
  for (int k = 0; k < b.n; ++k) v.push_back(b.pixels[static_cast<std::size_t>(k) * b.sample_size()]);
  return v;
}
}  // namespace

TEST_CASE("batcher: each epoch visits every sample once, and labels and pixels travel together") {
  const auto set = make_set(100);
  dtn::data::Batcher b(set, 10, 42);
  CHECK(b.batches_per_epoch() == 10);
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::multiset<int> seen;
    for (int k = 0; k < 10; ++k) {
      const auto batch = b.next();
      CHECK(batch.epoch == static_cast<std::uint64_t>(epoch));
      REQUIRE(batch.n == 10);
      CHECK(batch.c == 1);
      CHECK(batch.h == 2);
      for (int i = 0; i < batch.n; ++i) {
        const int id = batch.pixels[static_cast<std::size_t>(i) * 4];
        for (int p = 1; p < 4; ++p) CHECK(batch.pixels[static_cast<std::size_t>(i) * 4 + p] == id);
        CHECK(batch.labels[i] == id % 10);
        seen.insert(id);
      }
    }
    CHECK(seen.size() == 100);
    CHECK(std::set<int>(seen.begin(), seen.end()).size() == 100);
  }
}

TEST_CASE("batcher: the order is shuffled, differs across epochs and seeds, repeats for a seed") {
  const auto set = make_set(200);
  auto first_epoch = [&](std::uint64_t seed, int epochs) {
    dtn::data::Batcher b(set, 50, seed);
    std::vector<int> order;
    for (int k = 0; k < 4 * epochs; ++k) {
      auto v = ids(b.next());
      order.insert(order.end(), v.begin(), v.end());
    }
    return std::vector<int>(order.end() - 200, order.end());  // the last epoch
  };
  const auto a = first_epoch(1, 1), a2 = first_epoch(1, 1), b = first_epoch(2, 1), a_e1 = first_epoch(1, 2);
  CHECK(a == a2);
  CHECK(a != b);
  CHECK(a != a_e1);
  std::vector<int> identity(200);
  for (int i = 0; i < 200; ++i) identity[static_cast<std::size_t>(i)] = i;
  CHECK(a != identity);
  // The first epoch's order is epoch_permutation(seed, 0) (ids < 256 here, so exact).
  const auto p = dtn::data::epoch_permutation(1, 0, 200);
  CHECK(std::equal(a.begin(), a.end(), p.begin(), [](int x, std::uint32_t y) { return x == static_cast<int>(y); }));
}

TEST_CASE("batcher: drop_last and the smaller last batch") {
  const auto set = make_set(25);
  dtn::data::Batcher keep(set, 10, 7, /*drop_last=*/false);
  CHECK(keep.batches_per_epoch() == 3);
  CHECK(keep.next().n == 10);
  CHECK(keep.next().n == 10);
  const auto last = keep.next();
  CHECK(last.n == 5);
  CHECK(last.epoch == 0);
  CHECK(keep.next().epoch == 1);

  dtn::data::Batcher drop(set, 10, 7);
  CHECK(drop.batches_per_epoch() == 2);
  drop.next();
  drop.next();
  const auto b = drop.next();
  CHECK(b.n == 10);
  CHECK(b.epoch == 1);

  CHECK_THROWS_AS(dtn::data::Batcher(set, 26, 0), dtn::argument_error);
  CHECK_THROWS_AS(dtn::data::Batcher(set, 0, 0), dtn::argument_error);
  CHECK_NOTHROW(dtn::data::Batcher(set, 26, 0, false));
}

TEST_CASE("batcher: a saved state restores exactly, with or without the stored permutation") {
  const auto set = make_set(97);
  dtn::data::Batcher a(set, 8, 123);
  for (int k = 0; k < 17; ++k) a.next();  // into the second epoch (12 batches per epoch)
  const auto full = a.state();
  const auto pod = a.state(/*with_permutation=*/false);
  CHECK(full.epoch == 1);
  CHECK(full.position == 5 * 8);
  CHECK(full.permutation.size() == 97);
  CHECK(pod.permutation.empty());

  std::vector<std::vector<int>> expect;
  for (int k = 0; k < 30; ++k) expect.push_back(ids(a.next()));

  for (const auto* st : {&full, &pod}) {
    dtn::data::Batcher b(set, 8, 999);  // a different seed: restore must replace it
    b.next();
    b.restore(*st);
    for (int k = 0; k < 30; ++k) CHECK(ids(b.next()) == expect[static_cast<std::size_t>(k)]);
  }
}

TEST_CASE("batcher: restore rejects a state of another set, batch size or a broken permutation") {
  const auto set = make_set(20);
  dtn::data::Batcher a(set, 5, 1);
  auto st = a.state();
  const auto set21 = make_set(21);
  dtn::data::Batcher other(set21, 5, 1);
  CHECK_THROWS_AS(other.restore(st), dtn::argument_error);
  dtn::data::Batcher other_b(set, 4, 1);
  CHECK_THROWS_AS(other_b.restore(st), dtn::argument_error);
  auto dup = st;
  dup.permutation[0] = dup.permutation[1];
  CHECK_THROWS_AS(a.restore(dup), dtn::argument_error);
  auto far = st;
  far.position = 21;
  CHECK_THROWS_AS(a.restore(far), dtn::argument_error);
  auto short_order = st;
  short_order.permutation.pop_back();
  CHECK_THROWS_WITH_AS(a.restore(short_order), "dtn::data::Batcher::restore: permutation of 19 entries, expected 20",
                       dtn::argument_error);
}

TEST_CASE("batcher: no allocation per batch (the batch buffer stays put)") {
  const auto set = make_set(64);
  dtn::data::Batcher b(set, 16, 3);
  const auto* p = b.next().pixels;
  for (int k = 0; k < 20; ++k) CHECK(b.next().pixels == p);
}

TEST_CASE("image set: subset, head, validate and histogram") {
  const auto set = make_set(30);
  const auto sub = dtn::data::subset(set, {29, 3, 3});
  CHECK(sub.n == 3);
  CHECK(sub.sample(0)[0] == 29);
  CHECK(sub.sample(2)[3] == 3);
  CHECK(sub.labels == std::vector<std::uint8_t>{9, 3, 3});
  CHECK_THROWS_AS(dtn::data::subset(set, {30}), dtn::argument_error);
  CHECK_THROWS_AS(set.sample(30), dtn::argument_error);
  CHECK(dtn::data::head(set, 100).n == 30);
  CHECK(dtn::data::head(set, 4).labels == std::vector<std::uint8_t>{0, 1, 2, 3});
  CHECK(dtn::data::label_histogram(set) == std::vector<std::size_t>(10, 3));
  auto bad = set;
  bad.labels[7] = 12;
  CHECK_THROWS_AS(bad.validate(), dtn::argument_error);
  bad = set;
  bad.pixels.pop_back();
  CHECK_THROWS_AS(bad.validate(), dtn::argument_error);
}

TEST_CASE("image set: split_tail holds out the last samples and keeps the rest in order") {
  auto set = make_set(30);
  const auto val = dtn::data::split_tail(set, 4);
  CHECK(set.n == 26);
  CHECK(val.n == 4);
  set.validate("train part");
  val.validate("validation part");
  CHECK(set.sample(25)[0] == 25);
  CHECK(val.sample(0)[0] == 26);
  CHECK(val.sample(3)[3] == 29);
  CHECK(val.labels == std::vector<std::uint8_t>{6, 7, 8, 9});
  CHECK(dtn::data::split_tail(set, 0).n == 0);
  CHECK(set.n == 26);
  CHECK_THROWS_WITH_AS(dtn::data::split_tail(set, 26), doctest::Contains("cannot hold out 26 of a set of 26"),
                       dtn::argument_error);
  CHECK(set.n == 26);
}

TEST_CASE("to_grayscale: ITU-R 601 luma, rounded") {
  dtn::data::ImageSet s;
  s.n = 1;
  s.c = 3;
  s.h = 1;
  s.w = 5;
  // Planar R, G, B for 5 pixels: white, pure red, pure green, pure blue, a mix.
  s.pixels = {255, 255, 0, 0, 10,    // R
              255, 0, 255, 0, 200,   // G
              255, 0, 0, 255, 30};   // B
  s.labels = {4};
  const auto g = dtn::data::to_grayscale(s);
  CHECK(g.c == 1);
  CHECK(g.labels == s.labels);
  // 0.299 * 255 = 76.245 -> 76; 0.587 * 255 = 149.685 -> 150; 0.114 * 255 = 29.07 -> 29;
  // 0.299 * 10 + 0.587 * 200 + 0.114 * 30 = 2.99 + 117.4 + 3.42 = 123.81 -> 124.
  CHECK(g.pixels == std::vector<std::uint8_t>{255, 76, 150, 29, 124});
  CHECK(dtn::data::to_grayscale(g).pixels == g.pixels);
  s.c = 2;
  CHECK_THROWS_AS(dtn::data::to_grayscale(s), dtn::argument_error);
}
