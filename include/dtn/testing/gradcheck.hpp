#pragma once
// Numerical gradient checks (central differences in double precision), usable on any layer
// spec or loss, including a user's own.
//
// Why the default bound (1e-6 relative): with step h = 1e-6 in double, the truncation error of
// a central difference is O(h^2 |f'''|) ~ 1e-12 and the rounding error ~ eps_double |L| / h
// ~ 1e-10 |L| for the O(1) losses used here; a wrong gradient (a missing term, a transposed
// index, a wrong scale) is off by O(1) relative. 1e-6 separates the two by four orders of
// magnitude either way. Kinks (ReLU at 0, max-pool ties) are hit with probability ~1e-6 per
// coordinate on random inputs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "../backend/cpu/backend.hpp"
#include "../core/rng.hpp"
#include "../nn/sequential.hpp"

namespace dtn {
namespace testing {

struct GradCheckReport {
  double max_error = 0;  // max |analytic - numeric| / max(1, |numeric|) over the checked coordinates
  std::string worst;     // which coordinate
  int checked = 0;
  void add(double analytic, double numeric, const std::string& where) {
    const double e = std::abs(analytic - numeric) / std::max(1.0, std::abs(numeric));
    ++checked;
    // A NaN e (a NaN gradient or loss) is recorded and then kept, so that it fails every bound;
    // e >= max_error alone would skip it and report the check as passed.
    if (!std::isnan(max_error) && !(e < max_error)) {
      max_error = e;
      worst = where + ": analytic " + std::to_string(analytic) + ", numeric " + std::to_string(numeric);
    }
  }
};

// Coordinates to probe: all of them when few, else a seeded random subset of max_coords.
inline std::vector<std::size_t> probe_coords(std::size_t n, int max_coords, Rng& rng) {
  std::vector<std::size_t> idx;
  if (n <= static_cast<std::size_t>(max_coords)) {
    for (std::size_t i = 0; i < n; ++i) idx.push_back(i);
  } else {
    for (int i = 0; i < max_coords; ++i) idx.push_back(static_cast<std::size_t>(rng.below(n)));
  }
  return idx;
}

// Central differences of loss() (step h) in up to max_coords coordinates of values[0, n)
// (probe_coords), each set back after, against analytic[i]: added to rep as "<name>[i]".
template <class Loss>
void probe_central_differences(double* values, std::size_t n, const double* analytic, Loss&& loss, double h,
                               int max_coords, Rng& rng, const std::string& name, GradCheckReport& rep) {
  for (std::size_t i : probe_coords(n, max_coords, rng)) {
    const double old = values[i];
    values[i] = old + h;
    const double lp = loss();
    values[i] = old - h;
    const double lm = loss();
    values[i] = old;
    rep.add(analytic[i], (lp - lm) / (2 * h), name + "[" + std::to_string(i) + "]");
  }
}

namespace detail {
// segments: as Network::forward takes them (empty: the batch is one).
template <class NetSpec>
GradCheckReport gradcheck_network(Shape sample, int batch, const std::vector<std::int64_t>& segments, std::uint64_t seed,
                                  bool train, int max_coords, double h) {
  using NetT = Net<NetSpec, double, Cpu>;
  NetT net(sample, "layer", InitScheme::pytorch, seed);
  net.train(train);
  Rng rng(seed * 7919 + 13);
  // Batch norm gets non-trivial scale and shift.
  {
    View<double, Cpu> p = net.parameters();
    for (std::size_t i = 0; i < p.size(); ++i) p.data[i] += rng.uniform(-0.5, 0.5);
  }
  Shape xs = sample.rank() == 1 ? Shape{batch, sample[0]}
                                : (sample.rank() == 2 ? Shape{batch, sample[0], sample[1]}
                                                      : Shape{batch, sample[0], sample[1], sample[2]});
  Tensor<double, Cpu> x(xs);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(-1, 1);
  auto run = [&]() { return segments.empty() ? net.forward(x.view()) : net.forward(x.view(), segments); };
  View<const double, Cpu> y0 = run();
  Tensor<double, Cpu> r(y0.shape);
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = rng.uniform(-1, 1);

  auto loss = [&]() {
    View<const double, Cpu> y = run();
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += r[i] * y.data[i];
    return s;
  };
  loss();
  net.zero_grad();
  View<const double, Cpu> dxv = net.backward(r.view(), true);
  std::vector<double> dx(dxv.data, dxv.data + dxv.size());
  View<double, Cpu> params = net.parameters();
  View<double, Cpu> grads = net.gradients();
  std::vector<double> dp(grads.data, grads.data + grads.size());

  GradCheckReport rep;
  probe_central_differences(x.data(), x.size(), dx.data(), loss, h, max_coords, rng, "input", rep);
  probe_central_differences(params.data, params.size(), dp.data(), loss, h, max_coords, rng, "parameter", rep);
  return rep;
}
}  // namespace detail

// Checks the input gradient and every parameter gradient of the network spec NetSpec (a
// Sequential<...>) on a random batch of `batch` samples of shape `sample`, through
// L = sum(r * y) for a random r.
template <class NetSpec>
GradCheckReport gradcheck_network(Shape sample, int batch, std::uint64_t seed = 1, bool train = true,
                                  int max_coords = 150, double h = 1e-6) {
  return detail::gradcheck_network<NetSpec>(sample, batch, {}, seed, train, max_coords, h);
}
// The same on a batch of several batches one after the other (Network::forward with segments).
template <class NetSpec>
GradCheckReport gradcheck_network(Shape sample, const std::vector<std::int64_t>& segments, std::uint64_t seed = 1,
                                  bool train = true, int max_coords = 150, double h = 1e-6) {
  std::int64_t batch = 0;
  for (std::int64_t k : segments) batch += k;
  return detail::gradcheck_network<NetSpec>(sample, static_cast<int>(batch), segments, seed, train, max_coords, h);
}

// The same for one layer spec.
template <class Spec>
GradCheckReport gradcheck_layer(Shape sample, int batch, std::uint64_t seed = 1, bool train = true,
                                int max_coords = 150, double h = 1e-6) {
  return gradcheck_network<Sequential<Spec>>(sample, batch, seed, train, max_coords, h);
}

// Checks grad against central differences of f at x. f(x, grad_or_null) returns the loss and,
// when grad is not null, writes the analytic gradient.
inline GradCheckReport gradcheck_function(const std::function<double(const std::vector<double>&, std::vector<double>*)>& f,
                                          std::vector<double> x, std::uint64_t seed = 1, int max_coords = 300,
                                          double h = 1e-6) {
  // NaN until f writes it: a gradient f leaves unwritten fails the check instead of reading as 0
  std::vector<double> g(x.size(), std::numeric_limits<double>::quiet_NaN());
  f(x, &g);
  if (g.size() != x.size())
    throw error("gradcheck_function: the gradient has " + std::to_string(g.size()) + " values for " +
                std::to_string(x.size()) + " inputs");
  Rng rng(seed);
  GradCheckReport rep;
  probe_central_differences(x.data(), x.size(), g.data(), [&] { return f(x, nullptr); }, h, max_coords, rng, "x", rep);
  return rep;
}

}  // namespace testing
}  // namespace dtn
