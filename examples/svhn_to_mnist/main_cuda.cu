// The same pipeline instantiated for the GPU backend.
#include <dtn/cuda.cuh>

#include "pipeline.hpp"

int run_cuda(const digits::Options& o) {
  dtn::cuda::set_tf32(o.tf32);
  dtn::cuda::set_conv_autotune(o.conv_autotune);
  dtn::cuda::set_conv_deterministic(!o.conv_nondeterministic);
  dtn::cuda::set_conv_gemm(!o.conv_cudnn);
  dtn::cuda::set_conv_overlap(o.conv_overlap);
  if (o.conv_workspace_mib > 0) dtn::cuda::set_conv_workspace_limit(static_cast<std::size_t>(o.conv_workspace_mib) << 20);
  return digits::run_pipeline<dtn::Cuda>(o);
}
