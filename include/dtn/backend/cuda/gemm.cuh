#pragma once
// Row-major GEMM on cuBLAS. cuBLAS is column-major, and a row-major matrix with leading
// dimension ld is the column-major view of its transpose with the same ld, so
//   C = a op(A) op(B) + b C   (row-major, m x n)
// is computed as the column-major product C^T = a op(B)^T op(A)^T + b C^T, i.e. cublasSgemm with
// the operands swapped: (op_b, op_a, n, m, k, B, ldb, A, lda, C, ldc).
// Math mode comes from the context: exact FP32 by default, TF32 with dtn::cuda::set_tf32(true).
#include <cublas_v2.h>

#include <string>

#include "../../core/error.hpp"
#include "check.cuh"
#include "context.cuh"

namespace dtn {
namespace cuda {

inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  if (m < 0 || n < 0 || k < 0)
    throw argument_error("dtn::Backend<Cuda>::gemm: negative size m=" + std::to_string(m) + " n=" + std::to_string(n) +
                         " k=" + std::to_string(k));
  if (m == 0 || n == 0) return;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  DTN_CUBLAS_CHECK(cublasSgemm(context().cublas(), op_b, op_a, n, m, k, &alpha, B, ldb, A, lda, &beta, C, ldc));
}

}  // namespace cuda
}  // namespace dtn
