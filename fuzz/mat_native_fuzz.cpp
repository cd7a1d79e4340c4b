// libFuzzer target for dtn's zlib-only MAT v5 reader (data/mat5_native.hpp), the one used where
// libmatio is not installed. Inputs go through an in-memory file (memfd). dtn::error is the
// expected outcome for malformed input; a crash, a sanitizer report or any other exception is a
// finding. Seeds: fuzz/corpus/mat_native (the .mat seeds).
#include <cstddef>
#include <cstdint>
#include <cstdio>

#include <dtn/data/mat5_native.hpp>

#include "memfile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static FuzzMemFile file("dtn_mat_native_fuzz");
  file.set(data, size);
  dtn::data::ImageSet set;
  try {
    set = dtn::data::read_svhn_mat_native(file.path);
  } catch (const dtn::error&) {
    return 0;
  }
  // A file that parsed must be self-consistent: buffer sizes match n, c, h, w; labels 0..9.
  try {
    set.validate("fuzz-input");
  } catch (const dtn::error& e) {
    std::fprintf(stderr, "inconsistent ImageSet from read_svhn_mat_native: %s\n", e.what());
    __builtin_trap();
  }
  return 0;
}
