#pragma once
// GraphStep: a whole DomainTransfer training step (D update and g update) as one CUDA graph.
// The first call runs the step eagerly (every buffer, cuDNN plan and workspace comes into being),
// the second captures it, and every call after that replays it: a step becomes one graph launch
// instead of hundreds of kernel launches, with no host round trip inside it. The non-finite
// guard runs on the device (DomainTransfer::run_deferred); the losses are read after the replay.
//
// A graph holds the device addresses of the trainer's buffers and of the thread's convolution
// workspace and reduction scratch. It is recaptured when the batch shapes change, and when the
// workspace or scratch has moved since the capture (an op between steps needed more of it: an
// evaluation at another geometry, an algorithm chosen by autotuning): that step runs eagerly and
// the next one captures anew, so a replay never writes to a block the cache has handed on.
// Between steps, run the trainer's networks (transfer(), evaluation) only on batches no larger
// than the training batch, or call reset() before the next step: a larger batch makes the
// networks reallocate buffers the graph still points to.
#include <cuda_runtime.h>

#include <cstdint>

#include "../backend/cuda/check.cuh"
#include "../backend/cuda/context.cuh"
#include "domain_transfer.hpp"

namespace dtn {
namespace cuda {

template <class Trainer>
class GraphStep {
 public:
  explicit GraphStep(Trainer& trainer) : trainer_(trainer) {}
  ~GraphStep() { reset(); }
  GraphStep(const GraphStep&) = delete;
  GraphStep& operator=(const GraphStep&) = delete;

  DtnLosses step(View<const float, Cuda> xs, View<const float, Cuda> xt) {
    if (xs.shape != xs_.shape() || xt.shape != xt_.shape()) {
      reset();
      xs_.resize(xs.shape);
      xt_.resize(xt.shape);
    }
    copy(xs, xs_.view());
    copy(xt, xt_.view());
    trainer_.prepare_deferred();
    if (exec_ != nullptr && context().buffer_moves() != buffer_moves_) reset();
    if (!warm_) {
      trainer_.run_deferred(xs_.view(), xt_.view());
      warm_ = true;
    } else {
      if (exec_ == nullptr) capture();
      DTN_CUDA_CHECK(cudaGraphLaunch(exec_, stream()));
    }
    return trainer_.finish_deferred();
  }
  bool captured() const { return exec_ != nullptr; }
  // Forgets the graph; the next step runs eagerly again and the one after recaptures.
  void reset() {
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
    warm_ = false;
  }

 private:
  void capture() {
    cudaStream_t s = stream();
    DTN_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      trainer_.run_deferred(xs_.view(), xt_.view());
    } catch (...) {
      cudaGraph_t broken = nullptr;
      (void)cudaStreamEndCapture(s, &broken);
      if (broken != nullptr) (void)cudaGraphDestroy(broken);
      throw;
    }
    cudaGraph_t graph = nullptr;
    DTN_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    const cudaError_t inst = cudaGraphInstantiate(&exec_, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (inst != cudaSuccess) {
      exec_ = nullptr;
      DTN_CUDA_CHECK(inst);
    }
    buffer_moves_ = context().buffer_moves();
  }

  Trainer& trainer_;
  Tensor<float, Cuda> xs_, xt_;
  cudaGraphExec_t exec_ = nullptr;
  std::uint64_t buffer_moves_ = 0;  // context().buffer_moves() when the graph was captured
  bool warm_ = false;
};

}  // namespace cuda
}  // namespace dtn
