#pragma once
// Tensor<T, Dev>: one owner, one device, move-only, NCHW row-major.
// View<T, Dev>: a cheap non-owning (pointer, shape) pair; View<const T, Dev> for read-only.
// Copies across devices are explicit: dtn::to<Dst>(tensor). Nothing is synchronised behind
// the user's back.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "memory.hpp"
#include "shape.hpp"

namespace dtn {

namespace detail {
inline std::atomic<std::uint64_t>& storage_move_count() {
  static std::atomic<std::uint64_t> n{0};
  return n;
}
}  // namespace detail

// How many times device storage has been released because its owner grew: a device (non-CPU)
// Tensor resized past its capacity, the CUDA context's workspace or scratch growing. That is how
// the buffers a network, a loss or the trainer keeps move (they only ever resize). Allocating
// fresh storage, destroying or move-assigning a tensor do not count, nor do CPU tensors, so a
// loop that makes a new batch tensor every step does not move it. Anything that keeps device
// addresses across calls (a captured CUDA graph: dtn::cuda::GraphStep) compares this count with
// the one it started with, since a released block may be handed to another tensor.
// Process-wide and thread-safe; it only grows.
inline std::uint64_t storage_moves() { return detail::storage_move_count().load(std::memory_order_relaxed); }
inline void note_storage_move() { detail::storage_move_count().fetch_add(1, std::memory_order_relaxed); }

template <class T, class Dev>
struct View {
  T* data = nullptr;
  Shape shape;

  View() = default;
  View(T* d, Shape s) : data(d), shape(s) {}
  // A View<T> converts to View<const T>.
  template <class U, class = std::enable_if_t<std::is_same<const U, T>::value && !std::is_same<U, T>::value>>
  View(const View<U, Dev>& v) : data(v.data), shape(v.shape) {}

  std::size_t size() const { return shape.numel(); }
  bool empty() const { return data == nullptr || size() == 0; }
  // Samples [begin, begin + count) of the batch.
  View slice(std::int64_t begin, std::int64_t count) const {
    if (begin < 0 || count < 0 || begin + count > shape[0])
      throw argument_error("dtn::View::slice: samples [" + std::to_string(begin) + ", " +
                           std::to_string(begin + count) + ") out of a batch of " + std::to_string(shape[0]));
    return View(data + static_cast<std::size_t>(begin) * shape.sample_numel(), shape.with_batch(count));
  }
  View reshaped(Shape s) const {
    if (s.numel() != size()) throw shape_error("dtn::View::reshaped: cannot view " + shape.str() + " as " + s.str());
    return View(data, s);
  }
};

template <class T, class Dev = Cpu>
class Tensor {
  static_assert(std::is_arithmetic<T>::value, "dtn::Tensor holds arithmetic types");

 public:
  using value_type = T;
  using device = Dev;
  // Whether growing past this tensor's capacity counts in storage_moves().
  static constexpr bool counts_moves = !std::is_same<Dev, Cpu>::value;

  Tensor() = default;
  explicit Tensor(Shape s) { resize(s); }
  ~Tensor() { release(); }
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor(Tensor&& o) noexcept : data_(o.data_), shape_(o.shape_), capacity_(o.capacity_) {
    o.data_ = nullptr;
    o.capacity_ = 0;
    o.shape_ = Shape();
  }
  Tensor& operator=(Tensor&& o) noexcept {
    if (this != &o) {
      release();
      data_ = o.data_;
      shape_ = o.shape_;
      capacity_ = o.capacity_;
      o.data_ = nullptr;
      o.capacity_ = 0;
      o.shape_ = Shape();
    }
    return *this;
  }

  // Changes the shape; reallocates only when the new size exceeds the capacity, so a buffer
  // reused across batches allocates once. Contents are unspecified after a resize that grows.
  void resize(Shape s) {
    std::size_t n = s.numel();
    if (n > capacity_) {
      if (counts_moves && data_ != nullptr) note_storage_move();
      release();
      data_ = static_cast<T*>(Memory<Dev>::allocate(n * sizeof(T)));
      capacity_ = n;
    }
    shape_ = s;
  }
  void zero() { Memory<Dev>::memset_zero(data_, size() * sizeof(T)); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  std::size_t size() const { return shape_.numel(); }
  std::int64_t dim(int i) const { return shape_[i]; }
  bool empty() const { return size() == 0; }

  View<T, Dev> view() { return View<T, Dev>(data_, shape_); }
  View<const T, Dev> view() const { return View<const T, Dev>(data_, shape_); }
  operator View<T, Dev>() { return view(); }
  operator View<const T, Dev>() const { return view(); }

  // Host element access (CPU tensors only).
  T& operator[](std::size_t i) {
    static_assert(std::is_same<Dev, Cpu>::value, "element access is for CPU tensors; copy with dtn::to<Cpu>()");
    return data_[i];
  }
  const T& operator[](std::size_t i) const {
    static_assert(std::is_same<Dev, Cpu>::value, "element access is for CPU tensors; copy with dtn::to<Cpu>()");
    return data_[i];
  }

 private:
  void release() {
    if (data_) Memory<Dev>::deallocate(data_, capacity_ * sizeof(T));
    data_ = nullptr;
    capacity_ = 0;
  }
  T* data_ = nullptr;
  Shape shape_;
  std::size_t capacity_ = 0;
};

// Explicit copy of a tensor (or view) to device Dst.
template <class Dst, class T, class Src>
Tensor<std::remove_const_t<T>, Dst> to(View<T, Src> v) {
  Tensor<std::remove_const_t<T>, Dst> out(v.shape);
  Copy<Dst, Src>::run(out.data(), v.data, v.size() * sizeof(T));
  return out;
}
template <class Dst, class T, class Src>
Tensor<T, Dst> to(const Tensor<T, Src>& t) {
  return to<Dst>(t.view());
}
// Copy between two existing buffers of equal size (any devices).
template <class T, class Dst, class Src>
void copy(View<const T, Src> src, View<T, Dst> dst) {
  if (src.size() != dst.size())
    throw shape_error("dtn::copy: source " + src.shape.str() + " and destination " + dst.shape.str() + " differ in size");
  Copy<Dst, Src>::run(dst.data, src.data, src.size() * sizeof(T));
}

// CPU tensor from host values (for tests and small inputs).
template <class T>
Tensor<T, Cpu> from_vector(Shape s, const std::vector<T>& values) {
  if (values.size() != s.numel())
    throw shape_error("dtn::from_vector: " + std::to_string(values.size()) + " values for shape " + s.str());
  Tensor<T, Cpu> t(s);
  Copy<Cpu, Cpu>::run(t.data(), values.data(), values.size() * sizeof(T));
  return t;
}
template <class T, class Dev>
std::vector<std::remove_const_t<T>> to_vector(View<T, Dev> v) {
  std::vector<std::remove_const_t<T>> out(v.size());
  Copy<Cpu, Dev>::run(out.data(), v.data, v.size() * sizeof(T));
  return out;
}
template <class T, class Dev>
std::vector<T> to_vector(const Tensor<T, Dev>& t) {
  return to_vector(t.view());
}

}  // namespace dtn
