#pragma once
// An exponential moving average of a network's weights, for evaluating a GAN generator whose
// iterates oscillate (the role of PyTorch's torch.optim.swa_utils.AveragedModel with an EMA
// update, or of the generator average of progressive GANs).
//
//   dtn::WeightAverage<GNet> avg(trainer.g(), 0.99);     // a second network, same type
//   for (...) { trainer.step(xs, xt); avg.update(trainer.g()); }
//   trainer.transfer(x, avg.network());                   // G(x) through the averaged g
//
// After t updates with the weights w_1..w_t, the average is the bias-corrected exponential mean
//   a_t = sum_i (1 - d) d^(t-i) w_i / (1 - d^t),
// an average of the iterates alone, with no weight left on the network's initial values (the
// correction of Adam's moments): the first update copies w_1, and decay 0 keeps the last
// iterate. It is kept in the recursive form a_t = a_(t-1) + b_t (w_t - a_(t-1)) with
// b_t = (1 - d) / (1 - d^t), in float on the network's device. Every parameter and buffer is
// averaged, batch norm's running statistics included, so network() runs in evaluation mode with
// averaged statistics; it is set to evaluation mode (train(false)) at construction.
//
// Checkpoints: append_to() adds the averaged network's tensors under its own name (by default
// the source network's name + "_avg": "g_avg.3.weight", ...) and "<name>.updates" to the
// metadata, e.g. through DomainTransfer::save's extra tensors; load_from() restores them.

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../backend/backend.hpp"
#include "../core/error.hpp"
#include "../io/checkpoint.hpp"

namespace dtn {

template <class NetT>
class WeightAverage {
 public:
  using T = typename NetT::value_type;
  using Dev = typename NetT::device;

  // The average of `net`'s weights with the given decay in [0, 1); until the first update() it
  // holds a copy of net's current weights. `name` names the averaged network and its checkpoint
  // entries (default: net's name + "_avg").
  WeightAverage(NetT& net, double decay, std::string name = std::string())
      : avg_(net.input_sample_shape(), name.empty() ? net.name() + "_avg" : std::move(name)), decay_(decay) {
    if (!(decay >= 0.0 && decay < 1.0))
      throw argument_error("dtn::WeightAverage " + avg_.name() + ": the decay must be in [0, 1), got " +
                           std::to_string(decay));
    avg_.load_state_from(net);
    avg_.train(false);
  }
  WeightAverage(const WeightAverage&) = delete;
  WeightAverage& operator=(const WeightAverage&) = delete;

  // Folds net's current parameters and buffers into the average (call after each optimizer step).
  void update(NetT& net) {
    View<T, Dev> p = net.parameters(), b = net.buffers();
    if (p.size() != avg_.parameters().size() || b.size() != avg_.buffers().size())
      throw shape_error("dtn::WeightAverage " + avg_.name() + ": network " + net.name() + " has " +
                        std::to_string(p.size()) + " parameters and " + std::to_string(b.size()) +
                        " buffer values, the average " + std::to_string(avg_.parameters().size()) + " and " +
                        std::to_string(avg_.buffers().size()));
    ++updates_;
    const double w = (1.0 - decay_) / (1.0 - std::pow(decay_, static_cast<double>(updates_)));
    blend(p, avg_.parameters(), w);
    blend(b, avg_.buffers(), w);
  }

  NetT& network() { return avg_; }
  const NetT& network() const { return avg_; }
  double decay() const { return decay_; }
  std::int64_t updates() const { return updates_; }

  // Checkpoint entries: the averaged network's tensors and "<name>.updates".
  void append_to(std::vector<io::TensorRecord>& records, std::map<std::string, std::string>& meta) {
    io::append_network(records, avg_);
    meta[avg_.name() + ".updates"] = std::to_string(updates_);
  }
  // Restores what append_to() wrote into a checkpoint (the update count and the averaged
  // weights); the decay stays this object's. Throws io_error naming what is missing or malformed.
  void load_from(const io::SafetensorsFile& file) {
    const std::string key = avg_.name() + ".updates";
    if (!file.metadata.count(key))
      throw io_error("checkpoint " + file.source + ": no weight average \"" + avg_.name() + "\" (metadata has no " +
                     key + ")");
    const std::int64_t n = io::metadata_count(file, key);
    io::load_network(file, avg_);
    updates_ = n;
  }

 private:
  // dst = dst + w (src - dst), as (1 - w) dst + w src; w = 1 copies.
  static void blend(View<T, Dev> src, View<T, Dev> dst, double w) {
    if (src.size() == 0) return;
    if (w >= 1.0) {
      copy(View<const T, Dev>(src), dst);
      return;
    }
    Backend<Dev>::scale(dst.size(), static_cast<T>(1.0 - w), dst.data);
    Backend<Dev>::axpy(dst.size(), static_cast<T>(w), src.data, dst.data);
  }

  NetT avg_;
  double decay_;
  std::int64_t updates_ = 0;
};

}  // namespace dtn
