#pragma once
// Per-layer timing. Every Network calls the calling thread's LayerHook, when one is installed,
// just before and just after each layer's forward and backward pass; with none installed the
// cost is one thread-local pointer test per layer. A hook sees the network's name, the layer's
// index and kind and the pass, so a whole training step can be broken down layer by layer:
//
//   dtn::HostLayerProfile prof;                    // CPU: a steady clock around each pass
//   { dtn::ScopedLayerHook on(prof); trainer.step(xs, xt); }
//   for (const auto& line : prof.times().table()) std::puts(line.c_str());
//
// On the GPU, dtn::cuda::LayerProfile (backend/cuda/profile.cuh) records CUDA events instead,
// since a pass there returns before its kernels have run. Time outside the layers (losses, the
// optimizer, copies) is the step's time minus the table's total.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace dtn {

struct LayerEvent {
  const std::string* net;  // the network's name (e.g. "g")
  std::size_t layer;       // index in the network
  const char* kind;        // the layer's kind (e.g. "Conv2d")
  bool backward;           // false: forward pass
};

class LayerHook {
 public:
  virtual ~LayerHook() = default;
  virtual void begin(const LayerEvent& e) = 0;
  virtual void end(const LayerEvent& e) = 0;
};

// The calling thread's hook (null: none).
inline LayerHook*& layer_hook() {
  thread_local LayerHook* hook = nullptr;
  return hook;
}

// Installs a hook on the calling thread for the lifetime of the scope (restoring the previous one).
class ScopedLayerHook {
 public:
  explicit ScopedLayerHook(LayerHook& h) : previous_(layer_hook()) { layer_hook() = &h; }
  ~ScopedLayerHook() { layer_hook() = previous_; }
  ScopedLayerHook(const ScopedLayerHook&) = delete;
  ScopedLayerHook& operator=(const ScopedLayerHook&) = delete;

 private:
  LayerHook* previous_;
};

// Accumulated time per (network, layer, pass).
class LayerTimes {
 public:
  struct Row {
    std::string net;
    std::size_t layer = 0;
    std::string kind;
    bool backward = false;
    double ms = 0;   // total
    long calls = 0;  // passes timed
  };

  void add(const LayerEvent& e, double ms) {
    Row& r = rows_[Key{*e.net, e.layer, e.backward}];
    if (r.calls == 0) {
      r.net = *e.net;
      r.layer = e.layer;
      r.kind = e.kind;
      r.backward = e.backward;
    }
    r.ms += ms;
    ++r.calls;
  }
  // Rows by total time, longest first.
  std::vector<Row> rows() const {
    std::vector<Row> out;
    for (const auto& kv : rows_) out.push_back(kv.second);
    std::stable_sort(out.begin(), out.end(), [](const Row& a, const Row& b) { return a.ms > b.ms; });
    return out;
  }
  double total_ms() const {
    double t = 0;
    for (const auto& kv : rows_) t += kv.second.ms;
    return t;
  }
  // Total time per layer kind and pass ("Conv2d fwd", "BatchNorm2d bwd", ...), longest first.
  std::vector<std::pair<std::string, double>> by_kind() const {
    std::map<std::string, double> m;
    for (const auto& kv : rows_) m[kv.second.kind + (kv.second.backward ? " bwd" : " fwd")] += kv.second.ms;
    std::vector<std::pair<std::string, double>> out(m.begin(), m.end());
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    return out;
  }
  // Printable lines: each (network, layer, pass) with its total, calls and share of the total,
  // divided by `per` (e.g. the number of steps timed, for times per step).
  std::vector<std::string> table(double per = 1) const {
    std::vector<std::string> out;
    const double total = total_ms();
    char buf[160];
    for (const Row& r : rows()) {
      std::snprintf(buf, sizeof buf, "%s.%zu %-16s %s %10.3f ms  %5.1f%%  (%ld calls)", r.net.c_str(), r.layer,
                    r.kind.c_str(), r.backward ? "bwd" : "fwd", r.ms / per, total > 0 ? 100.0 * r.ms / total : 0.0,
                    r.calls);
      out.emplace_back(buf);
    }
    return out;
  }
  bool empty() const { return rows_.empty(); }
  void clear() { rows_.clear(); }

 private:
  using Key = std::tuple<std::string, std::size_t, bool>;
  std::map<Key, Row> rows_;
};

// A hook for the CPU backend: a steady clock read around each pass (which returns only when its
// work is done). Nested passes are not expected (a layer does not run a network).
class HostLayerProfile : public LayerHook {
 public:
  void begin(const LayerEvent&) override { start_ = std::chrono::steady_clock::now(); }
  void end(const LayerEvent& e) override {
    times_.add(e, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count());
  }
  const LayerTimes& times() const { return times_; }
  void clear() { times_.clear(); }

 private:
  std::chrono::steady_clock::time_point start_{};
  LayerTimes times_;
};

}  // namespace dtn
