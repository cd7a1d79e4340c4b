#pragma once
// Row-major GEMM: C = alpha * op(A) op(B) + beta * C. Float on AVX2+FMA targets (AVX-512 ones
// included) goes through dtn's packed kernel (sgemm.hpp); everything else through Eigen.
#include <Eigen/Core>
#include <algorithm>
#include <type_traits>
#include <vector>

#include "matview.hpp"
#include "sgemm.hpp"

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
    return sgemm::gemm(trans_a, trans_b, m, n, k, alpha, plain_view(A, lda), plain_view(B, ldb), beta,
                       plain_view(C, ldc));
#endif
  gemm_eigen(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Copies the rows x cols stored matrix seen through v into dense row-major dst (and back).
template <class T>
void gather_view(const MatView<const T>& v, long rows, long cols, T* dst) {
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < cols;) {
      const long len = std::min(cols - c, v.hw - c % v.hw);
      std::copy(v.at(r, c), v.at(r, c) + len, dst + r * cols + c);
      c += len;
    }
}
template <class T>
void scatter_view(const T* src, long rows, long cols, const MatView<T>& v) {
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < cols;) {
      const long len = std::min(cols - c, v.hw - c % v.hw);
      std::copy(src + r * cols + c, src + r * cols + c + len, v.at(r, c));
      c += len;
    }
}

// C = alpha * op(A) op(B) + beta * C (+ bias[i] on every element of row i, when bias is set), with
// operands seen through views (matview.hpp), so that a convolution can read dy and write y in
// place. dtn's packed float GEMM reads and writes the views directly; the Eigen path copies
// grouped views to dense scratch and back.
template <class T>
void gemm_view(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const MatView<const T>& A,
               const MatView<const T>& B, T beta, const MatView<T>& C, const T* bias = nullptr) {
#if defined(DTN_OWN_SGEMM)
  if constexpr (std::is_same<T, float>::value) return sgemm::gemm(trans_a, trans_b, m, n, k, alpha, A, B, beta, C, bias);
#endif
  static thread_local std::vector<T> sa, sb, sc;
  const auto dense = [](const MatView<const T>& v, long rows, long cols, std::vector<T>& s) {
    if (v.plain()) return v.p;
    s.resize(static_cast<std::size_t>(rows * cols));
    gather_view(v, rows, cols, s.data());
    return static_cast<const T*>(s.data());
  };
  const T* a = dense(A, trans_a ? k : m, trans_a ? m : k, sa);
  const T* b = dense(B, trans_b ? n : k, trans_b ? k : n, sb);
  const long lda = A.plain() ? A.ld : (trans_a ? m : k), ldb = B.plain() ? B.ld : (trans_b ? k : n);
  T* c = C.p;
  long ldc = C.ld;
  if (!C.plain()) {
    sc.resize(static_cast<std::size_t>(m) * n);
    if (beta != T(0)) gather_view(MatView<const T>{C.p, C.ld, C.hw, C.img}, m, n, sc.data());
    c = sc.data();
    ldc = n;
  }
  gemm_eigen(trans_a, trans_b, m, n, k, alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
             static_cast<int>(ldc));
  if (bias)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) c[i * ldc + j] += bias[i];
  if (!C.plain()) scatter_view(static_cast<const T*>(c), m, n, C);
}

}  // namespace cpu
}  // namespace dtn
