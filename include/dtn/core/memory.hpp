#pragma once
// Memory<Dev>: allocation and copies for one device. The CPU one is here; the CUDA one
// (a caching allocator over cudaMalloc) lives in <dtn/cuda.cuh>, so CPU-only builds never
// see a CUDA header.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

#include "device.hpp"

namespace dtn {

template <class Dev>
struct Memory {
  static_assert(always_false<Dev>::value,
                "dtn: this device has no backend in this translation unit. For dtn::Cuda, include "
                "<dtn/cuda.cuh> and compile the file with nvcc (CMake target dtn::cuda).");
};

template <>
struct Memory<Cpu> {
  static constexpr std::size_t alignment = 64;
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    std::size_t rounded = (bytes + alignment - 1) / alignment * alignment;
    void* p = std::aligned_alloc(alignment, rounded);
    if (!p) throw std::bad_alloc();
    return p;
  }
  static void deallocate(void* p, std::size_t /*bytes*/) { std::free(p); }
  static void memset_zero(void* p, std::size_t bytes) {
    if (bytes) std::memset(p, 0, bytes);
  }
};

// A std::allocator for host scratch buffers (std::vector<T, AlignedAllocator<T>>) whose blocks are
// 64-byte aligned, as Tensor storage is: the vectorised kernels then load and store whole cache
// lines. (With std::vector's 16-byte alignment, the im2col columns that conv.hpp's small-k kernel
// reads made every 64-byte load span two lines: f.0's forward kernel took 17% longer.)
template <class T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() noexcept = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(Memory<Cpu>::allocate(n == 0 ? 1 : n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { Memory<Cpu>::deallocate(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const AlignedAllocator<U>&) const noexcept { return false; }
};

// Copy<Dst, Src>::run(dst, src, bytes). Cross-device specialisations live in the CUDA headers.
template <class Dst, class Src>
struct Copy {
  static_assert(always_false<Dst>::value,
                "dtn: no copy between these devices here; include <dtn/cuda.cuh> for dtn::Cuda.");
};
template <>
struct Copy<Cpu, Cpu> {
  static void run(void* dst, const void* src, std::size_t bytes) {
    if (bytes) std::memcpy(dst, src, bytes);
  }
};

}  // namespace dtn
