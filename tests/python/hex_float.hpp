#pragma once
// The interop helper programs (st_roundtrip.cpp, net_interop.cpp, step_interop.cpp) write floats
// into JSON as C99 hex strings ("%a"), so that every bit survives; Python reads them back with
// float.fromhex.
#include <cstdio>
#include <string>

namespace interop {

inline std::string hex(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}

}  // namespace interop
