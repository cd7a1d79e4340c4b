#pragma once
// Error checking for CUDA, cuDNN and cuBLAS calls. A failed call throws dtn::cuda_error whose
// message carries the call text, the library's error string and file:line. The library never
// aborts: a caller can catch the error, report it and carry on (or shut down cleanly).
//
//   DTN_CUDA_CHECK(cudaMalloc(&p, bytes));
//   kernel<<<grid, block, 0, stream>>>(...);
//   DTN_CUDA_CHECK_LAUNCH();   // launch-configuration errors (cudaGetLastError)
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>

#include "../../core/error.hpp"

namespace dtn {
namespace cuda {
namespace detail {

[[noreturn]] inline void throw_call_error(const char* library, const char* call, const std::string& what,
                                          const char* file, int line) {
  throw cuda_error(std::string("dtn: ") + library + " call `" + call + "` failed: " + what + " at " + file + ":" +
                   std::to_string(line));
}

inline std::string cuda_error_text(cudaError_t e) {
  return std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")";
}

// Whether work queued on s is being captured into a CUDA graph.
inline bool stream_capturing(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t e = cudaStreamIsCapturing(s, &status);
  if (e != cudaSuccess) throw_call_error("CUDA", "cudaStreamIsCapturing(stream)", cuda_error_text(e), __FILE__, __LINE__);
  return status != cudaStreamCaptureStatusNone;
}

// Throws cuda_error if s is being captured: `what` (a cudaMalloc, a handle's creation, a wait on
// another stream) cannot be part of a CUDA graph, and CUDA itself would only report
// cudaErrorStreamCaptureUnsupported and invalidate the capture.
inline void refuse_during_capture(cudaStream_t s, const char* what) {
  if (stream_capturing(s))
    throw cuda_error(std::string("dtn: ") + what +
                     " during a CUDA graph capture: run the captured work once eagerly before capturing it, so "
                     "that its buffers, handles and algorithm choices exist (dtn::cuda::GraphStep does)");
}

inline std::string cublas_error_text(cublasStatus_t s) {
  return std::string(cublasGetStatusString(s)) + " (" + cublasGetStatusName(s) + ")";
}

}  // namespace detail
}  // namespace cuda
}  // namespace dtn

#define DTN_CUDA_CHECK(call)                                                                                  \
  do {                                                                                                        \
    cudaError_t dtn_cuda_status_ = (call);                                                                    \
    if (dtn_cuda_status_ != cudaSuccess) {                                                                    \
      (void)cudaGetLastError(); /* reset a non-sticky error so later launch checks do not report it again */ \
      ::dtn::cuda::detail::throw_call_error("CUDA", #call, ::dtn::cuda::detail::cuda_error_text(dtn_cuda_status_), \
                                            __FILE__, __LINE__);                                              \
    }                                                                                                         \
  } while (0)

#define DTN_CUDNN_CHECK(call)                                                                                 \
  do {                                                                                                        \
    cudnnStatus_t dtn_cudnn_status_ = (call);                                                                 \
    if (dtn_cudnn_status_ != CUDNN_STATUS_SUCCESS)                                                            \
      ::dtn::cuda::detail::throw_call_error("cuDNN", #call, cudnnGetErrorString(dtn_cudnn_status_), __FILE__, \
                                            __LINE__);                                                        \
  } while (0)

#define DTN_CUBLAS_CHECK(call)                                                                                \
  do {                                                                                                        \
    cublasStatus_t dtn_cublas_status_ = (call);                                                               \
    if (dtn_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                                          \
      ::dtn::cuda::detail::throw_call_error("cuBLAS", #call,                                                  \
                                            ::dtn::cuda::detail::cublas_error_text(dtn_cublas_status_),       \
                                            __FILE__, __LINE__);                                              \
  } while (0)

// After every kernel launch: reports (and clears) a launch-configuration error such as an invalid
// grid or too much shared memory. Asynchronous faults inside a kernel surface at the next
// synchronising call, which is checked as well.
#define DTN_CUDA_CHECK_LAUNCH()                                                                               \
  do {                                                                                                        \
    cudaError_t dtn_launch_status_ = cudaGetLastError();                                                      \
    if (dtn_launch_status_ != cudaSuccess)                                                                    \
      ::dtn::cuda::detail::throw_call_error("CUDA", "kernel launch",                                          \
                                            ::dtn::cuda::detail::cuda_error_text(dtn_launch_status_), __FILE__, \
                                            __LINE__);                                                        \
  } while (0)
