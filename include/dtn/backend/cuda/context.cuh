#pragma once
// dtn::cuda::Context: the per-thread state every CUDA op runs in.
//
//  * one non-blocking cudaStream_t; every kernel, cuDNN and cuBLAS call of this thread goes to it,
//    so a whole training step is stream-ordered and can be captured as a CUDA graph;
//  * a cuDNN and a cuBLAS handle bound to that stream (created on first use);
//  * a growable workspace (cuDNN convolutions) and a growable scratch buffer (partial sums of the
//    deterministic reductions), both from the caching allocator; they only grow, so once every
//    geometry has been seen no op allocates;
//  * the math mode: exact FP32 by default (cuDNN CUDNN_FMA_MATH, cuBLAS CUBLAS_DEFAULT_MATH: no
//    TF32 anywhere), TF32 tensor cores on request with dtn::cuda::set_tf32(true);
//  * how convolution algorithms are chosen: cuDNN's heuristics by default (the same choice on
//    every run), cuDNN's timed search on request with dtn::cuda::set_conv_autotune(true)
//    (conv.cuh);
//  * whether convolutions run on the GEMM engine instead of cuDNN (set_conv_gemm, on by
//    default; conv_gemm.cuh);
//  * the most workspace one convolution pass may use on a lane (set_conv_workspace_limit; by
//    default each engine's own cap);
//  * whether cuDNN's non-deterministic convolution algorithms may be chosen like the others
//    (set_conv_deterministic(false); by default they are taken only where no deterministic one is);
//  * a second lane, made on first use: a second stream with its own cuBLAS handle, workspace and
//    scratch (the cuDNN handle is shared, its stream switched with the lane), on which
//    dtn::cuda::side_by_side runs one piece of work while the stream runs another
//    (set_conv_overlap: a convolution's weight gradient beside its input gradient).
//
// dtn::cuda::context() returns the calling thread's Context (created on first use, on the device
// current at that moment). The backend runs on one device per process: every thread's context on
// the device the first one was made on (CachingAllocator::bind_device); a context made, a handle
// created or a device block allocated while another device is current throws. Nothing in an op
// synchronises with the host; call dtn::cuda::synchronize() (or copy to the host) to wait.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <vector>

#include "../../core/tensor.hpp"
#include "allocator.cuh"
#include "check.cuh"

namespace dtn {
namespace cuda {

class Context {
 public:
  // cuBLAS's own workspace, set explicitly so cuBLAS never allocates inside a captured graph
  // (NVIDIA's recommendation for Hopper is 32 MiB).
  static constexpr std::size_t cublas_workspace_bytes = std::size_t(32) << 20;

  Context() {
    check_device("this thread's dtn::cuda::Context (its first CUDA op)");
    DTN_CUDA_CHECK(cudaGetDevice(&device_));
    DTN_CUDA_CHECK(cudaStreamCreateWithFlags(&lanes_[0].stream, cudaStreamNonBlocking));
  }
  ~Context() {
    // Never throws: errors at thread or process exit are ignored.
    for (Lane& l : lanes_)
      if (l.stream) (void)cudaStreamSynchronize(l.stream);
    release_held(true);  // both lanes have finished
    for (Lane& l : lanes_) {
      if (!l.stream) continue;
      caching_allocator().deallocate(l.workspace, l.stream);
      caching_allocator().deallocate(l.scratch, l.stream);
      caching_allocator().deallocate(l.cublas_workspace, l.stream);
      caching_allocator().forget_stream(l.stream);
      if (l.cublas) (void)cublasDestroy(l.cublas);
    }
    if (cudnn_) (void)cudnnDestroy(cudnn_);
    if (fork_) (void)cudaEventDestroy(fork_);
    if (join_) (void)cudaEventDestroy(join_);
    for (Lane& l : lanes_)
      if (l.stream) (void)cudaStreamDestroy(l.stream);
    (void)cudaGetLastError();
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // The stream of the current lane: this thread's stream, or inside side_by_side's side work the
  // second lane's.
  cudaStream_t stream() const { return lanes_[lane_].stream; }
  int device() const { return device_; }

  // The thread's one cuDNN handle, bound to the current lane's stream.
  cudnnHandle_t cudnn() {
    if (!cudnn_) {
      detail::refuse_during_capture(stream(), "creating this thread's cuDNN handle");
      check_device("creating this thread's cuDNN handle");
      DTN_CUDNN_CHECK(cudnnCreate(&cudnn_));
    }
    if (cudnn_stream_ != stream()) {
      DTN_CUDNN_CHECK(cudnnSetStream(cudnn_, stream()));
      cudnn_stream_ = stream();
    }
    return cudnn_;
  }

  // The current lane's cuBLAS handle (each lane has its own, with its own workspace: two GEMMs
  // running at once on one workspace would overwrite each other's).
  cublasHandle_t cublas() {
    Lane& l = lanes_[lane_];
    if (!l.cublas) {
      detail::refuse_during_capture(l.stream, "creating this thread's cuBLAS handle");
      make_cublas(l);
    }
    return l.cublas;
  }

  // At least `bytes` of device memory for the duration of one op on the current lane.
  void* workspace(std::size_t bytes) {
    Lane& l = lanes_[lane_];
    return grow(l, l.workspace, l.workspace_bytes, bytes);
  }
  std::size_t workspace_bytes() const { return lanes_[lane_].workspace_bytes; }
  // The device memory a lane holds of its own (0 for a second lane not made): its workspace, its
  // reduction scratch and its cuBLAS workspace; where a step's memory goes, for benchmarks.
  struct LaneBytes {
    std::size_t workspace = 0, scratch = 0, cublas = 0;
  };
  LaneBytes lane_bytes(int lane) const {
    const Lane& l = lanes_[lane == 0 ? 0 : 1];
    return {l.workspace_bytes, l.scratch_bytes, l.cublas ? cublas_workspace_bytes : 0};
  }
  // Scratch for reductions (separate from the workspace so one op can use both).
  void* scratch(std::size_t bytes) {
    Lane& l = lanes_[lane_];
    return grow(l, l.scratch, l.scratch_bytes, bytes);
  }

  bool tf32() const { return tf32_; }
  void set_tf32(bool on) {
    tf32_ = on;
    for (Lane& l : lanes_)
      if (l.cublas) apply_cublas_math(l.cublas);
  }
  // cuDNN math type for convolutions in the current mode.
  cudnnMathType_t cudnn_math() const { return tf32_ ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH; }

  bool conv_autotune() const { return conv_autotune_; }
  void set_conv_autotune(bool on) { conv_autotune_ = on; }

  bool conv_gemm() const { return conv_gemm_; }
  void set_conv_gemm(bool on) { conv_gemm_ = on; }

  bool conv_deterministic() const { return conv_deterministic_; }
  void set_conv_deterministic(bool on) { conv_deterministic_ = on; }

  bool conv_overlap() const { return conv_overlap_; }
  void set_conv_overlap(bool on) { conv_overlap_ = on; }

  // No limit: each engine keeps its own cap (conv.cuh, conv_gemm.cuh).
  static constexpr std::size_t no_workspace_limit = ~std::size_t(0);
  std::size_t conv_workspace_limit() const { return conv_workspace_limit_; }
  void set_conv_workspace_limit(std::size_t bytes) {
    if (bytes == 0)
      throw argument_error("dtn::cuda::set_conv_workspace_limit: 0 bytes (pass Context::no_workspace_limit for none)");
    conv_workspace_limit_ = bytes;
  }

  // The second lane (side_by_side): whether it exists, whether its work is being queued now, and
  // the three steps that side_by_side takes. fork(): the second lane's stream waits for
  // everything queued on the stream so far (making the lane on first use: not inside a graph
  // capture), and work is queued on it from now on. to_stream(): work goes to the stream again.
  // join(): the stream waits for everything queued on the second lane so far, and work goes to
  // the stream. Inside a capture the events become the graph's edges.
  bool has_side_lane() const { return lanes_[1].stream != nullptr; }
  bool on_side_lane() const { return lane_ == 1; }
  void fork() {
    if (!has_side_lane()) make_side_lane();
    held_.reserve(16);
    DTN_CUDA_CHECK(cudaEventRecord(fork_, lanes_[0].stream));
    // Under the allocator's lock: inside a capture this wait makes the second lane part of it.
    caching_allocator().wait_event(lanes_[1].stream, fork_);
    lane_ = 1;
    forked_ = true;
  }
  void to_stream() { lane_ = 0; }
  // Also gives the device blocks freed since fork() back to the cache (hold_free), tagged with
  // the stream, once the stream waits for the second lane; if the join fails, the stream has not
  // waited and either lane's queued work may still use them: they are dropped, not reused (device
  // memory lost to a context that has already failed, rather than a block handed out twice).
  void join() {
    lane_ = 0;
    struct Release {
      Context& c;
      bool joined = false;
      ~Release() { c.release_held(joined); }
    } release{*this};
    if (has_side_lane()) {
      DTN_CUDA_CHECK(cudaEventRecord(join_, lanes_[1].stream));
      DTN_CUDA_CHECK(cudaStreamWaitEvent(lanes_[0].stream, join_, 0));
    }
    release.joined = true;
  }
  // Between fork() and join() a device block freed by either lane's work may still be read by
  // the other lane's queued work, which the caching allocator, keyed by one stream per block,
  // cannot know: such blocks are held here and given back at join(), tagged with the stream,
  // which has waited for both lanes by then. Returns false (the caller frees as usual) outside a
  // fork. Never throws: if the host has no memory left to note the block, the block is dropped
  // (never reused) rather than given back to the cache while the other lane may still use it.
  bool hold_free(void* p) noexcept {
    if (!forked_) return false;
    try {
      held_.push_back(p);
    } catch (...) {
    }
    return true;
  }

  // Waits until everything queued on this thread's stream has finished (and so, side_by_side
  // having joined it, on the second lane too).
  void synchronize() { DTN_CUDA_CHECK(cudaStreamSynchronize(lanes_[0].stream)); }

 private:
  // What each lane has of its own.
  struct Lane {
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    void* cublas_workspace = nullptr;
    void* workspace = nullptr;
    std::size_t workspace_bytes = 0;
    void* scratch = nullptr;
    std::size_t scratch_bytes = 0;
  };

  void apply_cublas_math(cublasHandle_t h) {
    DTN_CUBLAS_CHECK(cublasSetMathMode(h, tf32_ ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  }
  // The lane's cuBLAS handle, set up whole (stream, workspace, math mode) before the lane keeps
  // it: a failure on the way leaves the lane without a handle, not with a half-made one.
  void make_cublas(Lane& l) {
    check_device("creating a cuBLAS handle of this thread");
    cublasHandle_t h = nullptr;
    DTN_CUBLAS_CHECK(cublasCreate(&h));
    void* ws = nullptr;
    try {
      DTN_CUBLAS_CHECK(cublasSetStream(h, l.stream));
      ws = caching_allocator().allocate(cublas_workspace_bytes, l.stream);
      // After cublasSetStream: setting the stream resets the workspace to cuBLAS's default pool.
      DTN_CUBLAS_CHECK(cublasSetWorkspace(h, ws, cublas_workspace_bytes));
      apply_cublas_math(h);
    } catch (...) {
      caching_allocator().deallocate(ws, l.stream);
      (void)cublasDestroy(h);
      throw;
    }
    l.cublas = h;
    l.cublas_workspace = ws;
  }
  // The second lane with everything it needs inside a capture (its cuBLAS handle too), so that
  // only its workspace and scratch are left to grow when first used, eagerly. The lane exists
  // (has_side_lane) only once all of it is made.
  void make_side_lane() {
    detail::refuse_during_capture(lanes_[0].stream, "creating this thread's second lane (stream, events, cuBLAS handle)");
    check_device("creating this thread's second lane");
    if (!fork_) DTN_CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
    if (!join_) DTN_CUDA_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
    Lane l;
    DTN_CUDA_CHECK(cudaStreamCreateWithFlags(&l.stream, cudaStreamNonBlocking));
    try {
      make_cublas(l);
    } catch (...) {
      (void)cudaStreamDestroy(l.stream);
      throw;
    }
    lanes_[1] = l;
  }
  // Handles and streams are made on the current device: refuses to make one while the thread's
  // current device is not the one the process's backend (and so this context, which bound it or
  // was checked against it when made) runs on: the allocator's one check and message.
  static void check_device(const char* what) {
    int current = 0;
    DTN_CUDA_CHECK(cudaGetDevice(&current));
    caching_allocator().bind_device(current, what);
  }
  void release_held(bool joined) noexcept {
    forked_ = false;
    if (joined)
      for (void* p : held_) caching_allocator().deallocate(p, lanes_[0].stream);
    held_.clear();
  }
  void* grow(const Lane& l, void*& buffer, std::size_t& size, std::size_t bytes) {
    if (bytes > size) {
      // The old buffer goes back to the cache tagged with the lane's stream: queued work that
      // still reads it finishes before anything later on that stream can reuse it. A graph
      // captured before this still points at it: counted in dtn::storage_moves().
      void* bigger = caching_allocator().allocate(bytes, l.stream);
      if (buffer != nullptr) note_storage_move();
      caching_allocator().deallocate(buffer, l.stream);
      buffer = bigger;
      size = CachingAllocator::round_size(bytes);
    }
    return buffer;
  }

  int device_ = 0;
  Lane lanes_[2];  // [0]: the thread's stream; [1]: the second lane, made on first use
  int lane_ = 0;   // the lane work is queued on now
  cudnnHandle_t cudnn_ = nullptr;
  cudaStream_t cudnn_stream_ = nullptr;  // the stream cudnn_ is bound to
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
  bool forked_ = false;        // between fork() and join()
  std::vector<void*> held_;    // blocks freed since fork() (hold_free)
  bool tf32_ = false;
  bool conv_autotune_ = false;
  bool conv_gemm_ = true;
  bool conv_deterministic_ = true;
  bool conv_overlap_ = false;
  std::size_t conv_workspace_limit_ = no_workspace_limit;
};

// The calling thread's context.
inline Context& context() {
  thread_local Context ctx;
  return ctx;
}

inline cudaStream_t stream() { return context().stream(); }

// Whether work queued on s is being captured into a CUDA graph (then nothing may synchronise,
// allocate or time it).
inline bool capturing(cudaStream_t s) { return detail::stream_capturing(s); }
inline void synchronize() { context().synchronize(); }

// A CUDA event, destroyed with its owner.
class Event {
 public:
  Event() { DTN_CUDA_CHECK(cudaEventCreate(&e_)); }
  ~Event() { (void)cudaEventDestroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// The device time, in ms, of the work run() queues on stream s, measured with the events a and
// b recorded around it. Waits for that work (synchronises): not inside a graph capture.
template <class Run>
float elapsed_ms(cudaStream_t s, const Event& a, const Event& b, Run&& run) {
  DTN_CUDA_CHECK(cudaEventRecord(a.get(), s));
  run();
  DTN_CUDA_CHECK(cudaEventRecord(b.get(), s));
  DTN_CUDA_CHECK(cudaEventSynchronize(b.get()));
  float ms = 0;
  DTN_CUDA_CHECK(cudaEventElapsedTime(&ms, a.get(), b.get()));
  return ms;
}
// Queues side() on this thread's second lane and main() on its stream, so that the GPU may run
// the two at once: side's work starts after everything queued before the call, and everything
// queued after the call waits for both (also inside a graph capture, where the two become
// parallel branches). The ops inside each see their lane in context(): its stream, cuBLAS handle,
// workspace and scratch, and the cuDNN handle switched to it. side() is queued first. With
// main_alone, main() is queued after side's work instead of beside it (for work that times its
// engines the first time it runs, so that nothing runs beside the timing). Where the second lane
// does not exist yet and the stream is being captured (it cannot be made then), or when already
// on the second lane, both run one after the other on the current lane, side() first.
template <class Side, class Main>
void side_by_side(Side&& side, Main&& main, bool main_alone = false) {
  Context& ctx = context();
  if (ctx.on_side_lane() || (!ctx.has_side_lane() && capturing(ctx.stream()))) {
    side();
    main();
    return;
  }
  // Forked before the guard: a fork that fails queues nothing on the second lane (it moves work
  // there only once its event and wait are queued), so there is nothing to join, and no second
  // CUDA call after the first error.
  ctx.fork();
  // Whatever happens from here, work goes back to the stream, which waits for the second lane.
  struct Join {
    Context& ctx;
    bool joined = false;
    ~Join() {
      if (joined) return;
      try {
        ctx.join();
      } catch (...) {  // an error already being thrown is the one to report
        ctx.to_stream();
      }
    }
  } guard{ctx};
  side();
  if (main_alone)
    ctx.join();
  else
    ctx.to_stream();
  main();
  if (!main_alone) ctx.join();
  guard.joined = true;
}

// Opt in (or out) of TF32 tensor-core math for this thread's convolutions and GEMMs. The default,
// false, gives exact FP32 (FMA) results comparable with the CPU backend.
inline void set_tf32(bool on) { context().set_tf32(on); }
inline bool tf32() { return context().tf32(); }
// Opt in (or out) of timing the convolution engines for this thread (as PyTorch's
// torch.backends.cudnn.benchmark): each new geometry's passes are then run on whichever times
// faster, cuDNN's best algorithm by cudnnFind* (deterministic ones still preferred) or the GEMM
// engine. The search synchronises the device and allocates memory of its own, so it is done
// outside CUDA graph capture only (a geometry first seen during capture takes the untimed
// choice, set_conv_gemm's); and since timings vary, two processes may choose differently, and
// their results can differ in the last bits. Default false.
inline void set_conv_autotune(bool on) { context().set_conv_autotune(on); }
inline bool conv_autotune() { return context().conv_autotune(); }
// Whether this thread's non-dense convolutions whose indices fit 32 bits run on the GEMM engine
// (conv_gemm.cuh: im2col / gather kernels and cuBLAS, deterministic) rather than on the algorithm
// cuDNN's heuristics pick. Default true: on an H200 (2026-12-04, benchmarks/RESULTS.md) the
// engine ran the DTN step at batch 128 in 11.8 ms against 23.2 ms with cuDNN's deterministic
// heuristic choices, whose stride-2 backward passes ran at 8-25% of the SGEMM rate. false gives
// cuDNN's heuristic choice. With set_conv_autotune(true) each pass takes whichever of the two
// times faster, and this setting only decides a pass that cannot be timed (first met inside a
// graph capture).
inline void set_conv_gemm(bool on) { context().set_conv_gemm(on); }
inline bool conv_gemm() { return context().conv_gemm(); }
// Whether this thread's convolution layers run their weight-gradient pass on the second lane
// (side_by_side) beside their input-gradient pass, which the layers before them wait for. Both
// read the same inputs and write different outputs with the same engines as one after the other,
// so results are bit for bit the same either way; the GPU can fill more of itself with two small
// passes than with one. Costs the second lane's memory (a cuBLAS workspace of 32 MiB and a
// workspace as large as the weight-gradient passes need). Default false. Not yet measured on a GPU.
inline void set_conv_overlap(bool on) { context().set_conv_overlap(on); }
inline bool conv_overlap() { return context().conv_overlap(); }
// The most device memory one convolution pass of this thread may use as workspace, in bytes, on
// each lane (the second lane of set_conv_overlap has a workspace of its own): for a GPU with
// little memory, or to keep a training step's peak under a budget. The GEMM engine then takes
// fewer images per chunk (128 MiB by default; a shape one image of which needs more runs on
// cuDNN), and cuDNN's algorithms and graph-API plans needing more are passed over (1 GiB and
// 256 MiB by default). Smaller chunks sum a weight gradient in another order: results may differ
// from the unlimited run's by float rounding, and are the same from run to run (unless the limit
// leaves a cuDNN pass only non-deterministic algorithms: conv_choices() shows it). A pass whose
// engine was chosen under another limit is chosen again (the limit is part of a plan's key); a
// graph captured before keeps the chunks it was captured with. Workspace already held is not
// given back: set the limit before the first convolution. Default: no limit
// (Context::no_workspace_limit); 0 is refused (argument_error).
inline void set_conv_workspace_limit(std::size_t bytes) { context().set_conv_workspace_limit(bytes); }
inline std::size_t conv_workspace_limit() { return context().conv_workspace_limit(); }
// Whether this thread's convolutions keep to cuDNN's deterministic algorithms where cuDNN has one
// (default true: the same inputs give the same bits on every run, as the tests and a reproducible
// training run need). false (as PyTorch's default torch.backends.cudnn.deterministic = False)
// lets the heuristics' or the timed search's first choice stand even where it is
// non-deterministic (for backward filter and data some are, by accumulating with atomics), which
// may be faster. The dense and GEMM-engine paths are deterministic either way.
inline void set_conv_deterministic(bool on) { context().set_conv_deterministic(on); }
inline bool conv_deterministic() { return context().conv_deterministic(); }

}  // namespace cuda
}  // namespace dtn
