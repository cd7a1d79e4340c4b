// The caching allocator's one-device rule (CachingAllocator::bind_device), as bookkeeping: the
// first device bound stays, the same device again is accepted, another is refused with a message
// that names both devices and who asked. No GPU needed (no CUDA call is made); the GPU test in
// tests/cuda/test_runtime.cu checks that contexts and allocations go through it.
#include <doctest/doctest.h>

#include <string>

#include <dtn/backend/cuda/allocator.cuh>

TEST_CASE("CachingAllocator::bind_device: the first device binds, the same one is accepted, another is refused by name") {
  dtn::cuda::CachingAllocator a;
  CHECK(a.device() == -1);
  a.bind_device(2, "first context");
  CHECK(a.device() == 2);
  a.bind_device(2, "second context");
  CHECK(a.device() == 2);
  std::string message;
  try {
    a.bind_device(0, "a thread's context");
  } catch (const dtn::cuda_error& e) {
    message = e.what();
  }
  CHECK(message.find("a thread's context") != std::string::npos);
  CHECK(message.find("current device is 0") != std::string::npos);
  CHECK(message.find("one device per process, device 2") != std::string::npos);
  CHECK(message.find("cudaSetDevice(2)") != std::string::npos);
  CHECK(a.device() == 2);  // a refused device does not rebind
  CHECK(a.stats().num_cuda_malloc == 0);
}
