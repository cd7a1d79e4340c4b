// libFuzzer target for dtn's zlib-only MAT v5 reader (data/mat5_native.hpp), the one used where
// libmatio is not installed. Inputs go through an in-memory file (memfd). dtn::error is the
// expected outcome for malformed input; a crash, a sanitizer report or any other exception is a
// finding. Seeds: fuzz/corpus/mat_native (the .mat seeds).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <dtn/data/mat5_native.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static int fd = ::memfd_create("dtn_mat_native_fuzz", 0);
  if (fd < 0) std::abort();
  if (::ftruncate(fd, 0) != 0) std::abort();
  std::size_t done = 0;
  while (done < size) {
    const ssize_t w = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (w <= 0) std::abort();
    done += static_cast<std::size_t>(w);
  }
  try {
    const dtn::data::ImageSet set = dtn::data::read_svhn_mat_native("/proc/self/fd/" + std::to_string(fd));
    if (set.pixels.size() != static_cast<std::size_t>(set.n) * 3 * set.h * set.w || set.labels.size() != static_cast<std::size_t>(set.n))
      std::abort();
    for (auto l : set.labels)
      if (l > 9) std::abort();
  } catch (const dtn::error&) {
  }
  return 0;
}
