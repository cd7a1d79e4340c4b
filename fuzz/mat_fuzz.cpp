// libFuzzer target for the SVHN format-2 .mat reader (libmatio underneath). matio opens files by
// name only, so each input is written to an in-memory file (memfd) and read through its
// /proc/self/fd path. dtn::error is the expected outcome for malformed input; a crash, a
// sanitizer report or any other exception is a finding.
//   clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude fuzz/mat_fuzz.cpp -lz -lmatio
//   ./mat_fuzz fuzz/corpus/mat -max_total_time=30
// Note: libmatio itself is not built with sanitizers here, so memory errors inside it are only
// seen when they crash; the reader's own code and its use of matio's results are instrumented.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <matio.h>

#include <dtn/data/svhn_mat.hpp>

#include "memfile.hpp"

// Known libmatio 1.5.23 leak, not ours: when Mat_VarReadDataLinear meets a corrupt deflate
// stream it returns an error without freeing the z_stream it made with inflateCopy (about 40 KB
// per failed read; Mat_VarRead frees it). Only that allocation site is suppressed.
extern "C" const char* __lsan_default_suppressions() { return "leak:inflateCopy\n"; }

namespace {
void quiet_log(int, char*) {}

struct MemFile : FuzzMemFile {
  MemFile() : FuzzMemFile("dtn_mat_fuzz") {
    Mat_LogInitFunc("mat_fuzz", quiet_log);  // matio's diagnostics would flood the output
  }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static MemFile file;
  file.set(data, size);
  dtn::data::ImageSet set;
  try {
    set = dtn::data::read_svhn_mat(file.path);
  } catch (const dtn::error&) {
    return 0;
  }
  // A file that parsed must be self-consistent: buffer sizes match n, c, h, w; labels 0..9.
  try {
    set.validate("fuzz-input");
  } catch (const dtn::error& e) {
    std::fprintf(stderr, "inconsistent ImageSet from read_svhn_mat: %s\n", e.what());
    __builtin_trap();
  }
  return 0;
}
