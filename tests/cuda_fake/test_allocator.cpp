// The caching allocator (include/dtn/backend/cuda/allocator.cuh) against the fake CUDA runtime of
// fake_cudart.hpp: reuse on a stream, the device-side handoff between streams, what a graph
// capture allows, the out-of-memory release and retry, blocks of unknown streams, the bound
// device, a failing release, and many threads at once. Its GPU test (tests/cuda/test_runtime.cu)
// checks the same handoff on a GPU where one is lent; these run in every test run.
#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <dtn/backend/cuda/allocator.cuh>

#include "fake_cudart.hpp"

namespace {

using dtn::cuda::CachingAllocator;
constexpr std::size_t MiB = std::size_t(1) << 20;

using fake::contains;

// The message of the dtn::cuda_error f throws (any other exception fails the case).
template <class F>
std::string error_of(F&& f) {
  return fake::error_of<dtn::cuda_error>(f);
}

}  // namespace

TEST_CASE("fake CUDA runtime: it enforces what the allocator's tests rely on") {
  // So that a test below passing means the allocator kept the rule, not that the fake has none.
  fake::reset(4 * MiB);
  const cudaStream_t a = fake::stream(1), b = fake::stream(2);
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 5 * MiB) == cudaErrorMemoryAllocation);
  CHECK(cudaGetLastError() == cudaErrorMemoryAllocation);
  CHECK(cudaGetLastError() == cudaSuccess);
  // A thread capturing in thread-local mode may not cudaMalloc; the refusal invalidates the capture.
  REQUIRE(cudaStreamBeginCapture(a, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(cudaMalloc(&p, 1024) == cudaErrorStreamCaptureUnsupported);
  CHECK(fake::misuses().size() == 1);
  cudaGraph_t graph = nullptr;
  CHECK(cudaStreamEndCapture(a, &graph) == cudaErrorStreamCaptureInvalidated);
  // A stream that waits on an event recorded inside a capture joins it, and the capture cannot
  // end until it has waited for that stream in turn.
  cudaEvent_t e = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess);
  REQUIRE(cudaStreamBeginCapture(a, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  REQUIRE(cudaEventRecord(e, a) == cudaSuccess);
  REQUIRE(cudaStreamWaitEvent(b, e, 0) == cudaSuccess);
  CHECK(fake::capturing(b));
  CHECK(fake::capture_joins() == 1);
  CHECK(cudaStreamEndCapture(a, &graph) == cudaErrorStreamCaptureUnjoined);
  CHECK(!fake::capturing(b));
  // No device synchronisation while a stream is being captured, in any capture mode.
  REQUIRE(cudaStreamBeginCapture(a, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  CHECK(cudaDeviceSynchronize() == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(a, &graph) == cudaErrorStreamCaptureInvalidated);
  // A captured stream may not wait on work outside its capture.
  REQUIRE(cudaEventRecord(e, b) == cudaSuccess);
  REQUIRE(cudaStreamBeginCapture(a, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(cudaStreamWaitEvent(a, e, 0) == cudaErrorStreamCaptureIsolation);
  CHECK(cudaStreamEndCapture(a, &graph) == cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();
  CHECK(fake::misuses().size() == 3);
  // A double free: listed.
  REQUIRE(cudaMalloc(&p, 1024) == cudaSuccess);
  REQUIRE(cudaFree(p) == cudaSuccess);
  CHECK(cudaFree(p) == cudaErrorInvalidValue);
  CHECK(fake::misuses().size() == 4);
  (void)cudaGetLastError();
  fake::reset();
}

TEST_CASE("caching allocator: a freed block is reused on its stream with no cudaMalloc, no wait and no synchronisation") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1);
  CHECK(alloc.allocate(0, a) == nullptr);
  void* p = alloc.allocate(1000, a);
  REQUIRE(p != nullptr);
  CHECK(fake::is_live(p));
  CHECK(alloc.stats().bytes_in_use == 1024);
  CHECK(alloc.stats().bytes_reserved == 1024);
  for (int i = 0; i < 100; ++i) {
    alloc.deallocate(p, a);
    fake::enqueue(a);  // the block's last use, still queued
    CHECK(alloc.allocate(700, a) == p);  // the same 1024-byte class
  }
  const dtn::cuda::AllocatorStats s = alloc.stats();
  CHECK(s.num_cuda_malloc == 1);
  CHECK(fake::mallocs() == 1);
  CHECK(s.num_allocations == 101);
  CHECK(s.num_stream_waits == 0);
  CHECK(fake::waits() == 0);
  CHECK(fake::device_syncs() == 0);
  CHECK(fake::stream_syncs() == 0);
  // Pointers it did not hand out are ignored.
  int not_a_block = 0;
  alloc.deallocate(&not_a_block, a);
  alloc.deallocate(nullptr, a);
  CHECK(alloc.stats().bytes_in_use == 1024);
  alloc.deallocate(p, a);
  CHECK(alloc.stats().cached_blocks == 1);
  alloc.release_cached();
  CHECK(fake::device_syncs() == 1);
  CHECK(fake::live_blocks() == 0);
  CHECK(alloc.stats().bytes_reserved == 0);
  CHECK(alloc.stats().num_cuda_free == 1);
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: a block of stream A goes to stream B once B waits, on the device, for all A has queued") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1), b = fake::stream(2);
  void* p = alloc.allocate(4096, a);
  fake::enqueue(a, 3);  // work that uses p
  alloc.deallocate(p, a);
  fake::enqueue(a, 2);  // more work queued on A after the free
  CHECK(alloc.allocate(4096, b) == p);
  CHECK(fake::waited_for(b, a, 5));  // everything queued on A at the handoff, not just up to the free
  CHECK(fake::waits() == 1);
  CHECK(alloc.stats().num_stream_waits == 1);
  CHECK(fake::stream_syncs() == 0);  // the host does not wait
  CHECK(fake::device_syncs() == 0);
  CHECK(fake::mallocs() == 1);
  alloc.deallocate(p, b);
  alloc.release_cached();
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: the asking stream's own blocks first, newest first, another stream's only when it has none") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1), b = fake::stream(2);
  void* p1 = alloc.allocate(4096, a);
  void* p2 = alloc.allocate(4096, a);
  void* p3 = alloc.allocate(4096, b);
  void* big = alloc.allocate(MiB, a);
  alloc.deallocate(p1, a);
  alloc.deallocate(p3, b);
  alloc.deallocate(p2, a);
  alloc.deallocate(big, a);
  CHECK(alloc.allocate(4096, b) == p3);
  CHECK(alloc.allocate(4096, a) == p2);
  CHECK(alloc.allocate(4096, a) == p1);
  CHECK(fake::waits() == 0);
  // Another class is not served by a larger block.
  void* small = alloc.allocate(512, b);
  CHECK(small != big);
  CHECK(fake::mallocs() == 5);
  // Only A's block left in the class: B takes it with a wait.
  fake::enqueue(a, 7);
  alloc.deallocate(p1, a);
  CHECK(alloc.allocate(4096, b) == p1);
  CHECK(fake::waited_for(b, a, 7));
  CHECK(alloc.stats().num_stream_waits == 1);
  for (void* p : {p1, p3, small}) alloc.deallocate(p, b);
  alloc.deallocate(p2, a);
  alloc.release_cached();
  CHECK(fake::live_blocks() == 0);
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: after forget_stream (its stream destroyed) a block goes to any stream with no wait") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1), b = fake::stream(2);
  void* p = alloc.allocate(4096, a);
  alloc.deallocate(p, a);
  alloc.forget_stream(a);
  CHECK(alloc.allocate(4096, b) == p);
  CHECK(fake::waits() == 0);
  CHECK(alloc.stats().num_stream_waits == 0);
  alloc.deallocate(p, b);
  alloc.release_cached();
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: a capturing stream is served its own cached blocks, a cudaMalloc or a wait is refused by name") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1), b = fake::stream(2);
  void* pa = alloc.allocate(4096, a);
  void* pb = alloc.allocate(4096, b);
  alloc.deallocate(pa, a);
  alloc.deallocate(pb, b);
  alloc.begin_capture(a, cudaStreamCaptureModeThreadLocal);
  CHECK(alloc.allocate(4096, a) == pa);  // a cache hit: no CUDA call enters the graph
  // Only B's block is left in the class: taking it would make A wait for B inside the capture.
  const std::string wait = error_of([&] { alloc.allocate(4096, a); });
  CHECK(contains(wait, "a device allocation that has to wait for another stream during a CUDA graph capture"));
  // No block of the class at all: a cudaMalloc, which a capture cannot hold.
  const std::string fresh = error_of([&] { alloc.allocate(MiB, a); });
  CHECK(contains(fresh, "cudaMalloc (a device allocation the cache cannot serve) during a CUDA graph capture"));
  CHECK(contains(fresh, "run the captured work once eagerly before capturing it"));
  CHECK(fake::mallocs() == 2);
  CHECK(fake::waits() == 0);
  CHECK(alloc.stats().num_allocations == 3);
  CHECK(alloc.stats().bytes_in_use == 4096);
  cudaGraph_t graph = nullptr;
  CHECK(fake::capture_joins() == 0);
  CHECK(alloc.end_capture(a, &graph) == cudaSuccess);  // not invalidated
  CHECK(graph != nullptr);
  alloc.deallocate(pa, a);
  alloc.release_cached();
  CHECK(fake::live_blocks() == 0);
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: a block whose stream is being captured is passed over, the cudaMalloc instead runs in relaxed mode") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1), b = fake::stream(2);
  void* pa = alloc.allocate(4096, a);
  fake::enqueue(a, 2);
  alloc.deallocate(pa, a);
  // This thread captures A in thread-local mode: a plain cudaMalloc from it would be refused
  // and would invalidate the capture (the fake's first test case).
  alloc.begin_capture(a, cudaStreamCaptureModeThreadLocal);
  void* q = alloc.allocate(4096, b);
  CHECK(q != pa);  // an event recorded on A now would be a node of A's graph, and B would join it
  CHECK(!fake::capturing(b));
  CHECK(fake::mallocs() == 2);
  CHECK(fake::mode_at_last_malloc() == cudaStreamCaptureModeRelaxed);
  CHECK(fake::waits() == 0);
  // The thread's own mode is back to what it was.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  REQUIRE(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess);
  CHECK(mode == cudaStreamCaptureModeGlobal);
  REQUIRE(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  CHECK(alloc.end_capture(a, &graph) == cudaSuccess);
  // Captured no more: A's block goes to B with a wait.
  alloc.deallocate(q, b);
  CHECK(alloc.allocate(4096, b) == q);
  CHECK(alloc.allocate(4096, b) == pa);
  CHECK(fake::waited_for(b, a, 2));
  alloc.deallocate(q, b);
  alloc.deallocate(pa, b);
  alloc.release_cached();
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: another thread's cudaMalloc during a global-mode capture runs relaxed and leaves the capture intact") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1), b = fake::stream(2);
  alloc.begin_capture(a, cudaStreamCaptureModeGlobal);
  void* p = nullptr;
  std::string thrown;  // an exception must not leave the thread (std::terminate)
  std::thread other([&] {
    try {
      p = alloc.allocate(4096, b);
    } catch (const std::exception& e) {
      thrown = e.what();
    }
  });
  other.join();
  CHECK(thrown == "");
  CHECK(p != nullptr);
  CHECK(fake::mode_at_last_malloc() == cudaStreamCaptureModeRelaxed);
  cudaGraph_t graph = nullptr;
  CHECK(alloc.end_capture(a, &graph) == cudaSuccess);
  alloc.deallocate(p, b);
  alloc.release_cached();
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: out of memory, the cache is given back after a device synchronisation and the cudaMalloc retried") {
  fake::reset(4 * MiB);
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1);
  void* p1 = alloc.allocate(2 * MiB, a);
  void* p2 = alloc.allocate(MiB, a);
  alloc.deallocate(p1, a);
  alloc.deallocate(p2, a);
  CHECK(alloc.stats().bytes_reserved == 3 * MiB);
  void* q = alloc.allocate(3 * MiB, a);  // 3 MiB more do not fit beside the 3 MiB cached
  CHECK(q != nullptr);
  CHECK(fake::device_syncs() == 1);
  CHECK(fake::frees() == 2);
  dtn::cuda::AllocatorStats s = alloc.stats();
  CHECK(s.num_cuda_free == 2);
  CHECK(s.num_cuda_malloc == 3);
  CHECK(s.cached_blocks == 0);
  CHECK(s.bytes_reserved == 3 * MiB);
  CHECK(s.bytes_in_use == 3 * MiB);
  CHECK(fake::live_bytes() == 3 * MiB);
  // Still too much with nothing cached: the error says what was asked and what is held.
  const std::string msg = error_of([&] { alloc.allocate(2 * MiB, a); });
  CHECK(contains(msg, "cudaMalloc (dtn caching allocator)"));
  CHECK(contains(msg, "cudaErrorMemoryAllocation"));
  CHECK(contains(msg, "requested 2097152 bytes with 3145728 in use and 3145728 reserved"));
  CHECK(!contains(msg, "capture"));
  CHECK(cudaGetLastError() == cudaSuccess);  // the error is not left behind for a later check
  CHECK(alloc.stats().num_allocations == 3);
  alloc.deallocate(q, a);
  alloc.release_cached();
  CHECK(fake::live_blocks() == 0);
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: out of memory during a capture, the cache is kept (no device-wide wait) and the error says why") {
  fake::reset(4 * MiB);
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1), b = fake::stream(2), c = fake::stream(3);
  void* p = alloc.allocate(2 * MiB, b);
  alloc.deallocate(p, b);
  alloc.begin_capture(a, cudaStreamCaptureModeThreadLocal);
  const std::string msg = error_of([&] { alloc.allocate(3 * MiB, c); });
  CHECK(contains(msg, "cudaErrorMemoryAllocation"));
  CHECK(contains(msg, "the cache was not released: a CUDA graph capture is under way"));
  CHECK(fake::device_syncs() == 0);
  CHECK(alloc.stats().cached_blocks == 1);
  cudaGraph_t graph = nullptr;
  CHECK(alloc.end_capture(a, &graph) == cudaSuccess);  // the capture survived
  // With the capture over, the same request releases the cache and succeeds.
  void* q = alloc.allocate(3 * MiB, c);
  CHECK(q != nullptr);
  CHECK(fake::device_syncs() == 1);
  CHECK(fake::frees() == 1);  // p's block (q may have its address: the fake's memory is malloc's)
  alloc.deallocate(q, c);
  alloc.release_cached();
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: release_cached during a capture is refused by name, the capture and the cache left intact") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1), b = fake::stream(2);
  void* p = alloc.allocate(4096, b);
  alloc.deallocate(p, b);
  alloc.begin_capture(a, cudaStreamCaptureModeThreadLocal);
  std::string msg;
  std::thread other([&] { msg = error_of([&] { alloc.release_cached(); }); });  // another thread, as it may be
  other.join();
  CHECK(contains(msg, "a CUDA graph capture is under way"));
  CHECK(contains(msg, "release after end_capture"));
  CHECK(fake::device_syncs() == 0);
  CHECK(alloc.stats().cached_blocks == 1);
  cudaGraph_t graph = nullptr;
  CHECK(alloc.end_capture(a, &graph) == cudaSuccess);
  alloc.release_cached();
  CHECK(fake::live_blocks() == 0);
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: a thread whose capture mode cannot be relaxed still allocates outside captures, and no error is left behind") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1);
  fake::fail_call("cudaThreadExchangeStreamCaptureMode", 0, cudaErrorUnknown);
  void* p = alloc.allocate(4096, a);
  CHECK(p != nullptr);
  CHECK(fake::mode_at_last_malloc() == cudaStreamCaptureModeGlobal);  // not relaxed, not changed
  CHECK(cudaGetLastError() == cudaSuccess);
  alloc.deallocate(p, a);
  alloc.release_cached();
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: a block freed with its stream unknown is never reused, and release_cached frees it") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1);
  void* p = alloc.allocate(4096, a);
  alloc.deallocate_unknown_stream(p);
  dtn::cuda::AllocatorStats s = alloc.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.bytes_reserved == 4096);
  CHECK(s.cached_blocks == 0);
  void* q = alloc.allocate(4096, a);
  CHECK(q != p);
  CHECK(fake::mallocs() == 2);
  alloc.release_cached();
  CHECK(fake::device_syncs() == 1);  // its last use may still be queued on any stream
  CHECK(!fake::is_live(p));
  CHECK(fake::is_live(q));
  CHECK(alloc.stats().bytes_reserved == 4096);
  CHECK(alloc.stats().num_cuda_free == 1);
  alloc.deallocate(q, a);
  alloc.release_cached();
  CHECK(fake::live_blocks() == 0);
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: allocating on another device is refused, the release frees on the bound device and restores the current one") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1);
  void* p = alloc.allocate(4096, a);  // binds device 0
  alloc.deallocate(p, a);
  CHECK(alloc.device() == 0);
  REQUIRE(cudaSetDevice(1) == cudaSuccess);
  const std::string msg = error_of([&] { alloc.allocate(4096, a); });  // refused even though cached
  CHECK(contains(msg, "the current device is 1"));
  CHECK(contains(msg, "cudaSetDevice(0)"));
  CHECK(alloc.stats().num_allocations == 1);
  CHECK(alloc.stats().cached_blocks == 1);
  alloc.release_cached();
  CHECK(fake::free_devices() == std::vector<int>{0});
  int current = -1;
  REQUIRE(cudaGetDevice(&current) == cudaSuccess);
  CHECK(current == 1);
  REQUIRE(cudaSetDevice(0) == cudaSuccess);
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: a cudaFree failing in the release leaves the rest listed, and none is freed twice") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1);
  std::vector<void*> blocks;
  for (std::size_t bytes : {std::size_t(512), std::size_t(4096), MiB, 3 * MiB}) blocks.push_back(alloc.allocate(bytes, a));
  void* orphan = alloc.allocate(8192, a);
  for (void* p : blocks) alloc.deallocate(p, a);
  alloc.deallocate_unknown_stream(orphan);
  const std::size_t reserved = alloc.stats().bytes_reserved;
  fake::fail_call("cudaFree", 1, cudaErrorUnknown);  // the second cudaFree
  const std::string msg = error_of([&] { alloc.release_cached(); });
  CHECK(contains(msg, "cudaFree"));
  CHECK(fake::frees() == 1);
  dtn::cuda::AllocatorStats s = alloc.stats();
  CHECK(s.num_cuda_free == 1);
  CHECK(s.cached_blocks == 3);
  CHECK(s.bytes_reserved == fake::live_bytes());  // what it counts is what is still allocated
  CHECK(s.bytes_reserved < reserved);
  alloc.release_cached();
  CHECK(fake::frees() == 5);
  CHECK(fake::live_blocks() == 0);
  CHECK(alloc.stats().bytes_reserved == 0);
  CHECK(alloc.stats().cached_blocks == 0);
  CHECK(fake::misuses().empty());  // no pointer freed twice
}

TEST_CASE("caching allocator: four threads on their own streams, every block handed between streams came with a wait") {
  fake::reset();
  CachingAllocator alloc;
  // Where each block was last freed: its stream and how much work that stream had queued then.
  struct Freed {
    cudaStream_t stream;
    long position;
  };
  std::mutex record_mu;
  std::map<void*, Freed> freed;
  std::atomic<int> unsynchronised{0}, allocations{0}, handoffs{0};
  const std::size_t sizes[] = {512, 4096, 65536, MiB, 3 * MiB};
  auto worker = [&](int t) {
    const cudaStream_t s = fake::stream(10 + t);
    std::mt19937 rng(static_cast<std::uint32_t>(1234 + t));
    std::vector<void*> held;
    for (int i = 0; i < 3000; ++i) {
      fake::enqueue(s);
      if (held.empty() || (held.size() < 12 && rng() % 2 == 0)) {
        void* p = alloc.allocate(sizes[rng() % 5], s);
        ++allocations;
        Freed last{nullptr, 0};
        bool was_freed = false;
        {
          std::lock_guard<std::mutex> lock(record_mu);
          auto it = freed.find(p);
          if (it != freed.end()) {
            last = it->second;
            was_freed = true;
            freed.erase(it);
          }
        }
        if (was_freed && last.stream != s) {
          ++handoffs;
          if (!fake::waited_for(s, last.stream, last.position)) ++unsynchronised;
        }
        held.push_back(p);
      } else {
        const std::size_t k = rng() % held.size();
        void* p = held[k];
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
        {
          std::lock_guard<std::mutex> lock(record_mu);
          freed[p] = Freed{s, fake::position(s)};
        }
        alloc.deallocate(p, s);
      }
    }
    for (void* p : held) {
      {
        std::lock_guard<std::mutex> lock(record_mu);
        freed[p] = Freed{s, fake::position(s)};
      }
      alloc.deallocate(p, s);
    }
  };
  std::mutex thrown_mu;
  std::string thrown;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      try {
        worker(t);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(thrown_mu);
        thrown = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  REQUIRE(thrown == "");
  const dtn::cuda::AllocatorStats s = alloc.stats();
  CHECK(handoffs.load() > 0);  // the blocks did move between streams
  CHECK(unsynchronised.load() == 0);
  CHECK(s.num_stream_waits == static_cast<std::size_t>(handoffs.load()));
  CHECK(s.num_stream_waits == fake::waits());
  CHECK(s.num_allocations == static_cast<std::size_t>(allocations.load()));
  CHECK(s.bytes_in_use == 0);
  CHECK(s.num_cuda_malloc == fake::mallocs());
  CHECK(s.cached_blocks == fake::live_blocks());
  CHECK(s.bytes_reserved == fake::live_bytes());
  CHECK(fake::stream_syncs() == 0);
  CHECK(fake::device_syncs() == 0);
  alloc.release_cached();
  CHECK(fake::live_blocks() == 0);
  CHECK(fake::misuses().empty());
}

#if DTN_FAKE_HOST_OOM  // (fake_cudart.hpp)
TEST_CASE("caching allocator: out of host memory at any point of allocate, no block is lost") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1), b = fake::stream(2);
  std::vector<void*> held;
  held.reserve(16);  // so that the injected failure is the allocator's, never the test's push_back
  std::size_t held_bytes = 0;
  int failures = 0;
  // Each round: a block of one class used on A, then on B (a handoff) and cached, then an
  // allocation (of that class or of one with no cached block) whose n-th host allocation fails.
  for (int n = 0; n < 12; ++n) {
    for (cudaStream_t s : {a, b}) alloc.deallocate(alloc.allocate(4096, s), s);
    const std::size_t bytes = n % 2 ? 4096 : 3 * MiB;
    fake::fail_host_allocation(n % 3);
    try {
      held.push_back(alloc.allocate(bytes, n % 3 ? a : b));
      held_bytes += bytes;
    } catch (const std::bad_alloc&) {
      ++failures;
    }
    fake::fail_host_allocation(-1);
    // Every device block is either handed out or cached: none has fallen out of both.
    const dtn::cuda::AllocatorStats s = alloc.stats();
    CHECK(held.size() + s.cached_blocks == fake::live_blocks());
    CHECK(s.bytes_in_use == held_bytes);
    CHECK(s.bytes_reserved == fake::live_bytes());
  }
  CHECK(failures > 0);  // the injection reached allocate
  CHECK(failures < 12);
  for (void* p : held) alloc.deallocate(p, a);
  alloc.release_cached();
  CHECK(fake::live_blocks() == 0);
  CHECK(fake::misuses().empty());
}

TEST_CASE("caching allocator: out of host memory in deallocate, the block is dropped, never handed out nor freed") {
  fake::reset();
  CachingAllocator alloc;
  const cudaStream_t a = fake::stream(1);
  void* p = alloc.allocate(4096, a);
  fake::fail_host_allocation(0);  // listing it on its class's free list
  alloc.deallocate(p, a);         // does not throw (destructors call it)
  fake::fail_host_allocation(-1);
  dtn::cuda::AllocatorStats s = alloc.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.cached_blocks == 0);
  CHECK(s.bytes_reserved == 4096);  // still counted: its device memory is not given back
  void* q = alloc.allocate(4096, a);
  CHECK(q != p);
  // The same for a block freed with its stream unknown (it would have waited for the release).
  void* r = alloc.allocate(8192, a);
  fake::fail_host_allocation(0);
  alloc.deallocate_unknown_stream(r);
  fake::fail_host_allocation(-1);
  CHECK(alloc.stats().bytes_in_use == 4096);
  CHECK(alloc.stats().bytes_reserved == 4096 + 4096 + 8192);
  alloc.deallocate(q, a);
  alloc.release_cached();
  CHECK(fake::is_live(p));  // dropped, not freed: the process keeps them until it ends
  CHECK(fake::is_live(r));
  CHECK(!fake::is_live(q));
  CHECK(fake::misuses().empty());
}
#endif  // DTN_FAKE_HOST_OOM
