#pragma once
// Device tags. Dispatch to a backend is decided at compile time by these types
// (dtn::Backend<Dev>), never by a run-time enum.
#include <type_traits>

namespace dtn {

struct Cpu {
  static constexpr const char* name = "cpu";
};
struct Cuda {
  static constexpr const char* name = "cuda";
};

template <class T>
struct always_false : std::false_type {};

}  // namespace dtn
