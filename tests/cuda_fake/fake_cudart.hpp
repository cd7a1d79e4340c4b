#pragma once
// A scripted stand-in for the part of the CUDA runtime, cuDNN and cuBLAS host APIs that dtn's
// caching allocator and per-thread Context call (tests/cuda_fake/fake_cudart.cpp defines those
// functions; the test executable links no CUDA library). It models what the correctness of that
// code rests on, so that it runs and is checked on a machine with no GPU, under the sanitizers of
// the CPU builds:
//
// - device memory: host memory from malloc, with a capacity (cudaMalloc fails with
//   cudaErrorMemoryAllocation beyond it) and the device current at each cudaFree; memsets and
//   copies are done at once and count as work queued on their stream;
// - stream order: each stream has a count of work queued on it (fake::enqueue); an event records
//   a stream's count, and cudaStreamWaitEvent records that the waiting stream now depends on that
//   stream up to that count (fake::waited_for);
// - graph capture: cudaStreamBeginCapture/EndCapture, cudaStreamIsCapturing, the thread's capture
//   interaction mode (cudaThreadExchangeStreamCaptureMode); a stream that waits on an event
//   recorded inside a capture joins that capture (as Context::fork's second lane does), and the
//   capture ends with cudaErrorStreamCaptureUnjoined unless the origin stream has since waited
//   for all such a stream queued in it; a captured stream may not wait on work outside its
//   capture (cudaErrorStreamCaptureIsolation); CUDA's rule that a thread in global or
//   thread-local mode with a capture of its own under way may not cudaMalloc or cudaFree
//   (refused with cudaErrorStreamCaptureUnsupported, the capture invalidated), and that nothing
//   may synchronise the device while any stream is being captured, nor a stream being captured;
// - streams, events, cuDNN and cuBLAS handles made and destroyed (counts; a cuBLAS handle's stream,
//   workspace and math mode);
// - what CUDA would not report, or would report far from its cause, is listed as a misuse
//   (fake::misuses): a cudaFree of a pointer cudaMalloc did not return (double free included), use
//   of a destroyed stream or handle, an unsafe call during a capture.
// Errors are kept per thread until cudaGetLastError, as the runtime's non-sticky errors are.
#include <cuda_runtime.h>

#include <cstddef>
#include <exception>
#include <string>
#include <vector>

namespace fake {

// Starts over: counts, waits, misuses, injected failures, the streams' work and captures, the
// events' records (allocations still live are kept aside, never freed nor reused; streams,
// events and handles stay valid, since code under test may hold some across cases) on a device
// of `capacity` bytes;
// `devices` devices exist, device 0 current on the calling thread (and on every thread that has
// not set another).
void reset(std::size_t capacity = std::size_t(1) << 30, int devices = 2);

// A distinct stream handle (never dereferenced), for tests that need no real stream object.
cudaStream_t stream(int i);
// Queues n units of work on s; position(s): the units queued on s so far.
void enqueue(cudaStream_t s, long n = 1);
long position(cudaStream_t s);
// Whether `waiter` was made to wait (cudaStreamWaitEvent) for `on` at a position of at least `at`.
bool waited_for(cudaStream_t waiter, cudaStream_t on, long at);
// cudaStreamWaitEvent calls that made one stream wait for another so far.
std::size_t waits();
// Whether s is part of a capture now (begun on it, or joined by waiting on one of its events).
bool capturing(cudaStream_t s);
// Streams that joined a capture by waiting on an event recorded in it.
std::size_t capture_joins();

std::size_t device_syncs();     // cudaDeviceSynchronize calls that succeeded
std::size_t stream_syncs();     // cudaStreamSynchronize calls that succeeded
std::size_t mallocs();          // cudaMalloc calls that succeeded
std::size_t frees();            // cudaFree calls that succeeded
std::size_t live_blocks();      // allocations not yet freed
std::size_t live_bytes();
bool is_live(const void* p);
// The device that was current at the cudaFree of each pointer freed so far, in order.
std::vector<int> free_devices();
// The capture interaction mode the calling thread had at its last successful cudaMalloc.
cudaStreamCaptureMode mode_at_last_malloc();

// Objects made and destroyed so far (streams by cudaStreamCreateWithFlags only).
struct Objects {
  std::size_t streams_made = 0, streams_destroyed = 0, events_made = 0, events_destroyed = 0;
  std::size_t cudnn_made = 0, cudnn_destroyed = 0, cublas_made = 0, cublas_destroyed = 0;
};
Objects objects();
// The stream, workspace (pointer, bytes) and math mode a live cuBLAS handle was last given.
struct CublasState {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  int math_mode = 0;
};
CublasState cublas_state(const void* handle);
// The stream a live cuDNN handle was last bound to.
cudaStream_t cudnn_stream(const void* handle);

// The n-th call from now (0: the next one) of the function named `call` (e.g. "cudaFree",
// "cudaEventRecord", "cublasSetWorkspace_v2") fails with `status` (a cudaError_t, cudnnStatus_t or
// cublasStatus_t as the function returns), once. Setting another replaces it.
void fail_call(const std::string& call, int n, int status);

// The n-th global operator new from now on the calling thread (0: the next one) throws
// std::bad_alloc, once; n < 0: none does (host_memory.cpp). Where the executable cannot replace
// operator new (Clang's sanitizer runtimes define it in the static library they link), it is not
// declared and DTN_FAKE_HOST_OOM is 0: the tests that need it are left out of that build (GCC's
// sanitizers, the native and the Clang builds run them).
#if defined(__clang__) && defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define DTN_FAKE_HOST_OOM 0
#endif
#endif
#ifndef DTN_FAKE_HOST_OOM
#define DTN_FAKE_HOST_OOM 1
#endif
#if DTN_FAKE_HOST_OOM
void fail_host_allocation(int n);
#endif
namespace detail {
// While one exists on a thread, no injected failure hits that thread: the fake's own bookkeeping
// is not the code under test.
struct HostFailuresOff {
  HostFailuresOff();
  ~HostFailuresOff();
  HostFailuresOff(const HostFailuresOff&) = delete;
  HostFailuresOff& operator=(const HostFailuresOff&) = delete;
};
}  // namespace detail

// What the code under test did that CUDA forbids or would not report (empty: nothing).
std::vector<std::string> misuses();

// For the tests: the message of the E that f throws, or a text saying that none was thrown (an
// exception of another type propagates); whether s contains part.
template <class E = std::exception, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(nothing thrown)";
}
inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace fake
