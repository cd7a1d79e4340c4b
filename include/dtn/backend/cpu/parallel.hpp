#pragma once
// Thread control for the CPU backend: OpenMP where the compiler has it (Eigen's GEMM uses the same
// pool), one thread where it does not (Apple's clang without libomp, a build configured with
// -DDTN_OPENMP=OFF), which computes what an OpenMP build computes on one thread.
//
// The backend's loops say DTN_OMP(parallel for ...) instead of #pragma omp parallel for ...: the
// same directive where OpenMP is on, nothing where it is off (a bare #pragma omp would warn,
// -Wunknown-pragmas, in a -Wall build without -fopenmp). Thread numbers come from the functions
// below, which a build without OpenMP answers as one thread would.
#if defined(_OPENMP)
#include <omp.h>
#endif

#include <Eigen/Core>

#define DTN_OMP_PRAGMA_(text) _Pragma(#text)
#if defined(_OPENMP)
#define DTN_OMP(...) DTN_OMP_PRAGMA_(omp __VA_ARGS__)
#else
#define DTN_OMP(...)
#endif

namespace dtn {

// Whether this build runs the CPU backend's loops on several threads (it was compiled with OpenMP).
constexpr bool has_openmp() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

// Sets the number of CPU threads used by dtn (OpenMP loops and Eigen's GEMM). Without OpenMP
// there is one thread, whatever n is (num_threads() says so).
inline void set_num_threads(int n) {
  if (n < 1) n = 1;
#if defined(_OPENMP)
  omp_set_num_threads(n);
  Eigen::setNbThreads(n);
#else
  Eigen::setNbThreads(1);
#endif
}
inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace cpu {
// omp_in_parallel, omp_get_thread_num and omp_get_num_threads, or one thread's answers.
inline bool in_parallel() {
#if defined(_OPENMP)
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}
inline int thread_num() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}
inline int team_size() {
#if defined(_OPENMP)
  return omp_get_num_threads();
#else
  return 1;
#endif
}
}  // namespace cpu

}  // namespace dtn
