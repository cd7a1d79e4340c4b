// libFuzzer harness for the safetensors reader: any input must either parse or raise a
// dtn::error; a crash, a sanitizer report or another exception type is a bug. Whatever parses
// must serialize and parse back to the same tensors and metadata.
#include <cstddef>
#include <cstdint>

#include "dtn/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  dtn::io::SafetensorsFile f;
  try {
    f = dtn::io::parse_safetensors(data, size, "fuzz-input");
  } catch (const dtn::error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }
  const auto bytes = dtn::io::serialize_safetensors(f.tensors, f.metadata);
  const auto g = dtn::io::parse_safetensors(bytes.data(), bytes.size(), "fuzz-reserialized");
  if (g.metadata != f.metadata || g.tensors.size() != f.tensors.size()) __builtin_trap();
  for (std::size_t i = 0; i < g.tensors.size(); ++i) {
    const auto& a = f.tensors[i];
    const auto& b = g.tensors[i];
    if (a.name != b.name || a.dtype != b.dtype || a.shape != b.shape || a.data != b.data) __builtin_trap();
  }
  return 0;
}
