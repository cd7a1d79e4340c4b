#pragma once
// Sequential<Specs...>: a network as a type. Its layers live in one flat std::tuple and every
// pass is a fold over an index_sequence (no nested recursion: compile times stay sane).
//
//   using F = dtn::Sequential<dtn::Conv2d<64, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU, ...>;
//   dtn::Net<F> f(dtn::Shape{3, 32, 32}, "f");           // float on the CPU
//   dtn::Net<F, float, dtn::Cuda> fg(dtn::Shape{3, 32, 32}, "f");
//
// backward() returns the gradient with respect to the network's input, so a gradient can cross
// networks (D's input gradient flows into g; L_CONST's flows through the frozen f into g).
// A frozen network passes gradients through but never computes or changes its parameters.
// Parameters are reachable by stable names "<net>.<layer index>.<tensor>" (e.g. "g.3.weight"),
// the names torch.nn.Sequential gives the same modules. Each layer's pass can be timed with a
// LayerHook (profile.hpp). Batch norm and the activation after it run as one fused pass
// (set_fusion).
#include <array>
#include <cstdint>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../backend/backend.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"
#include "contract.hpp"
#include "param.hpp"
#include "profile.hpp"

namespace dtn {

template <class T, class Dev, class... Specs>
class Network {
  static_assert(sizeof...(Specs) > 0, "dtn::Sequential needs at least one layer");

 public:
  static constexpr std::size_t depth = sizeof...(Specs);
  using value_type = T;
  using device = Dev;
  using Layers = std::tuple<typename detail::bind_layer<Specs, T, Dev>::type...>;

  // One named tensor of the network (a parameter or a buffer such as running statistics).
  struct Entry {
    std::string name;
    Param<T, Dev>* param;
  };

  // Builds the network for inputs of per-sample shape in_sample (e.g. {3, 32, 32}), allocates
  // and initialises every parameter from `seed` with the given scheme.
  explicit Network(Shape in_sample, std::string name = "net", InitScheme scheme = InitScheme::pytorch,
                   std::uint64_t seed = 0)
      : name_(std::move(name)), in_sample_(in_sample) {
    if (in_sample.rank() < 1) throw argument_error(name_ + ": the input sample shape is empty");
    setup(std::make_index_sequence<depth>{});
    pack();
    initialize(scheme, seed);
  }
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  const std::string& name() const { return name_; }
  const Shape& input_sample_shape() const { return in_sample_; }
  const Shape& output_sample_shape() const { return sample_shapes_[depth]; }
  const Shape& sample_shape(std::size_t i) const { return sample_shapes_[i]; }

  template <std::size_t I>
  auto& layer() {
    return std::get<I>(layers_);
  }

  // Training mode (batch statistics in batch norm) or evaluation mode (running statistics).
  void train(bool on = true) { train_ = on; }
  void eval() { train_ = false; }
  bool is_training() const { return train_; }
  // A frozen network computes input gradients but no parameter gradients.
  void freeze(bool on = true) { frozen_ = on; }
  bool frozen() const { return frozen_; }
  // Layer fusion (on by default): a layer that can run the next one inside its own passes does
  // so (batch norm with a ReLU, LeakyReLU or Tanh after it: nn/contract.hpp). The results are the
  // same bit for bit either way; fused, the pair takes one pass each way, keeps no tensor between
  // the two layers, and a LayerHook sees one pass of kind "BatchNorm2d+ReLU" under the first
  // layer's index. Takes effect at the next forward(); backward() follows that forward().
  void set_fusion(bool on) { fusion_ = on; }
  bool fusion() const { return fusion_; }

  // Runs the network on x [N, in_sample...]. x must stay alive and unchanged until backward()
  // has run (the layers read it again). Returns a view of the network's own output buffer,
  // valid until the next forward().
  View<const T, Dev> forward(View<const T, Dev> x) {
    check_input(x.shape);
    segments_.clear();
    return run_forward(x);
  }
  // Several batches in one pass: x holds them one after the other, `segments` their sizes (each
  // >= 1, summing to x's N). Layers that mix samples (batch norm in training mode: its statistics,
  // and its running statistics updated once per segment, in order) treat each segment as a batch
  // of its own, so the output is that of forward() on each batch, concatenated, and backward()
  // gives each batch's input gradient; parameter gradients are the sum over the segments, as from
  // separate passes up to the order of float additions. Fewer, larger passes: the DTN trainer runs
  // D once on all the batches of an update this way (DtnConfig::joint_batches).
  View<const T, Dev> forward(View<const T, Dev> x, const std::vector<std::int64_t>& segments) {
    check_input(x.shape);  // before the segments are compared with its N
    detail::check_batch_segments(segments, x.shape, name_ + ": forward");
    segments_ = segments;
    return run_forward(x);
  }
  // Back-propagates dy (the gradient of the loss with respect to the last forward()'s output,
  // with or without segments).
  // Parameter gradients accumulate (call zero_grad() between steps). Returns the gradient with
  // respect to the input when need_input_grad, else an empty view.
  View<const T, Dev> backward(View<const T, Dev> dy, bool need_input_grad = true) {
    if (input_.data == nullptr) throw error(name_ + ": backward() called before forward()");
    if (dy.shape != outs_[depth - 1].shape())
      throw shape_error(name_ + ": backward() expected an output gradient of shape " + outs_[depth - 1].shape().str() +
                        ", got " + dy.shape.str());
    need_input_grad_ = need_input_grad;
    backward_layers(dy, std::make_index_sequence<depth>{});
    return need_input_grad ? dy_next_ : View<const T, Dev>();  // layer 0's input gradient
  }
  View<const T, Dev> output() const { return outs_[depth - 1].view(); }

  void zero_grad() {
    if (owner_) return owner_->zero_grad();
    Memory<Dev>::memset_zero(grads_.data(), grads_.size() * sizeof(T));
  }

  // Flat arenas: all trainable parameters, their gradients (same layout), and the buffers.
  // A network that shares another's parameters (share_parameters_of) returns the owner's.
  View<T, Dev> parameters() { return owner_ ? owner_->parameters() : params_.view(); }
  View<T, Dev> gradients() { return owner_ ? owner_->gradients() : grads_.view(); }
  View<T, Dev> buffers() { return owner_ ? owner_->buffers() : buffers_.view(); }
  std::size_t num_parameters() const { return owner_ ? owner_->num_parameters() : params_.size(); }

  // Weight sharing: from now on this network computes with `owner`'s parameters and buffers
  // (batch norm's running statistics) and accumulates into `owner`'s gradients; only its
  // activation caches (and its train/eval and frozen modes) stay its own. Two such networks run
  // the same function on two batches and keep both batches' caches for backward(): the DTN
  // trainer runs g on the source and the target batch once per step and back-propagates both,
  // where one network would have to repeat a forward pass. The owner must outlive this network;
  // this network's own arenas are released. Both must be of the same type (the same layers).
  void share_parameters_of(Network& owner) {
    if (&owner == this || owner.owner_ == this)
      throw argument_error(name_ + ": share_parameters_of: a network cannot share its own parameters");
    if (owner.owner_) return share_parameters_of(*owner.owner_);
    if (owner.input_sample_shape() != in_sample_)
      throw shape_error(name_ + ": share_parameters_of " + owner.name() + ": input " + owner.input_sample_shape().str() +
                        ", expected " + in_sample_.str());
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      entries_[i].param->value = owner.entries_[i].param->value;
      entries_[i].param->grad = owner.entries_[i].param->grad;
    }
    params_ = Tensor<T, Dev>();
    grads_ = Tensor<T, Dev>();
    buffers_ = Tensor<T, Dev>();
    owner_ = &owner;
  }

  // Copies every parameter and buffer (batch norm's running statistics too) of `src`, a network
  // of the same type, on any device: a pretrained network moved into a trainer keeps its
  // evaluation-mode behaviour. Gradients, caches and modes are left as they are.
  template <class SrcDev>
  void load_state_from(Network<T, SrcDev, Specs...>& src) {
    if (owner_) return owner_->load_state_from(src);
    if (src.input_sample_shape() != in_sample_ || src.parameters().size() != params_.size() ||
        src.buffers().size() != buffers_.size())
      throw shape_error(name_ + ": cannot load the state of network " + src.name() + " (input " +
                        src.input_sample_shape().str() + ", expected " + in_sample_.str() + ")");
    copy(View<const T, SrcDev>(src.parameters()), params_.view());
    copy(View<const T, SrcDev>(src.buffers()), buffers_.view());
  }

  // Every named tensor in layer order (parameters and buffers).
  const std::vector<Entry>& entries() const { return entries_; }
  // A string that identifies the architecture: layer kinds and tensor shapes. Checkpoints record
  // it so that loading into other networks fails with a clear message.
  std::string signature() const {
    std::ostringstream os;
    os << "in" << in_sample_.str();
    std::size_t e = 0;
    for (std::size_t i = 0; i < depth; ++i) {
      os << ' ' << i << ':' << kinds_[i];
      while (e < entries_.size() && entries_[e].name.compare(0, prefix(i).size(), prefix(i)) == 0) {
        os << ',' << entries_[e].name.substr(prefix(i).size()) << entries_[e].param->shape.str();
        ++e;
      }
    }
    return os.str();
  }

 private:
  // forward() with segments_ set and x checked.
  View<const T, Dev> run_forward(View<const T, Dev> x) {
    input_ = x;
    fused_ = fusion_;
    forward_layers(std::make_index_sequence<depth>{});
    return outs_[depth - 1].view();
  }
  std::string prefix(std::size_t i) const { return name_ + "." + std::to_string(i) + "."; }

  template <std::size_t... I>
  void setup(std::index_sequence<I...>) {
    sample_shapes_[0] = in_sample_;
    (setup_one<I>(), ...);
  }
  template <std::size_t I>
  void setup_one() {
    auto& l = std::get<I>(layers_);
    using L = std::tuple_element_t<I, Layers>;
    kinds_[I] = L::kind;
    try {
      sample_shapes_[I + 1] = l.setup(sample_shapes_[I]);
    } catch (const shape_error& e) {
      throw shape_error(name_ + "." + std::to_string(I) + " (" + e.what() + ")");
    }
    l.for_each_param([&](const char* local, Param<T, Dev>& p) { entries_.push_back(Entry{prefix(I) + local, &p}); });
  }

  void pack() {
    std::size_t np = 0, nb = 0;
    for (auto& e : entries_) (e.param->trainable() ? np : nb) += e.param->shape.numel();
    params_.resize(Shape{static_cast<std::int64_t>(np)});
    grads_.resize(Shape{static_cast<std::int64_t>(np)});
    buffers_.resize(Shape{static_cast<std::int64_t>(nb)});
    std::size_t op = 0, ob = 0;
    for (auto& e : entries_) {
      Param<T, Dev>& p = *e.param;
      const std::size_t n = p.shape.numel();
      if (p.trainable()) {
        p.value = View<T, Dev>(params_.data() + op, p.shape);
        p.grad = View<T, Dev>(grads_.data() + op, p.shape);
        op += n;
      } else {
        p.value = View<T, Dev>(buffers_.data() + ob, p.shape);
        p.grad = View<T, Dev>();
        ob += n;
      }
    }
    zero_grad();
  }

  void initialize(InitScheme scheme, std::uint64_t seed) {
    Rng rng(seed);
    std::vector<T> host;
    for (auto& e : entries_) {
      Param<T, Dev>& p = *e.param;
      host.resize(p.shape.numel());
      init_values(p.role, p.fan_in, scheme, rng, host.data(), host.size());
      Copy<Dev, Cpu>::run(p.value.data, host.data(), host.size() * sizeof(T));
    }
  }

  void check_input(const Shape& x) const {
    bool ok = x.rank() == in_sample_.rank() + 1 && x[0] > 0;
    for (int i = 0; ok && i < in_sample_.rank(); ++i) ok = x[i + 1] == in_sample_[i];
    if (!ok) {
      std::string expected = "[N";
      for (int i = 0; i < in_sample_.rank(); ++i) expected += ", " + std::to_string(in_sample_[i]);
      throw shape_error(name_ + ".0 (" + kinds_[0] + "): input expected " + expected + "], got " + x.str());
    }
  }

  // Fusion (nn/contract.hpp): layer I runs layer I + 1 inside its own passes when it declares
  // fuses_with<that layer>, pairs taken from the front (a layer that is the second of a pair does
  // not start another).
  template <std::size_t I>
  static constexpr bool fused_head() {
    if constexpr (I + 1 < depth) {
      if constexpr (I > 0)
        if (fused_head<I - 1>()) return false;
      return detail::fuses<std::tuple_element_t<I, Layers>, std::tuple_element_t<I + 1, Layers>>::value;
    } else {
      return false;
    }
  }
  template <std::size_t I>
  static constexpr bool fused_tail() {
    if constexpr (I > 0)
      return fused_head<I - 1>();
    else
      return false;
  }
  // The kind a LayerHook sees for a fused pair, e.g. "BatchNorm2d+ReLU" (static storage).
  template <std::size_t I>
  static const char* fused_kind() {
    static const std::string kind =
        std::string(std::tuple_element_t<I, Layers>::kind) + "+" + std::tuple_element_t<I + 1, Layers>::kind;
    return kind.c_str();
  }

  template <std::size_t... I>
  void forward_layers(std::index_sequence<I...>) {
    (forward_one<I>(), ...);
  }
  // Runs pass(), one layer pass, between the calling thread's LayerHook's begin and end (when
  // one is installed).
  template <class Pass>
  void hooked(std::size_t layer, const char* kind, bool backward, Pass&& pass) {
    LayerHook* hook = layer_hook();
    const LayerEvent event{&name_, layer, kind, backward};
    if (hook) hook->begin(event);
    pass();
    if (hook) hook->end(event);
  }

  template <std::size_t I>
  void forward_one() {
    if constexpr (fused_tail<I>())
      if (fused_) return;  // ran inside layer I - 1
    View<const T, Dev> in = I == 0 ? input_ : outs_[I == 0 ? 0 : I - 1].view();
    using L = std::tuple_element_t<I, Layers>;
    if constexpr (detail::has_batch_segments<L>::value) std::get<I>(layers_).set_batch_segments(segments_);
    if constexpr (fused_head<I>()) {
      if (fused_) {
        // Layer I's own output is never formed: the pair writes layer I + 1's.
        outs_[I + 1].resize(batch_shape(sample_shapes_[I + 2], in.shape[0]));
        hooked(I, fused_kind<I>(), false, [&] {
          std::get<I>(layers_).forward_fused(in, outs_[I + 1].view(), train_, std::get<I + 1>(layers_));
        });
        return;
      }
    }
    outs_[I].resize(batch_shape(sample_shapes_[I + 1], in.shape[0]));
    hooked(I, kinds_[I], false, [&] { std::get<I>(layers_).forward(in, outs_[I].view(), train_); });
  }

  template <std::size_t... I>
  void backward_layers(View<const T, Dev> dy, std::index_sequence<I...>) {
    dy_next_ = dy;
    slot_ = 0;
    (backward_one<depth - 1 - I>(), ...);
  }
  // dy_next_ is the gradient at the output of the next layer to run; the layer writes its input
  // gradient into gin_[slot_], which becomes the next one's dy_next_.
  template <std::size_t I>
  void backward_one() {
    if constexpr (fused_tail<I>())
      if (fused_) return;  // runs inside layer I - 1
    View<const T, Dev> in = I == 0 ? input_ : outs_[I == 0 ? 0 : I - 1].view();
    View<T, Dev> dx;
    if (I > 0 || need_input_grad_) {
      gin_[slot_].resize(in.shape);
      dx = gin_[slot_].view();
    }
    bool fused = false;
    if constexpr (fused_head<I>()) {
      fused = fused_;
      if (fused)
        hooked(I, fused_kind<I>(), true, [&] {
          std::get<I>(layers_).backward_fused(in, outs_[I + 1].view(), dy_next_, dx, !frozen_,
                                              std::get<I + 1>(layers_));
        });
    }
    if (!fused)
      hooked(I, kinds_[I], true, [&] { std::get<I>(layers_).backward(in, outs_[I].view(), dy_next_, dx, !frozen_); });
    dy_next_ = dx;
    slot_ ^= 1;
  }

  static Shape batch_shape(const Shape& sample, std::int64_t n) {
    Shape s;
    switch (sample.rank()) {
      case 1: s = Shape{n, sample[0]}; break;
      case 2: s = Shape{n, sample[0], sample[1]}; break;
      default: s = Shape{n, sample[0], sample[1], sample[2]}; break;
    }
    return s;
  }

  std::string name_;
  Shape in_sample_;
  Layers layers_;
  std::array<Shape, depth + 1> sample_shapes_;
  std::array<const char*, depth> kinds_{};
  std::vector<Entry> entries_;
  Tensor<T, Dev> params_, grads_, buffers_;
  std::array<Tensor<T, Dev>, depth> outs_;
  // Input gradients, ping-pong: each layer writes one buffer while reading its output gradient
  // from the other one, which the layer after it wrote and nothing needs afterwards. Two buffers
  // (each grown to the largest gradient it held, then stable, as CUDA graphs need) instead of one
  // per layer: for g at batch 128, 8M floats instead of 21M.
  std::array<Tensor<T, Dev>, 2> gin_;
  View<const T, Dev> input_, dy_next_;
  std::vector<std::int64_t> segments_;  // of the last forward (empty: one batch)
  int slot_ = 0;
  Network* owner_ = nullptr;  // set by share_parameters_of
  bool train_ = true, frozen_ = false, need_input_grad_ = true;
  bool fusion_ = true, fused_ = true;  // fused_: fusion_ at the last forward()
};

template <class... Specs>
struct Sequential {
  template <class T, class Dev>
  using network = Network<T, Dev, Specs...>;
};

// The concrete network type of a spec for a value type and a device.
template <class Spec, class T = float, class Dev = Cpu>
using Net = typename Spec::template network<T, Dev>;

}  // namespace dtn
