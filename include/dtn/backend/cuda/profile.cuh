#pragma once
// dtn::cuda::LayerProfile: the LayerHook (nn/profile.hpp) for the GPU backend. A layer's pass
// returns as soon as its kernels are queued, so a host clock would time the queueing; this hook
// records a CUDA event on the calling thread's stream before and after each pass, and collect()
// waits for those events and adds the elapsed times to times(). Events are pooled and reused.
// Passes queued while the stream is being captured into a CUDA graph are not timed (an event
// recorded there becomes a node of the graph, not a timestamp): time the eager step instead.
//
//   dtn::cuda::LayerProfile prof;
//   { dtn::ScopedLayerHook on(prof); trainer.step(xs, xt); }
//   prof.collect();
//   for (const auto& line : prof.times().table()) std::puts(line.c_str());
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "../../nn/profile.hpp"
#include "check.cuh"
#include "context.cuh"

namespace dtn {
namespace cuda {

class LayerProfile : public LayerHook {
 public:
  LayerProfile() = default;
  ~LayerProfile() override {
    for (const Pass& p : passes_) {
      release_noexcept(p.start);
      release_noexcept(p.stop);
    }
    for (cudaEvent_t e : free_) (void)cudaEventDestroy(e);
  }
  LayerProfile(const LayerProfile&) = delete;
  LayerProfile& operator=(const LayerProfile&) = delete;

  void begin(const LayerEvent& e) override {
    if (capturing(stream())) return;
    Pass p{*e.net, e.layer, e.kind, e.backward, nullptr, nullptr};
    p.start = record();
    passes_.push_back(p);
  }
  void end(const LayerEvent& e) override {
    // The matching begin is the last pass opened (passes do not nest); a pass whose layer threw
    // has no end and is dropped by collect().
    if (passes_.empty() || capturing(stream())) return;
    Pass& p = passes_.back();
    if (p.stop != nullptr || p.layer != e.layer || p.backward != e.backward || p.net != *e.net) return;
    p.stop = record();
  }

  // Waits for the recorded passes (on whichever thread's stream they ran), adds every completed
  // one to times() and recycles the events.
  void collect() {
    for (Pass& p : passes_) {
      if (p.stop != nullptr) {
        DTN_CUDA_CHECK(cudaEventSynchronize(p.stop));
        float ms = 0;
        DTN_CUDA_CHECK(cudaEventElapsedTime(&ms, p.start, p.stop));
        times_.add(LayerEvent{&p.net, p.layer, p.kind, p.backward}, ms);
      }
      free_.push_back(p.start);
      if (p.stop != nullptr) free_.push_back(p.stop);
      p.start = p.stop = nullptr;
    }
    passes_.clear();
  }
  const LayerTimes& times() const { return times_; }
  void clear() { times_.clear(); }

 private:
  struct Pass {
    std::string net;
    std::size_t layer;
    const char* kind;
    bool backward;
    cudaEvent_t start, stop;
  };

  cudaEvent_t record() {
    cudaEvent_t e = nullptr;
    if (!free_.empty()) {
      e = free_.back();
      free_.pop_back();
    } else {
      DTN_CUDA_CHECK(cudaEventCreate(&e));
    }
    const cudaError_t rc = cudaEventRecord(e, stream());
    if (rc != cudaSuccess) {
      free_.push_back(e);
      DTN_CUDA_CHECK(rc);
    }
    return e;
  }
  static void release_noexcept(cudaEvent_t e) noexcept {
    if (e != nullptr) (void)cudaEventDestroy(e);
  }

  std::vector<Pass> passes_;
  std::vector<cudaEvent_t> free_;
  LayerTimes times_;
};

}  // namespace cuda
}  // namespace dtn
