#pragma once
// The CUDA umbrella: everything of <dtn/dtn.hpp> plus the GPU backend (Backend<Cuda>,
// Memory<Cuda>, the host/device copies, the per-thread context and the caching allocator).
// Include it from .cu files compiled by nvcc and link the CMake target dtn::cuda. CPU-only code
// includes <dtn/dtn.hpp>, which never includes a CUDA header.
#if !defined(__CUDACC__)
#error "<dtn/cuda.cuh> must be compiled by nvcc (a .cu file, CMake target dtn::cuda); CPU-only code includes <dtn/dtn.hpp>"
#endif

#if __has_include(<dtn/dtn.hpp>)
#include <dtn/dtn.hpp>
#endif

#include "core/tensor.hpp"
#include "backend/cuda/allocator.cuh"
#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/memory.cuh"
#include "backend/cuda/profile.cuh"
#include "train/graph_step.cuh"
