#pragma once
// DTN_HD marks a function compiled for both host and device: one formula, two backends
// (the CUTLASS_HOST_DEVICE idea). Outside nvcc it expands to nothing.
#if defined(__CUDACC__)
#define DTN_HD __host__ __device__ __forceinline__
#else
#define DTN_HD inline
#endif
