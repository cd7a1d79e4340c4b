#pragma once
// Row-major GEMM on Eigen: C = alpha * op(A) op(B) + beta * C.
#include <Eigen/Core>

namespace dtn {
namespace cpu {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MapC = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MapM = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;

// op(A) is m x k, op(B) is k x n, C is m x n; lda/ldb/ldc are row strides of the stored matrices.
template <class T>
void gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb,
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

}  // namespace cpu
}  // namespace dtn
