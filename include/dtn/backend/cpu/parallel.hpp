#pragma once
// Thread control for the CPU backend (OpenMP; Eigen's GEMM uses the same pool).
#include <omp.h>

#include <Eigen/Core>

namespace dtn {

// Sets the number of CPU threads used by dtn (OpenMP loops and Eigen's GEMM).
inline void set_num_threads(int n) {
  if (n < 1) n = 1;
  omp_set_num_threads(n);
  Eigen::setNbThreads(n);
}
inline int num_threads() { return omp_get_max_threads(); }

}  // namespace dtn
