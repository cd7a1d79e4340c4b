#pragma once
// Thread control for the CPU backend: OpenMP where the compiler has it (Eigen's GEMM uses the same
// pool), one thread where it does not (Apple's clang without libomp, a build configured with
// -DDTN_OPENMP=OFF), which computes what an OpenMP build computes on one thread.
//
// The backend's loops say DTN_OMP(parallel for ...) instead of #pragma omp parallel for ...: the
// same directive where OpenMP is on, nothing where it is off (a bare #pragma omp would warn,
// -Wunknown-pragmas, in a -Wall build without -fopenmp). Thread numbers come from the functions
// below, which a build without OpenMP answers as one thread would.
//
// A directive never has both a num_threads and an if clause: clang (14 here, with its libomp)
// pushes the num_threads request before it tests the if, and where the if is false the
// serialised region leaves the request behind, so the thread's next parallel region, dtn's or
// the caller's, gets that many threads instead of its own count (llvm/llvm-project#63197). A
// region that must sometimes run on one thread says num_threads(cond ? n : 1) or if (cond) alone.
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

// has_openmp(): whether this build runs the CPU backend's loops on several threads (it was
// compiled with OpenMP). num_threads(): how many it runs them on. cpu::in_parallel, thread_num
// and team_size: omp_in_parallel, omp_get_thread_num and omp_get_num_threads, or one thread's
// answers.
#if defined(_OPENMP)
constexpr bool has_openmp() { return true; }
inline int num_threads() { return omp_get_max_threads(); }
namespace cpu {
inline bool in_parallel() { return omp_in_parallel() != 0; }
inline int thread_num() { return omp_get_thread_num(); }
inline int team_size() { return omp_get_num_threads(); }
}  // namespace cpu
#else
constexpr bool has_openmp() { return false; }
inline int num_threads() { return 1; }
namespace cpu {
inline bool in_parallel() { return false; }
inline int thread_num() { return 0; }
inline int team_size() { return 1; }
}  // namespace cpu
#endif

// Sets the number of CPU threads used by dtn (OpenMP loops and Eigen's GEMM). Without OpenMP
// there is one thread, whatever n is (num_threads() says so).
inline void set_num_threads(int n) {
  if (n < 1 || !has_openmp()) n = 1;
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}

}  // namespace dtn
