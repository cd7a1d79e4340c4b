// The fake CUDA runtime of fake_cudart.hpp: definitions of the runtime API functions the caching
// allocator calls, over a model of streams, events, captures and device memory. The test
// executable links these instead of libcudart.
#include "fake_cudart.hpp"

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace {

struct StreamState {
  long position = 0;
  bool capturing = false;
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id owner;  // the thread that began the capture
};
struct EventState {
  bool recorded = false;
  cudaStream_t stream = nullptr;
  long position = 0;
  bool in_capture = false;
};
struct Wait {
  cudaStream_t waiter, on;
  long position;
};

struct State {
  std::mutex mu;
  std::size_t capacity = std::size_t(1) << 30;
  int devices = 2;
  std::map<void*, std::size_t> live;
  std::size_t live_bytes = 0;
  std::map<cudaStream_t, StreamState> streams;
  std::map<cudaEvent_t, EventState> events;
  std::uintptr_t next_event = 1;
  std::vector<Wait> waits;
  std::size_t device_syncs = 0, stream_syncs = 0, mallocs = 0, frees = 0;
  std::vector<int> free_devices;
  cudaStreamCaptureMode mode_at_last_malloc = cudaStreamCaptureModeGlobal;
  int fail_free_in = -1;
  cudaError_t fail_free_error = cudaSuccess;
  std::vector<std::string> misuses;
};

State& state() {
  static State s;
  return s;
}

// Per thread, as in CUDA: the current device, the capture interaction mode, the last error.
thread_local int current_device = 0;
thread_local cudaStreamCaptureMode thread_mode = cudaStreamCaptureModeGlobal;
thread_local cudaError_t last_error = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}

// CUDA's rule for "potentially unsafe" calls (cudaMalloc, cudaFree, device synchronisation)
// while captures are under way: refused to a thread not in relaxed mode that has a capture of its
// own begun in global or thread-local mode, or, in global mode, while any thread has a capture
// begun in global mode. Refusal invalidates the captures concerned. Called with the mutex held.
bool unsafe_refused(State& s, const char* call) {
  if (thread_mode == cudaStreamCaptureModeRelaxed) return false;
  bool refused = false;
  for (auto& kv : s.streams) {
    StreamState& st = kv.second;
    if (!st.capturing || st.mode == cudaStreamCaptureModeRelaxed) continue;
    const bool own = st.owner == std::this_thread::get_id();
    if (own || (thread_mode == cudaStreamCaptureModeGlobal && st.mode == cudaStreamCaptureModeGlobal)) {
      st.invalidated = true;
      refused = true;
    }
  }
  if (refused) s.misuses.push_back(std::string(call) + " during a graph capture, not in relaxed capture mode");
  return refused;
}

}  // namespace

namespace fake {

void reset(std::size_t capacity, int devices) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  for (auto& kv : s.live) std::free(kv.first);
  s.live.clear();
  s.live_bytes = 0;
  s.capacity = capacity;
  s.devices = devices;
  s.streams.clear();
  s.events.clear();
  s.waits.clear();
  s.device_syncs = s.stream_syncs = s.mallocs = s.frees = 0;
  s.free_devices.clear();
  s.mode_at_last_malloc = cudaStreamCaptureModeGlobal;
  s.fail_free_in = -1;
  s.misuses.clear();
  current_device = 0;
  thread_mode = cudaStreamCaptureModeGlobal;
  last_error = cudaSuccess;
}

cudaStream_t stream(int i) { return reinterpret_cast<cudaStream_t>(static_cast<std::uintptr_t>(0x5000 + 16 * i)); }

void enqueue(cudaStream_t st, long n) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.streams[st].position += n;
}

long position(cudaStream_t st) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.streams[st].position;
}

bool waited_for(cudaStream_t waiter, cudaStream_t on, long at) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  for (const Wait& w : s.waits)
    if (w.waiter == waiter && w.on == on && w.position >= at) return true;
  return false;
}

std::size_t waits() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.waits.size();
}

#define DTN_FAKE_GETTER(type, name, expr) \
  type name() {                           \
    State& s = state();                   \
    std::lock_guard<std::mutex> lock(s.mu); \
    return expr;                          \
  }
DTN_FAKE_GETTER(std::size_t, device_syncs, s.device_syncs)
DTN_FAKE_GETTER(std::size_t, stream_syncs, s.stream_syncs)
DTN_FAKE_GETTER(std::size_t, mallocs, s.mallocs)
DTN_FAKE_GETTER(std::size_t, frees, s.frees)
DTN_FAKE_GETTER(std::size_t, live_blocks, s.live.size())
DTN_FAKE_GETTER(std::size_t, live_bytes, s.live_bytes)
DTN_FAKE_GETTER(std::vector<int>, free_devices, s.free_devices)
DTN_FAKE_GETTER(cudaStreamCaptureMode, mode_at_last_malloc, s.mode_at_last_malloc)
DTN_FAKE_GETTER(std::vector<std::string>, misuses, s.misuses)
#undef DTN_FAKE_GETTER

bool is_live(const void* p) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.live.count(const_cast<void*>(p)) != 0;
}

void fail_free(int n, cudaError_t e) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.fail_free_in = n;
  s.fail_free_error = e;
}

}  // namespace fake

// The runtime API, as declared in cuda_runtime_api.h.
extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    default: return "cudaError (fake: another code)";
  }
}

const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaErrorMemoryAllocation ? "out of memory (fake runtime)" : "error (fake runtime)";
}

cudaError_t cudaGetDevice(int* device) {
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (device < 0 || device >= s.devices) return fail(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (unsafe_refused(s, "cudaMalloc")) return fail(cudaErrorStreamCaptureUnsupported);
  if (bytes > s.capacity - s.live_bytes) return fail(cudaErrorMemoryAllocation);
  void* q = std::malloc(bytes == 0 ? 1 : bytes);
  if (!q) return fail(cudaErrorMemoryAllocation);
  s.live[q] = bytes;
  s.live_bytes += bytes;
  ++s.mallocs;
  s.mode_at_last_malloc = thread_mode;
  *p = q;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!p) return cudaSuccess;
  if (unsafe_refused(s, "cudaFree")) return fail(cudaErrorStreamCaptureUnsupported);
  if (s.fail_free_in >= 0 && s.fail_free_in-- == 0) return fail(s.fail_free_error);
  auto it = s.live.find(p);
  if (it == s.live.end()) {
    s.misuses.push_back("cudaFree of a pointer cudaMalloc did not return or that was freed already");
    return fail(cudaErrorInvalidValue);
  }
  s.live_bytes -= it->second;
  std::free(p);
  s.live.erase(it);
  ++s.frees;
  s.free_devices.push_back(current_device);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (unsafe_refused(s, "cudaDeviceSynchronize")) return fail(cudaErrorStreamCaptureUnsupported);
  ++s.device_syncs;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  ++s.stream_syncs;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t st, enum cudaStreamCaptureStatus* status) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  const StreamState& x = s.streams[st];
  *status = !x.capturing ? cudaStreamCaptureStatusNone
            : x.invalidated ? cudaStreamCaptureStatusInvalidated
                            : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t st, enum cudaStreamCaptureMode mode) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  StreamState& x = s.streams[st];
  if (st == nullptr || x.capturing) return fail(cudaErrorIllegalState);
  x.capturing = true;
  x.invalidated = false;
  x.mode = mode;
  x.owner = std::this_thread::get_id();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t* graph) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  StreamState& x = s.streams[st];
  if (!x.capturing) return fail(cudaErrorIllegalState);
  x.capturing = false;
  if (x.invalidated) {
    *graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = reinterpret_cast<cudaGraph_t>(static_cast<std::uintptr_t>(0x6000));
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  const cudaStreamCaptureMode previous = thread_mode;
  thread_mode = *mode;
  *mode = previous;
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  *event = reinterpret_cast<cudaEvent_t>(0x7000 + 16 * s.next_event++);
  s.events[*event] = EventState{};
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.events.erase(event) == 0) return fail(cudaErrorInvalidResourceHandle);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t st) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.events.find(event);
  if (it == s.events.end()) return fail(cudaErrorInvalidResourceHandle);
  const StreamState& x = s.streams[st];
  it->second = EventState{true, st, x.position, x.capturing};
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t event, unsigned int) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.events.find(event);
  if (it == s.events.end()) return fail(cudaErrorInvalidResourceHandle);
  const EventState& e = it->second;
  if (!e.recorded) return cudaSuccess;  // an event never recorded is complete
  if (e.in_capture && !s.streams[st].capturing)
    s.misuses.push_back("a stream made to wait on an event recorded in another stream's capture (it joins that capture)");
  s.waits.push_back(Wait{st, e.stream, e.position});
  return cudaSuccess;
}

}  // extern "C"
