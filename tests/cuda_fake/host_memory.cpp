// The test executable's global operator new and delete: malloc and free, except that a test can
// make the n-th operator new of its thread throw std::bad_alloc (fake::fail_host_allocation), to
// check what the code under test does when the host runs out of memory at each point.
#include <cstddef>
#include <cstdlib>
#include <new>

#include "fake_cudart.hpp"

namespace {
thread_local int failures_off = 0;  // HostFailuresOff guards alive on this thread
}  // namespace

namespace fake {
namespace detail {
HostFailuresOff::HostFailuresOff() { ++failures_off; }
HostFailuresOff::~HostFailuresOff() { --failures_off; }
}  // namespace detail
}  // namespace fake

#if DTN_FAKE_HOST_OOM
namespace {
thread_local int host_fail_in = -1;
}  // namespace

namespace fake {
void fail_host_allocation(int n) { host_fail_in = n; }
}  // namespace fake

// Every form but the aligned ones (which keep the library's, its own pair of new and delete), so
// that no block from a sanitizer runtime's operator new reaches this free() or the reverse.
void* operator new(std::size_t bytes) {
  if (failures_off == 0 && host_fail_in >= 0 && host_fail_in-- == 0) throw std::bad_alloc();
  if (void* p = std::malloc(bytes == 0 ? 1 : bytes)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t bytes) { return ::operator new(bytes); }
void* operator new(std::size_t bytes, const std::nothrow_t&) noexcept {
  try {
    return ::operator new(bytes);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t bytes, const std::nothrow_t& nt) noexcept { return ::operator new(bytes, nt); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#endif  // DTN_FAKE_HOST_OOM
