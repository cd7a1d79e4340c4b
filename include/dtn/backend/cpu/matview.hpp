#pragma once
// MatView: how the CPU GEMM (gemm.hpp) sees a stored matrix. Element (r, c) is at
//   p + (c / hw) * img + r * ld + c % hw,
// i.e. rows of stride ld whose columns come in groups of hw ("images"), each group img elements
// after the previous one. A plain row-major matrix is one group (hw = kWholeRow). The
// convolutions use grouped views to read dy [n, c_out, h*w] and to write y as [c_out, n*h*w]
// matrices in place, without copying them into a column matrix first.
#include <climits>

namespace dtn {
namespace cpu {

constexpr long kWholeRow = LONG_MAX / 4;

template <class T>
struct MatView {
  T* p;
  long ld;
  long hw = kWholeRow;
  long img = 0;

  T* at(long r, long c) const { return p + (c / hw) * img + r * ld + c % hw; }
  // Columns [c, c + n) of a row are contiguous in memory (inside one group).
  bool run(long c, long n) const { return c % hw + n <= hw; }
  bool plain() const { return hw == kWholeRow; }
};

template <class T>
MatView<T> plain_view(T* p, long ld) {
  return MatView<T>{p, ld, kWholeRow, 0};
}

}  // namespace cpu
}  // namespace dtn
