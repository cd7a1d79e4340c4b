#pragma once
// Row-major GEMM: C = alpha * op(A) op(B) + beta * C. Float on AVX2+FMA targets without AVX-512
// goes through dtn's packed kernel (sgemm_avx2.hpp); everything else through Eigen.
#include <Eigen/Core>
#include <type_traits>

#include "sgemm_avx2.hpp"

namespace dtn {
namespace cpu {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MapC = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MapM = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;

// The Eigen product (any T, any target). op(A) is m x k, op(B) is k x n, C is m x n; lda/ldb/ldc
// are row strides of the stored matrices.
template <class T>
void gemm_eigen(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb,
                T beta, T* C, int ldc) {
  MapM<T> c(C, m, n, Eigen::OuterStride<>(ldc));
  if (beta == T(0))
    c.setZero();
  else if (beta != T(1))
    c *= beta;
  if (m == 0 || n == 0 || k == 0) return;
  MapC<T> a(A, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
  MapC<T> b(B, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
  if (!trans_a && !trans_b)
    c.noalias() += alpha * a * b;
  else if (trans_a && !trans_b)
    c.noalias() += alpha * a.transpose() * b;
  else if (!trans_a && trans_b)
    c.noalias() += alpha * a * b.transpose();
  else
    c.noalias() += alpha * a.transpose() * b.transpose();
}

// C = alpha * op(A) op(B) + beta * C.
template <class T>
void gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb,
          T beta, T* C, int ldc) {
#if defined(DTN_OWN_SGEMM)
  if constexpr (std::is_same<T, float>::value)
    return sgemm::gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
  gemm_eigen(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace cpu
}  // namespace dtn
