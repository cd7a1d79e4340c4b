// The fake CUDA runtime, cuDNN and cuBLAS of fake_cudart.hpp: definitions of the API functions
// the caching allocator and the Context call, over a model of streams, events, captures, handles
// and device memory. The test executable links these instead of the CUDA libraries.
#include "fake_cudart.hpp"

#include <cublas_v2.h>
#include <cudnn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace {

struct StreamState {
  long position = 0;
  bool destroyed = false;
  // Capture: `origin` is the stream the capture began on (itself for the origin), null when the
  // stream is not part of one. The origin holds the capture's mode, thread and state.
  cudaStream_t origin = nullptr;
  bool capturing = false;
  std::size_t joined_at = 0;  // for a stream that joined a capture: the index of its joining wait
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id owner;
};
struct EventState {
  bool recorded = false;
  cudaStream_t stream = nullptr;
  long position = 0;
  cudaStream_t capture_origin = nullptr;  // the capture it was recorded in, if any
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
  std::vector<void*> kept;  // blocks live at a reset, never freed (still reachable: no leak reported)
  std::size_t live_bytes = 0;
  std::map<cudaStream_t, StreamState> streams;
  std::uintptr_t next_handle = 1;
  std::map<cudaEvent_t, EventState> events;
  std::set<const void*> cudnn;
  std::map<const void*, cudaStream_t> cudnn_streams;
  std::map<const void*, fake::CublasState> cublas;
  std::vector<Wait> waits;
  std::size_t joins = 0;
  std::size_t device_syncs = 0, stream_syncs = 0, mallocs = 0, frees = 0;
  fake::Objects objects;
  std::vector<int> free_devices;
  cudaStreamCaptureMode mode_at_last_malloc = cudaStreamCaptureModeGlobal;
  std::string fail_name;
  int fail_in = -1, fail_status = 0;
  std::vector<std::string> misuses;
};

// The fake's lock, taken by every function of it; no injected host-allocation failure hits the
// fake's own bookkeeping meanwhile.
struct Locked {
  std::lock_guard<std::mutex> lock;
  fake::detail::HostFailuresOff off;
  explicit Locked(State& s) : lock(s.mu) {}
};

State& state() {
  static State* s = new State;  // never destroyed: the blocks it keeps stay reachable at exit
  return *s;
}

// Per thread, as in CUDA: the current device, the capture interaction mode, the last error.
thread_local int current_device = 0;
thread_local cudaStreamCaptureMode thread_mode = cudaStreamCaptureModeGlobal;
thread_local cudaError_t last_error = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}

// The status fake::fail_call asked this call to fail with, or 0. Called with the mutex held.
int injected(State& s, const char* call) {
  if (s.fail_in < 0 || s.fail_name != call) return 0;
  if (s.fail_in-- > 0) return 0;
  return s.fail_status;
}

// The state of stream st (the legacy default stream, null, included); a destroyed one is listed.
StreamState& stream_state(State& s, cudaStream_t st, const char* call) {
  StreamState& x = s.streams[st];
  if (x.destroyed) s.misuses.push_back(std::string(call) + " on a destroyed stream");
  return x;
}
// The origin's state of the capture st is part of (st's own if st began it).
StreamState& origin_state(State& s, const StreamState& x) { return s.streams[x.origin]; }

// CUDA's rule for "potentially unsafe" calls (cudaMalloc, cudaFree, device synchronisation)
// while captures are under way: refused to a thread not in relaxed mode that has a capture of its
// own begun in global or thread-local mode, or, in global mode, while any thread has a capture
// begun in global mode. Refusal invalidates the captures concerned. Called with the mutex held.
bool unsafe_refused(State& s, const char* call) {
  if (thread_mode == cudaStreamCaptureModeRelaxed) return false;
  bool refused = false;
  for (auto& kv : s.streams) {
    StreamState& st = kv.second;
    if (!st.capturing || kv.first != st.origin || st.mode == cudaStreamCaptureModeRelaxed) continue;
    const bool own = st.owner == std::this_thread::get_id();
    if (own || (thread_mode == cudaStreamCaptureModeGlobal && st.mode == cudaStreamCaptureModeGlobal)) {
      st.invalidated = true;
      refused = true;
    }
  }
  if (refused) s.misuses.push_back(std::string(call) + " during a graph capture, not in relaxed capture mode");
  return refused;
}

// A new distinct handle value (never dereferenced).
template <class H>
H new_handle(State& s, std::uintptr_t base) {
  return reinterpret_cast<H>(base + 16 * s.next_handle++);
}

}  // namespace

namespace fake {

void reset(std::size_t capacity, int devices) {
  State& s = state();
  const Locked lock(s);
  // Blocks still live are kept, not freed: code under test may still list them (a block a case
  // lost on purpose), and malloc handing their address out again would make them look reused.
  for (auto& kv : s.live) s.kept.push_back(kv.first);
  s.live.clear();
  s.live_bytes = 0;
  s.capacity = capacity;
  s.devices = devices;
  // Streams, events and handles are kept (code under test may own some across cases: the process's
  // allocator keeps its event); their work, records and captures start over.
  for (auto& kv : s.streams) {
    const bool destroyed = kv.second.destroyed;
    kv.second = StreamState{};
    kv.second.destroyed = destroyed;
  }
  for (auto& kv : s.events) kv.second = EventState{};
  s.waits.clear();
  s.joins = 0;
  s.device_syncs = s.stream_syncs = s.mallocs = s.frees = 0;
  s.objects = Objects{};
  s.free_devices.clear();
  s.mode_at_last_malloc = cudaStreamCaptureModeGlobal;
  s.fail_in = -1;
  s.misuses.clear();
  current_device = 0;
  thread_mode = cudaStreamCaptureModeGlobal;
  last_error = cudaSuccess;
}

cudaStream_t stream(int i) { return reinterpret_cast<cudaStream_t>(static_cast<std::uintptr_t>(0x5000 + 16 * i)); }

void enqueue(cudaStream_t st, long n) {
  State& s = state();
  const Locked lock(s);
  stream_state(s, st, "work queued").position += n;
}

long position(cudaStream_t st) {
  State& s = state();
  const Locked lock(s);
  return s.streams[st].position;
}

bool waited_for(cudaStream_t waiter, cudaStream_t on, long at) {
  State& s = state();
  const Locked lock(s);
  for (const Wait& w : s.waits)
    if (w.waiter == waiter && w.on == on && w.position >= at) return true;
  return false;
}

bool capturing(cudaStream_t st) {
  State& s = state();
  const Locked lock(s);
  return s.streams[st].capturing;
}

#define DTN_FAKE_GETTER(type, name, expr)   \
  type name() {                             \
    State& s = state();                     \
    const Locked lock(s); \
    return expr;                            \
  }
DTN_FAKE_GETTER(std::size_t, waits, s.waits.size())
DTN_FAKE_GETTER(std::size_t, capture_joins, s.joins)
DTN_FAKE_GETTER(std::size_t, device_syncs, s.device_syncs)
DTN_FAKE_GETTER(std::size_t, stream_syncs, s.stream_syncs)
DTN_FAKE_GETTER(std::size_t, mallocs, s.mallocs)
DTN_FAKE_GETTER(std::size_t, frees, s.frees)
DTN_FAKE_GETTER(std::size_t, live_blocks, s.live.size())
DTN_FAKE_GETTER(std::size_t, live_bytes, s.live_bytes)
DTN_FAKE_GETTER(std::vector<int>, free_devices, s.free_devices)
DTN_FAKE_GETTER(cudaStreamCaptureMode, mode_at_last_malloc, s.mode_at_last_malloc)
DTN_FAKE_GETTER(Objects, objects, s.objects)
DTN_FAKE_GETTER(std::vector<std::string>, misuses, s.misuses)
#undef DTN_FAKE_GETTER

bool is_live(const void* p) {
  State& s = state();
  const Locked lock(s);
  return s.live.count(const_cast<void*>(p)) != 0;
}

CublasState cublas_state(const void* handle) {
  State& s = state();
  const Locked lock(s);
  auto it = s.cublas.find(handle);
  return it == s.cublas.end() ? CublasState{} : it->second;
}

cudaStream_t cudnn_stream(const void* handle) {
  State& s = state();
  const Locked lock(s);
  auto it = s.cudnn_streams.find(handle);
  return it == s.cudnn_streams.end() ? nullptr : it->second;
}

void fail_call(const std::string& call, int n, int status) {
  State& s = state();
  const Locked lock(s);
  s.fail_name = call;
  s.fail_in = n;
  s.fail_status = status;
}

}  // namespace fake

namespace {
// The live cuBLAS handle h's state, or null (a misuse listed).
fake::CublasState* cublas_of(State& s, cublasHandle_t h, const char* call) {
  auto it = s.cublas.find(h);
  if (it != s.cublas.end()) return &it->second;
  s.misuses.push_back(std::string(call) + " on a handle not made or destroyed");
  return nullptr;
}
}  // namespace

// The APIs, as declared in cuda_runtime_api.h, cudnn_graph.h and cublas_api.h.
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
    case cudaErrorStreamCaptureUnjoined: return "cudaErrorStreamCaptureUnjoined";
    case cudaErrorStreamCaptureIsolation: return "cudaErrorStreamCaptureIsolation";
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
  const Locked lock(s);
  if (device < 0 || device >= s.devices) return fail(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  State& s = state();
  const Locked lock(s);
  if (unsafe_refused(s, "cudaMalloc")) return fail(cudaErrorStreamCaptureUnsupported);
  if (const int e = injected(s, "cudaMalloc")) return fail(static_cast<cudaError_t>(e));
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
  const Locked lock(s);
  if (!p) return cudaSuccess;
  if (unsafe_refused(s, "cudaFree")) return fail(cudaErrorStreamCaptureUnsupported);
  if (const int e = injected(s, "cudaFree")) return fail(static_cast<cudaError_t>(e));
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

cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t st) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cudaMemsetAsync")) return fail(static_cast<cudaError_t>(e));
  std::memset(p, value, bytes);  // an address outside a live block is the sanitizers' to catch
  stream_state(s, st, "cudaMemsetAsync").position += 1;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind, cudaStream_t st) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cudaMemcpyAsync")) return fail(static_cast<cudaError_t>(e));
  std::memcpy(dst, src, bytes);
  stream_state(s, st, "cudaMemcpyAsync").position += 1;
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* attr, const void*) {
  *attr = cudaPointerAttributes{};
  attr->type = cudaMemoryTypeUnregistered;  // the tests' host buffers are pageable
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  State& s = state();
  const Locked lock(s);
  // Synchronising the device while any of its streams is being captured is invalid whatever the
  // capture modes (CUDA Programming Guide, stream capture, "Prohibited and Unhandled Operations").
  bool refused = false;
  for (auto& kv : s.streams)
    if (kv.second.capturing) {
      origin_state(s, kv.second).invalidated = true;
      refused = true;
    }
  if (refused) {
    s.misuses.push_back("cudaDeviceSynchronize while a stream is being captured");
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  ++s.device_syncs;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t st) {
  State& s = state();
  const Locked lock(s);
  StreamState& x = stream_state(s, st, "cudaStreamSynchronize");
  if (x.capturing) {
    s.misuses.push_back("cudaStreamSynchronize of a stream being captured");
    origin_state(s, x).invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  ++s.stream_syncs;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* st, unsigned int) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cudaStreamCreateWithFlags")) return fail(static_cast<cudaError_t>(e));
  *st = new_handle<cudaStream_t>(s, 0x100000);
  s.streams[*st] = StreamState{};
  ++s.objects.streams_made;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t st) {
  State& s = state();
  const Locked lock(s);
  StreamState& x = stream_state(s, st, "cudaStreamDestroy");
  x.destroyed = true;
  ++s.objects.streams_destroyed;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t st, enum cudaStreamCaptureStatus* status) {
  State& s = state();
  const Locked lock(s);
  const StreamState& x = stream_state(s, st, "cudaStreamIsCapturing");
  *status = !x.capturing                     ? cudaStreamCaptureStatusNone
            : origin_state(s, x).invalidated ? cudaStreamCaptureStatusInvalidated
                                             : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t st, enum cudaStreamCaptureMode mode) {
  State& s = state();
  const Locked lock(s);
  StreamState& x = stream_state(s, st, "cudaStreamBeginCapture");
  if (st == nullptr || x.capturing) return fail(cudaErrorIllegalState);
  x.capturing = true;
  x.origin = st;
  x.invalidated = false;
  x.mode = mode;
  x.owner = std::this_thread::get_id();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t* graph) {
  State& s = state();
  const Locked lock(s);
  StreamState& x = stream_state(s, st, "cudaStreamEndCapture");
  if (!x.capturing || x.origin != st) return fail(cudaErrorIllegalState);
  // Every stream that joined must have been waited for by the origin, after it joined, up to all
  // it queued (dtn: at Context::join).
  bool unjoined = false;
  for (auto& kv : s.streams) {
    if (kv.first == st || !kv.second.capturing || kv.second.origin != st) continue;
    bool rejoined = false;
    for (std::size_t i = kv.second.joined_at; i < s.waits.size(); ++i) {
      const Wait& w = s.waits[i];
      if (w.waiter == st && w.on == kv.first && w.position >= kv.second.position) rejoined = true;
    }
    if (!rejoined) unjoined = true;
    kv.second.capturing = false;
    kv.second.origin = nullptr;
  }
  x.capturing = false;
  x.origin = nullptr;
  *graph = nullptr;
  if (x.invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  if (unjoined) return fail(cudaErrorStreamCaptureUnjoined);
  *graph = reinterpret_cast<cudaGraph_t>(static_cast<std::uintptr_t>(0x6000));
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  {
    State& s = state();
    const Locked lock(s);
    if (const int e = injected(s, "cudaThreadExchangeStreamCaptureMode")) return fail(static_cast<cudaError_t>(e));
  }
  const cudaStreamCaptureMode previous = thread_mode;
  thread_mode = *mode;
  *mode = previous;
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cudaEventCreateWithFlags")) return fail(static_cast<cudaError_t>(e));
  *event = new_handle<cudaEvent_t>(s, 0x200000);
  s.events[*event] = EventState{};
  ++s.objects.events_made;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  State& s = state();
  const Locked lock(s);
  if (s.events.erase(event) == 0) {
    s.misuses.push_back("cudaEventDestroy of an event not made or destroyed already");
    return fail(cudaErrorInvalidResourceHandle);
  }
  ++s.objects.events_destroyed;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t st) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cudaEventRecord")) return fail(static_cast<cudaError_t>(e));
  auto it = s.events.find(event);
  if (it == s.events.end()) return fail(cudaErrorInvalidResourceHandle);
  const StreamState& x = stream_state(s, st, "cudaEventRecord");
  it->second = EventState{true, st, x.position, x.capturing ? x.origin : nullptr};
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t event, unsigned int) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cudaStreamWaitEvent")) return fail(static_cast<cudaError_t>(e));
  auto it = s.events.find(event);
  if (it == s.events.end()) return fail(cudaErrorInvalidResourceHandle);
  const EventState e = it->second;
  if (!e.recorded) return cudaSuccess;  // an event never recorded is complete
  StreamState& x = stream_state(s, st, "cudaStreamWaitEvent");
  if (e.capture_origin != nullptr && !s.streams[e.capture_origin].capturing) {
    s.misuses.push_back("cudaStreamWaitEvent on an event recorded in a capture that has ended");
  } else if (e.capture_origin != nullptr && !x.capturing) {
    // Waiting on a node of a capture: this stream joins it.
    x.capturing = true;
    x.origin = e.capture_origin;
    x.joined_at = s.waits.size();
    ++s.joins;
  } else if (e.capture_origin != x.origin) {
    // A capturing stream waiting on work outside its capture (or in another): CUDA refuses it.
    s.misuses.push_back("cudaStreamWaitEvent of a captured stream on an event outside its capture");
    origin_state(s, x).invalidated = true;
    return fail(cudaErrorStreamCaptureIsolation);
  }
  s.waits.push_back(Wait{st, e.stream, e.position});
  return cudaSuccess;
}

// cuDNN: handles and their stream.
const char* cudnnGetErrorString(cudnnStatus_t) { return "cuDNN error (fake)"; }

cudnnStatus_t cudnnCreate(cudnnHandle_t* h) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cudnnCreate")) return static_cast<cudnnStatus_t>(e);
  *h = new_handle<cudnnHandle_t>(s, 0x300000);
  s.cudnn.insert(*h);
  s.cudnn_streams[*h] = nullptr;
  ++s.objects.cudnn_made;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
  State& s = state();
  const Locked lock(s);
  if (s.cudnn.erase(h) == 0) {
    s.misuses.push_back("cudnnDestroy of a handle not made or destroyed already");
    return CUDNN_STATUS_BAD_PARAM;
  }
  s.cudnn_streams.erase(h);
  ++s.objects.cudnn_destroyed;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t st) {
  State& s = state();
  const Locked lock(s);
  if (s.cudnn.count(h) == 0) {
    s.misuses.push_back("cudnnSetStream on a handle not made or destroyed");
    return CUDNN_STATUS_BAD_PARAM;
  }
  stream_state(s, st, "cudnnSetStream");
  s.cudnn_streams[h] = st;
  return CUDNN_STATUS_SUCCESS;
}

// cuBLAS: handles, their stream, workspace and math mode.
const char* cublasGetStatusName(cublasStatus_t) { return "CUBLAS_STATUS_(fake)"; }
const char* cublasGetStatusString(cublasStatus_t) { return "cuBLAS error (fake)"; }

cublasStatus_t cublasCreate_v2(cublasHandle_t* h) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cublasCreate_v2")) return static_cast<cublasStatus_t>(e);
  *h = new_handle<cublasHandle_t>(s, 0x400000);
  s.cublas[*h] = fake::CublasState{};
  ++s.objects.cublas_made;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  State& s = state();
  const Locked lock(s);
  if (s.cublas.erase(h) == 0) {
    s.misuses.push_back("cublasDestroy of a handle not made or destroyed already");
    return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  ++s.objects.cublas_destroyed;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t st) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cublasSetStream_v2")) return static_cast<cublasStatus_t>(e);
  fake::CublasState* c = cublas_of(s, h, "cublasSetStream");
  if (!c) return CUBLAS_STATUS_NOT_INITIALIZED;
  stream_state(s, st, "cublasSetStream");
  c->stream = st;
  c->workspace = nullptr;  // as cuBLAS does: a new stream resets the workspace to its own pool
  c->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void* ws, size_t bytes) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cublasSetWorkspace_v2")) return static_cast<cublasStatus_t>(e);
  fake::CublasState* c = cublas_of(s, h, "cublasSetWorkspace");
  if (!c) return CUBLAS_STATUS_NOT_INITIALIZED;
  c->workspace = ws;
  c->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  State& s = state();
  const Locked lock(s);
  if (const int e = injected(s, "cublasSetMathMode")) return static_cast<cublasStatus_t>(e);
  fake::CublasState* c = cublas_of(s, h, "cublasSetMathMode");
  if (!c) return CUBLAS_STATUS_NOT_INITIALIZED;
  c->math_mode = static_cast<int>(mode);
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
