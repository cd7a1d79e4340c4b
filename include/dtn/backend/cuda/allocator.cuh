#pragma once
// A caching device allocator (the idea of PyTorch's CUDACachingAllocator, much smaller).
//
// Requests are rounded up to a size class; a freed block goes onto its class's free list and is
// handed out again for the next request of that class. cudaMalloc is called only when no cached
// block fits, and cudaFree only by release_cached() (called by the user, or on an out-of-memory
// retry). A training loop that allocates the same sizes every step therefore reaches a steady
// state with no cudaMalloc/cudaFree at all, which also keeps allocation out of captured CUDA graphs.
//
// Stream safety: a block remembers the stream it was freed on. Reusing it on the same stream is
// safe without a sync (stream order); a block is handed to another stream only when no block of
// its class was last used on the asking one, and then the new stream first waits, on the device,
// for the old one's queued work (an event: the host does not wait, so the block is ready for the
// new stream's work only, as any block is for its stream's). A thread queues its work on
// one stream (dtn::cuda::Context), so this happens across threads, and for a thread's second
// lane (side_by_side: the lane's own workspace and scratch; tensors freed while the two lanes run
// are held by the context until they join, then tagged with the thread's stream).
//
// Memory<Cuda> and the Copy<> specialisations that use it are in memory.cuh.
#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "check.cuh"

namespace dtn {
namespace cuda {
namespace detail {
// Makes `device` current for the guard's life (nothing where it is current already, or -1).
struct DeviceGuard {
  int previous = -1;
  explicit DeviceGuard(int device) {
    if (device < 0) return;
    int current = 0;
    DTN_CUDA_CHECK(cudaGetDevice(&current));
    if (current == device) return;
    DTN_CUDA_CHECK(cudaSetDevice(device));
    previous = current;
  }
  ~DeviceGuard() {
    if (previous >= 0) (void)cudaSetDevice(previous);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};
}  // namespace detail

struct AllocatorStats {
  std::size_t bytes_in_use = 0;       // bytes handed out and not yet freed (rounded sizes)
  std::size_t bytes_reserved = 0;     // bytes obtained from cudaMalloc and not yet cudaFree'd
  std::size_t peak_bytes_in_use = 0;  // high-water mark of bytes_in_use
  std::size_t num_cuda_malloc = 0;    // cudaMalloc calls so far
  std::size_t num_cuda_free = 0;      // cudaFree calls so far
  std::size_t num_allocations = 0;    // allocate() calls that returned a block
  std::size_t cached_blocks = 0;      // blocks on the free lists now
  std::size_t num_stream_waits = 0;   // blocks handed from one stream to another (a device-side wait each)
};

class CachingAllocator {
 public:
  // Size classes: multiples of 512 bytes up to 1 MiB; above that four classes per power of two
  // (2^k, 1.25, 1.5, 1.75 x 2^k), so at most 25% is lost to rounding.
  static std::size_t round_size(std::size_t bytes) {
    constexpr std::size_t small_unit = 512, small_limit = std::size_t(1) << 20;
    if (bytes <= small_limit) return (bytes + small_unit - 1) / small_unit * small_unit;
    std::size_t pow2 = small_limit;
    while (pow2 * 2 <= bytes) pow2 *= 2;  // pow2 <= bytes < 2 * pow2
    std::size_t step = pow2 / 4;
    return (bytes + step - 1) / step * step;
  }

  // A device block of at least `bytes` for use on `stream` (ready for that stream's work: another
  // stream or the host must wait for it first); nullptr for 0 bytes. Refused while a device other
  // than the bound one is current (bind_device).
  void* allocate(std::size_t bytes, cudaStream_t stream) {
    if (bytes == 0) return nullptr;
    const std::size_t cls = round_size(bytes);
    int current = 0;
    DTN_CUDA_CHECK(cudaGetDevice(&current));
    std::lock_guard<std::mutex> lock(mu_);
    bind_device_locked(current, "a device allocation (dtn caching allocator)");
    LiveEntry entry = spare_live_entry_locked();  // before a block is taken: see there
    void* p = take_cached(cls, stream);
    if (!p) {
      detail::refuse_during_capture(stream, "cudaMalloc (a device allocation the cache cannot serve)");
      p = fresh(cls);
    }
    entry.key() = p;
    entry.mapped() = cls;
    const auto listed = live_.insert(std::move(entry));
    if (!listed.inserted) listed.position->second = cls;  // as live_[p] = cls would (p is not in use twice)
    stats_.bytes_in_use += cls;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
    ++stats_.num_allocations;
    return p;
  }

  // Returns a block to its free list; `stream` is the stream whose queued work may still use it.
  // Never throws (called from destructors); pointers this allocator did not hand out are ignored.
  // A block the host has no memory left to list is dropped (never reused, counted as reserved).
  void deallocate(void* p, cudaStream_t stream) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    const std::size_t cls = take_live_locked(p);
    if (cls == 0) return;
    try {
      free_[cls].push_back(Block{p, stream, true});
      ++stats_.cached_blocks;
    } catch (...) {
    }
  }

  // deallocate() for a block whose last stream is not known (a thread whose context could not be
  // made frees it): no stream's order covers its last use, so it is not reused; release_cached()
  // frees it, after its wait for the device (counted as reserved until then). Never throws,
  // never waits.
  void deallocate_unknown_stream(void* p) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    const std::size_t cls = take_live_locked(p);
    if (cls == 0) return;
    try {
      orphans_.push_back(Orphan{p, cls});
    } catch (...) {
    }
  }

  // cudaStreamBeginCapture(s, mode) under the allocator's lock, so that no capture begins between
  // take_cached's check of a block's stream and the event it records there (which would pull the
  // asking stream into that capture); and counted, so that an out-of-memory retry does not wait
  // for the whole device (which a capture forbids) while one is under way. dtn's own captures
  // (GraphStep) begin here and end with end_capture; capture a stream whose blocks other threads
  // may take the same way (dtn::cuda::begin_capture, dtn::cuda::end_capture).
  void begin_capture(cudaStream_t s, cudaStreamCaptureMode mode) {
    std::lock_guard<std::mutex> lock(mu_);
    DTN_CUDA_CHECK(cudaStreamBeginCapture(s, mode));
    ++captures_;
  }
  // cudaStreamEndCapture(s, graph) for a capture begun with begin_capture; its result returned.
  cudaError_t end_capture(cudaStream_t s, cudaGraph_t* graph) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    const cudaError_t e = cudaStreamEndCapture(s, graph);
    if (captures_ > 0) --captures_;
    return e;
  }
  // cudaStreamWaitEvent(s, e) under the same lock: where e was recorded on a stream being captured,
  // s joins that capture (Context::fork's second lane), which must not happen in that window either.
  void wait_event(cudaStream_t s, cudaEvent_t e) {
    std::lock_guard<std::mutex> lock(mu_);
    DTN_CUDA_CHECK(cudaStreamWaitEvent(s, e, 0));
  }

  // cudaFree every cached block (after waiting for the device). Blocks in use are untouched.
  // Refused (dtn::cuda_error) while a capture begun with begin_capture is under way: CUDA forbids
  // synchronising the device while any of its streams is being captured (the capture would be
  // invalidated).
  void release_cached() {
    std::lock_guard<std::mutex> lock(mu_);
    if (captures_ > 0)
      throw cuda_error("dtn::cuda::release_cached_memory: a CUDA graph capture is under way (" +
                       std::to_string(captures_) +
                       " begun with dtn::cuda::begin_capture and not ended); releasing waits for the whole device, "
                       "which CUDA forbids during a capture: release after end_capture");
    release_cached_locked();
  }

  // A Context calls this (after synchronising `stream`) before destroying its stream, so no
  // cached block refers to a dead stream.
  void forget_stream(cudaStream_t stream) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& entry : free_)
      for (Block& b : entry.second)
        if (b.has_stream && b.stream == stream) b.has_stream = false;
  }

  AllocatorStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  // The backend runs on one device per process: the allocator's blocks, the contexts' streams and
  // handles and the convolution plans are all that device's. The first call binds it (a thread's
  // first context does: the device current then); a later call with another device throws,
  // naming `what` (the context or allocation asking), rather than mixing two devices' memory.
  void bind_device(int device, const char* what) {
    std::lock_guard<std::mutex> lock(mu_);
    bind_device_locked(device, what);
  }
  // The bound device; -1 before the first bind_device.
  int device() const {
    std::lock_guard<std::mutex> lock(mu_);
    return device_;
  }

 private:
  struct Block {
    void* ptr;
    cudaStream_t stream;
    bool has_stream;
  };

  void* take_cached(std::size_t cls, cudaStream_t stream) {
    auto it = free_.find(cls);
    if (it == free_.end() || it->second.empty()) return nullptr;
    std::vector<Block>& list = it->second;
    // Prefer a block last used on this stream (no sync needed); take the newest such block.
    for (std::size_t i = list.size(); i-- > 0;) {
      if (!list[i].has_stream || list[i].stream == stream) {
        void* p = list[i].ptr;
        list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
        --stats_.cached_blocks;
        return p;
      }
    }
    // Only blocks last used on other streams: the newest whose stream is not being captured (a
    // wait on a stream in another capture would break it), once `stream` waits, on the device,
    // for everything queued on that stream so far. None such: nullptr (a fresh cudaMalloc).
    detail::refuse_during_capture(stream, "a device allocation that has to wait for another stream");
    for (std::size_t i = list.size(); i-- > 0;) {
      if (detail::stream_capturing(list[i].stream)) continue;
      stream_wait(list[i].stream, stream);
      void* p = list[i].ptr;
      list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
      --stats_.cached_blocks;
      ++stats_.num_stream_waits;
      return p;
    }
    return nullptr;
  }

  // `stream` waits for the work queued on `other` so far: an event recorded there and waited for
  // here (the wait takes the event as recorded at the call, so one event serves every handoff;
  // callers hold mu_). The host does not wait, nor do other threads' allocations.
  void stream_wait(cudaStream_t other, cudaStream_t stream) {
    if (!handoff_) DTN_CUDA_CHECK(cudaEventCreateWithFlags(&handoff_, cudaEventDisableTiming));
    DTN_CUDA_CHECK(cudaEventRecord(handoff_, other));
    DTN_CUDA_CHECK(cudaStreamWaitEvent(stream, handoff_, 0));
  }

  // The entry that will list a block as in use, made before the block is taken from the cache or
  // from cudaMalloc: the host memory it needs is allocated here (its node; and room in the table,
  // which the emplace makes for one more entry, so that putting the entry back cannot rehash), so
  // that running out of host memory throws std::bad_alloc with no block taken, rather than after,
  // which would lose the block.
  using LiveEntry = std::unordered_map<void*, std::size_t>::node_type;
  LiveEntry spare_live_entry_locked() {
    void* const no_block = &live_;  // a key no device block has
    live_.emplace(no_block, 0);
    return live_.extract(no_block);
  }

  // Takes p off the blocks in use: its size class, or 0 for a pointer not handed out here (or null).
  std::size_t take_live_locked(void* p) noexcept {
    if (!p) return 0;
    auto it = live_.find(p);
    if (it == live_.end()) return 0;
    const std::size_t cls = it->second;
    live_.erase(it);
    stats_.bytes_in_use -= cls;
    return cls;
  }

  void bind_device_locked(int device, const char* what) {
    if (device_ < 0) device_ = device;
    if (device == device_) return;
    throw cuda_error(std::string("dtn::cuda: ") + what + ": the current device is " + std::to_string(device) +
                     ", but dtn's CUDA backend runs on one device per process, device " + std::to_string(device_) +
                     " (the one current when its first context was made); call cudaSetDevice(" +
                     std::to_string(device_) + ") in this thread before using dtn");
  }

  void* fresh(std::size_t cls) {
    // Called for a stream that is not being captured; another stream of this thread may be (a
    // capture in ThreadLocal or Global mode forbids cudaMalloc to the thread, and would break):
    // relaxed for the call, as PyTorch's allocator does.
    struct RelaxedCapture {
      cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
      bool set = false;
      RelaxedCapture() {
        set = cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess;
        if (!set) (void)cudaGetLastError();
      }
      ~RelaxedCapture() {
        if (set) (void)cudaThreadExchangeStreamCaptureMode(&mode);
      }
    } relaxed;
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, cls);
    // Out of memory: clear the (non-sticky) error, give the cache back and retry once; not while
    // a capture is under way (the release waits for the whole device).
    if (e == cudaErrorMemoryAllocation && captures_ == 0) {
      (void)cudaGetLastError();
      release_cached_locked();
      e = cudaMalloc(&p, cls);
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      detail::throw_call_error("CUDA", "cudaMalloc (dtn caching allocator)",
                               detail::cuda_error_text(e) + "; requested " + std::to_string(cls) + " bytes with " +
                                   std::to_string(stats_.bytes_in_use) + " in use and " +
                                   std::to_string(stats_.bytes_reserved) + " reserved" +
                                   (e == cudaErrorMemoryAllocation && captures_ > 0
                                        ? " (the cache was not released: a CUDA graph capture is under way)"
                                        : ""),
                               __FILE__, __LINE__);
    }
    ++stats_.num_cuda_malloc;
    stats_.bytes_reserved += cls;
    return p;
  }

  // Waits for the bound device (whichever is current) and cudaFrees the cached blocks and the
  // orphans, each taken off its list once freed (a failure leaves the rest listed, none twice).
  void release_cached_locked() {
    if (stats_.cached_blocks == 0 && orphans_.empty()) return;
    const detail::DeviceGuard on(device_);
    DTN_CUDA_CHECK(cudaDeviceSynchronize());
    for (auto& entry : free_) {
      std::vector<Block>& list = entry.second;
      while (!list.empty()) {
        DTN_CUDA_CHECK(cudaFree(list.back().ptr));
        list.pop_back();
        --stats_.cached_blocks;
        ++stats_.num_cuda_free;
        stats_.bytes_reserved -= entry.first;
      }
    }
    while (!orphans_.empty()) {
      DTN_CUDA_CHECK(cudaFree(orphans_.back().ptr));
      ++stats_.num_cuda_free;
      stats_.bytes_reserved -= orphans_.back().cls;
      orphans_.pop_back();
    }
  }

  mutable std::mutex mu_;
  std::map<std::size_t, std::vector<Block>> free_;  // size class -> cached blocks
  std::unordered_map<void*, std::size_t> live_;     // block -> size class
  AllocatorStats stats_;
  struct Orphan {
    void* ptr;
    std::size_t cls;
  };
  std::vector<Orphan> orphans_;     // deallocate_unknown_stream's blocks, until release_cached
  int device_ = -1;                 // bind_device
  int captures_ = 0;                // begun with begin_capture and not yet ended
  cudaEvent_t handoff_ = nullptr;  // stream_wait's event (made on first use)
};

// The process-wide allocator. Deliberately never destroyed: static destructors may run after the
// CUDA runtime has shut down, and the driver reclaims device memory at exit anyway.
inline CachingAllocator& caching_allocator() {
  static CachingAllocator* instance = new CachingAllocator();
  return *instance;
}

inline AllocatorStats allocator_stats() { return caching_allocator().stats(); }
inline void release_cached_memory() { caching_allocator().release_cached(); }
// Begins capturing stream s into a CUDA graph (cudaStreamBeginCapture) so that no thread's
// allocation is taking a block last used on s at that moment, and counts the capture until
// end_capture (CachingAllocator::begin_capture).
inline void begin_capture(cudaStream_t s, cudaStreamCaptureMode mode = cudaStreamCaptureModeThreadLocal) {
  caching_allocator().begin_capture(s, mode);
}
// Ends a capture begun with begin_capture (cudaStreamEndCapture's result).
inline cudaError_t end_capture(cudaStream_t s, cudaGraph_t* graph) { return caching_allocator().end_capture(s, graph); }

}  // namespace cuda
}  // namespace dtn
