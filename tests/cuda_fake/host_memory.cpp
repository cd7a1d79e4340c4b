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

void* operator new(std::size_t bytes) {
  if (failures_off == 0 && host_fail_in >= 0 && host_fail_in-- == 0) throw std::bad_alloc();
  if (void* p = std::malloc(bytes == 0 ? 1 : bytes)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif  // DTN_FAKE_HOST_OOM
