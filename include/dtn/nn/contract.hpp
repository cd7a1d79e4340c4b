#pragma once
// The layer contract, checked at compile time so that a user's own layer type that breaks it
// gets one readable message instead of pages of template errors.
//
// A layer SPEC (what goes into Sequential<...>) has a member template
//     template <class T, class Dev> using layer = MyLayer<T, Dev>;
// and the bound LAYER type provides:
//     static constexpr const char* kind;                    // e.g. "Conv2d", used in messages and signatures
//     Shape setup(const Shape& in_sample);                  // validate [C,H,W] (no batch), declare parameter
//                                                           // shapes, return the output sample shape
//     template <class F> void for_each_param(F&& f);        // f("weight", Param<T, Dev>&) for each tensor
//     void forward(View<const T, Dev> x, View<T, Dev> y, bool train);
//     void backward(View<const T, Dev> x, View<const T, Dev> y, View<const T, Dev> dy,
//                   View<T, Dev> dx, bool param_grads);    // dx.data may be null: skip it; parameter
//                                                           // gradients ACCUMULATE when param_grads
//
// Optional: a layer that can run the layer after it inside its own passes (batch norm with the
// activation after it) declares
//     template <class Next> static constexpr bool fuses_with = ...;  // true for the Next it can run
//     template <class Next> void forward_fused(View<const T, Dev> x, View<T, Dev> y, bool train,
//                                              const Next& next);   // y = next(this(x))
//     template <class Next> void backward_fused(View<const T, Dev> x, View<const T, Dev> y,
//                                               View<const T, Dev> dy, View<T, Dev> dx, bool param_grads,
//                                               const Next& next);  // y, dy: next's output and its gradient
// and Sequential runs such a pair as one pass each way, unless Network::set_fusion(false). The
// pair's results must be those of the two layers run one after the other, bit for bit; Next
// must have no parameters.
//
// Optional, and required of a layer whose output for one sample depends on the other samples of
// the batch (batch norm in training mode):
//     void set_batch_segments(const std::vector<std::int64_t>& sizes);
// Sequential calls it before each forward with the sizes of the batches that the input holds one
// after the other (Network::forward(x, segments); empty: the input is one batch), and the layer
// treats each segment as a batch of its own, in that forward and in the backward after it. A
// layer without it is taken to compute every sample on its own.
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../backend/backend.hpp"
#include "param.hpp"

namespace dtn {
namespace detail {

template <class S, class T, class Dev, class = void>
struct has_layer_template : std::false_type {};
template <class S, class T, class Dev>
struct has_layer_template<S, T, Dev, std::void_t<typename S::template layer<T, Dev>>> : std::true_type {};

template <class L, class = void>
struct has_kind : std::false_type {};
template <class L>
struct has_kind<L, std::void_t<decltype(static_cast<const char*>(L::kind))>> : std::true_type {};

template <class L, class = void>
struct has_setup : std::false_type {};
template <class L>
struct has_setup<L, std::enable_if_t<std::is_same<decltype(std::declval<L&>().setup(std::declval<const Shape&>())),
                                                  Shape>::value>> : std::true_type {};

struct ParamProbe {
  template <class P>
  void operator()(const char*, P&) const {}
};
template <class L, class = void>
struct has_for_each_param : std::false_type {};
template <class L>
struct has_for_each_param<L, std::void_t<decltype(std::declval<L&>().for_each_param(ParamProbe{}))>> : std::true_type {};

template <class L, class T, class Dev, class = void>
struct has_forward : std::false_type {};
template <class L, class T, class Dev>
struct has_forward<L, T, Dev,
                   std::void_t<decltype(std::declval<L&>().forward(std::declval<View<const T, Dev>>(),
                                                                   std::declval<View<T, Dev>>(), true))>>
    : std::true_type {};

template <class L, class T, class Dev, class = void>
struct has_backward : std::false_type {};
template <class L, class T, class Dev>
struct has_backward<L, T, Dev,
                    std::void_t<decltype(std::declval<L&>().backward(
                        std::declval<View<const T, Dev>>(), std::declval<View<const T, Dev>>(),
                        std::declval<View<const T, Dev>>(), std::declval<View<T, Dev>>(), true))>>
    : std::true_type {};

template <class L, class = void>
struct has_batch_segments : std::false_type {};
template <class L>
struct has_batch_segments<L, std::void_t<decltype(std::declval<L&>().set_batch_segments(
                                 std::declval<const std::vector<std::int64_t>&>()))>> : std::true_type {};

// Segments must tile the batch x (each >= 1, summing to its N); none is the batch as one. Throws
// shape_error naming `where`.
inline void check_batch_segments(const std::vector<std::int64_t>& segments, const Shape& x, const std::string& where) {
  if (segments.empty()) return;
  check_segment_sizes<shape_error>(segments.data(), segments.size(), x[0], where, [&] { return "input " + x.str(); });
}

template <class L, class Next, class = void>
struct fuses : std::false_type {};
template <class L, class Next>
struct fuses<L, Next, std::enable_if_t<L::template fuses_with<Next>>> : std::true_type {};

// bind_layer<Spec, T, Dev>::type is the checked layer type.
template <class S, class T, class Dev, bool = has_layer_template<S, T, Dev>::value>
struct bind_layer {
  static_assert(has_layer_template<S, T, Dev>::value,
                "dtn layer contract: every element of Sequential<...> must be a layer spec with a member "
                "template `template <class T, class Dev> using layer = YourLayer<T, Dev>;` (see dtn/nn/contract.hpp)");
  struct invalid {};
  using type = invalid;
};
template <class S, class T, class Dev>
struct bind_layer<S, T, Dev, true> {
  using type = typename S::template layer<T, Dev>;
  static_assert(has_kind<type>::value,
                "dtn layer contract: the layer type needs `static constexpr const char* kind = \"Name\";`");
  static_assert(has_setup<type>::value,
                "dtn layer contract: the layer type needs `Shape setup(const Shape& in_sample)` returning the output sample shape");
  static_assert(has_for_each_param<type>::value,
                "dtn layer contract: the layer type needs `template <class F> void for_each_param(F&& f)` (empty for no parameters)");
  static_assert(has_forward<type, T, Dev>::value,
                "dtn layer contract: the layer type needs `void forward(View<const T, Dev> x, View<T, Dev> y, bool train)`");
  static_assert(has_backward<type, T, Dev>::value,
                "dtn layer contract: the layer type needs `void backward(View<const T, Dev> x, View<const T, Dev> y, "
                "View<const T, Dev> dy, View<T, Dev> dx, bool param_grads)`");
  static_assert(std::is_default_constructible<type>::value, "dtn layer contract: the layer type must be default constructible");
};

}  // namespace detail
}  // namespace dtn
