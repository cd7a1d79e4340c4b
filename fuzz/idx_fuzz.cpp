// libFuzzer target for the MNIST IDX reader: arbitrary bytes (raw or gzip) through the in-memory
// entry points. dtn::error is the expected outcome for malformed input; a crash, a sanitizer
// report or any other exception is a finding.
//   clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude fuzz/idx_fuzz.cpp -lz
//   ./idx_fuzz fuzz/corpus/idx -max_total_time=30
#include <cstddef>
#include <cstdint>

#include <dtn/data/idx.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const dtn::data::IdxImages im = dtn::data::parse_idx_images(data, size, "fuzz-input");
    // A parsed file must be self-consistent.
    if (im.pixels.size() != static_cast<std::size_t>(im.n) * static_cast<std::size_t>(im.h) *
                                static_cast<std::size_t>(im.w))
      __builtin_trap();
  } catch (const dtn::error&) {
  }
  try {
    const std::vector<std::uint8_t> labels = dtn::data::parse_idx_labels(data, size, "fuzz-input");
    for (std::uint8_t l : labels)
      if (l > 9) __builtin_trap();
  } catch (const dtn::error&) {
  }
  return 0;
}
