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
//  * whether convolutions run on the GEMM engine instead of cuDNN (set_conv_gemm, off by
//    default; conv_gemm.cuh);
//  * whether cuDNN's non-deterministic convolution algorithms may be chosen like the others
//    (set_conv_deterministic(false); by default they are taken only where no deterministic one is).
//
// dtn::cuda::context() returns the calling thread's Context (created on first use, on the device
// current at that moment). Nothing in an op synchronises with the host; call
// dtn::cuda::synchronize() (or copy to the host) to wait.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>

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
    DTN_CUDA_CHECK(cudaGetDevice(&device_));
    DTN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~Context() {
    // Never throws: errors at thread or process exit are ignored.
    if (stream_) (void)cudaStreamSynchronize(stream_);
    caching_allocator().deallocate(workspace_, stream_);
    caching_allocator().deallocate(scratch_, stream_);
    caching_allocator().deallocate(cublas_workspace_, stream_);
    caching_allocator().forget_stream(stream_);
    if (cublas_) (void)cublasDestroy(cublas_);
    if (cudnn_) (void)cudnnDestroy(cudnn_);
    if (stream_) (void)cudaStreamDestroy(stream_);
    (void)cudaGetLastError();
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

  cudnnHandle_t cudnn() {
    if (!cudnn_) {
      detail::refuse_during_capture(stream_, "creating this thread's cuDNN handle");
      DTN_CUDNN_CHECK(cudnnCreate(&cudnn_));
      DTN_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
    }
    return cudnn_;
  }

  cublasHandle_t cublas() {
    if (!cublas_) {
      detail::refuse_during_capture(stream_, "creating this thread's cuBLAS handle");
      DTN_CUBLAS_CHECK(cublasCreate(&cublas_));
      DTN_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
      cublas_workspace_ = caching_allocator().allocate(cublas_workspace_bytes, stream_);
      // After cublasSetStream: setting the stream resets the workspace to cuBLAS's default pool.
      DTN_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, cublas_workspace_bytes));
      apply_cublas_math();
    }
    return cublas_;
  }

  // At least `bytes` of device memory for the duration of one op on this stream.
  void* workspace(std::size_t bytes) { return grow(workspace_, workspace_bytes_, bytes); }
  std::size_t workspace_bytes() const { return workspace_bytes_; }
  // Scratch for reductions (separate from the workspace so one op can use both).
  void* scratch(std::size_t bytes) { return grow(scratch_, scratch_bytes_, bytes); }

  bool tf32() const { return tf32_; }
  void set_tf32(bool on) {
    tf32_ = on;
    if (cublas_) apply_cublas_math();
  }
  // cuDNN math type for convolutions in the current mode.
  cudnnMathType_t cudnn_math() const { return tf32_ ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH; }

  bool conv_autotune() const { return conv_autotune_; }
  void set_conv_autotune(bool on) { conv_autotune_ = on; }

  bool conv_gemm() const { return conv_gemm_; }
  void set_conv_gemm(bool on) { conv_gemm_ = on; }

  bool conv_deterministic() const { return conv_deterministic_; }
  void set_conv_deterministic(bool on) { conv_deterministic_ = on; }

  // Waits until everything queued on this thread's stream has finished.
  void synchronize() { DTN_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  void apply_cublas_math() {
    DTN_CUBLAS_CHECK(cublasSetMathMode(cublas_, tf32_ ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  }
  void* grow(void*& buffer, std::size_t& size, std::size_t bytes) {
    if (bytes > size) {
      // The old buffer goes back to the cache tagged with this stream: queued work that still
      // reads it finishes before anything later on this stream can reuse it. A graph captured
      // before this still points at it: counted in dtn::storage_moves().
      void* bigger = caching_allocator().allocate(bytes, stream_);
      if (buffer != nullptr) note_storage_move();
      caching_allocator().deallocate(buffer, stream_);
      buffer = bigger;
      size = CachingAllocator::round_size(bytes);
    }
    return buffer;
  }

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
  bool tf32_ = false;
  bool conv_autotune_ = false;
  bool conv_gemm_ = true;
  bool conv_deterministic_ = true;
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
