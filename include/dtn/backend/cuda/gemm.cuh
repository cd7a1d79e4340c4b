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

namespace detail {

// The row-major product as the column-major call above. `sgemm` takes cublasSgemm's arguments
// after the handle (alpha and beta by value): cuBLAS here, and in tests/cuda_host a column-major
// reference that follows the BLAS definition and checks cuBLAS's argument rules, so the swap is
// checked without a GPU.
template <class Sgemm>
void gemm_as_column_major(Sgemm&& sgemm, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* A,
                          int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  sgemm(trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, alpha, B, ldb, A, lda, beta,
        C, ldc);
}

}  // namespace detail

inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  if (m < 0 || n < 0 || k < 0)
    throw argument_error("dtn::Backend<Cuda>::gemm: negative size m=" + std::to_string(m) + " n=" + std::to_string(n) +
                         " k=" + std::to_string(k));
  if (m == 0 || n == 0) return;
  detail::gemm_as_column_major(
      [](cublasOperation_t op_1, cublasOperation_t op_2, int m_1, int n_1, int k_1, float a, const float* A_1, int ld_1,
         const float* B_1, int ld_2, float b, float* C_1, int ld_3) {
        DTN_CUBLAS_CHECK(
            cublasSgemm(context().cublas(), op_1, op_2, m_1, n_1, k_1, &a, A_1, ld_1, B_1, ld_2, &b, C_1, ld_3));
      },
      trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace cuda
}  // namespace dtn
