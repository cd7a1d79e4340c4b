#pragma once
// Memory<Cuda> (through the caching allocator, on the calling thread's stream) and the copies
// between host and device.
//
// Synchronisation rules (the only places the CUDA backend waits for the device):
//  * Copy<Cpu, Cuda> (device -> host) synchronises the stream: the host data is valid on return.
//  * Copy<Cuda, Cpu> (host -> device) is queued on the stream. From ordinary (pageable) host
//    memory, which every dtn CPU tensor is, CUDA stages the data before returning, so the host
//    buffer may be reused at once. From pinned (page-locked) memory the copy would be truly
//    asynchronous, so it synchronises too: on return the host buffer may be reused either way.
//  * Copy<Cuda, Cuda> and memset_zero are queued on the stream and do not wait.
#include <cuda_runtime.h>

#include <cstddef>

#include "../../core/memory.hpp"
#include "allocator.cuh"
#include "check.cuh"
#include "context.cuh"

namespace dtn {

template <>
struct Memory<Cuda> {
  static void* allocate(std::size_t bytes) { return cuda::caching_allocator().allocate(bytes, cuda::stream()); }
  static void deallocate(void* p, std::size_t /*bytes*/) noexcept {
    if (!p) return;
    // Tag the block with this thread's current stream; while side_by_side's two lanes run, the
    // context holds it until they join (Context::hold_free).
    cudaStream_t s = nullptr;
    try {
      cuda::Context& ctx = cuda::context();
      if (ctx.hold_free(p)) return;
      s = ctx.stream();
    } catch (...) {  // no context in this thread: the block's stream is unknown
      cuda::caching_allocator().deallocate_unknown_stream(p);
      return;
    }
    cuda::caching_allocator().deallocate(p, s);
  }
  static void memset_zero(void* p, std::size_t bytes) {
    if (bytes) DTN_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cuda::stream()));
  }
};

// Device -> host: waits, so the host data is valid on return.
template <>
struct Copy<Cpu, Cuda> {
  static void run(void* dst, const void* src, std::size_t bytes) {
    if (!bytes) return;
    cudaStream_t s = cuda::stream();
    DTN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    DTN_CUDA_CHECK(cudaStreamSynchronize(s));
  }
};

// Host -> device: the host buffer may be reused on return (see above).
template <>
struct Copy<Cuda, Cpu> {
  static void run(void* dst, const void* src, std::size_t bytes) {
    if (!bytes) return;
    cudaStream_t s = cuda::stream();
    DTN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
    cudaPointerAttributes attr{};
    DTN_CUDA_CHECK(cudaPointerGetAttributes(&attr, src));
    if (attr.type == cudaMemoryTypeHost) DTN_CUDA_CHECK(cudaStreamSynchronize(s));  // pinned source
  }
};

// Device -> device: queued on the stream.
template <>
struct Copy<Cuda, Cuda> {
  static void run(void* dst, const void* src, std::size_t bytes) {
    if (bytes) DTN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda::stream()));
  }
};

}  // namespace dtn
