#pragma once
// A scripted stand-in for the part of the CUDA runtime's host API that dtn's caching allocator
// calls (tests/cuda_fake/fake_cudart.cpp defines those functions; the test executable does not
// link libcudart). It models what the allocator's correctness rests on, so that its logic runs
// and is checked on a machine with no GPU, under the sanitizers of the CPU builds:
//
// - device memory: host memory from malloc, with a capacity (cudaMalloc fails with
//   cudaErrorMemoryAllocation beyond it) and the device current at each cudaMalloc/cudaFree;
// - stream order: each stream has a count of work queued on it (fake::enqueue); an event records
//   a stream's count, and cudaStreamWaitEvent records that the waiting stream now depends on that
//   stream up to that count (fake::waited_for);
// - graph capture: cudaStreamBeginCapture/EndCapture, cudaStreamIsCapturing, the thread's capture
//   interaction mode (cudaThreadExchangeStreamCaptureMode), and CUDA's rule that a thread in
//   global or thread-local mode with a capture of its own under way may not cudaMalloc, cudaFree
//   or synchronise the device: such a call fails with cudaErrorStreamCaptureUnsupported and
//   invalidates the capture, as on a GPU;
// - what CUDA would not report or would report far from its cause is listed as a misuse
//   (fake::misuses): a cudaFree of a pointer cudaMalloc did not return (double free included), a
//   stream made to wait on an event recorded inside another stream's capture (which would pull it
//   into that capture), an unsafe call during a capture.
// Errors are sticky per thread until cudaGetLastError, as the runtime's non-sticky errors are.
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <vector>

namespace fake {

// Forgets everything (allocations still live are freed) and starts a device of `capacity` bytes;
// `devices` devices exist, device 0 current on every thread that has not set another.
void reset(std::size_t capacity = std::size_t(1) << 30, int devices = 2);

// A distinct stream handle (never dereferenced); stream(0) is not the legacy default stream.
cudaStream_t stream(int i);
// Queues n units of work on s; position(s): the units queued on s so far.
void enqueue(cudaStream_t s, long n = 1);
long position(cudaStream_t s);
// Whether `waiter` was made to wait (cudaStreamWaitEvent) for `on` at a position of at least `at`.
bool waited_for(cudaStream_t waiter, cudaStream_t on, long at);
// cudaStreamWaitEvent calls that made one stream wait for another so far.
std::size_t waits();

std::size_t device_syncs();     // cudaDeviceSynchronize calls that succeeded
std::size_t stream_syncs();     // cudaStreamSynchronize calls
std::size_t mallocs();          // cudaMalloc calls that succeeded
std::size_t frees();            // cudaFree calls that succeeded
std::size_t live_blocks();      // allocations not yet freed
std::size_t live_bytes();
bool is_live(const void* p);
// The device that was current at the cudaFree of each pointer freed so far, in order.
std::vector<int> free_devices();
// The capture interaction mode the calling thread had at its last successful cudaMalloc.
cudaStreamCaptureMode mode_at_last_malloc();
// The n-th cudaFree from now (0: the next one) fails with e, once.
void fail_free(int n, cudaError_t e);

// What the code under test did that CUDA forbids or would not report (empty: nothing).
std::vector<std::string> misuses();

}  // namespace fake
