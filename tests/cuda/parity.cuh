#pragma once
// Helpers for the CPU/GPU parity tests (the ggml test-backend-ops idea): a case lists its buffers
// (how to fill each, which ones to compare) and one generic body that calls the op through
// Backend<Dev>; run_case fills identical host data (fixed seed), runs the body on both devices
// and compares every output buffer by relative L2 error ||gpu - cpu|| / ||cpu|| against the
// case's bound (bit for bit for exact and integer outputs). A NaN or Inf in a compared buffer
// fails, except in cases whose inputs are filled with special values (in_specials): there a NaN
// in the same place on both sides, or the same infinity, counts as equal, and one side only fails.
// Pure outputs start with different values on the two sides (see make_buffers), so an element
// that neither backend writes is a mismatch rather than agreement.
#include <doctest/doctest.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <dtn/cuda.cuh>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace parity {

enum class Kind { f32, i32, u8 };
enum class Fill { uniform, normal, positive, ints, bytes, specials };
enum class Check { none, rel_l2, exact };

struct Spec {
  std::string name;
  Kind kind = Kind::f32;
  std::size_t size = 0;
  Fill fill = Fill::uniform;
  double lo = -1, hi = 1;  // uniform range; for ints: [0, hi)
  Check check = Check::none;
  // A pure output (overwritten, never read by the op): it starts with different values on the
  // CPU and the GPU side (make_buffers), so elements left unwritten cannot compare equal.
  // Accumulated outputs (acc, acc_positive) are read by the op and start identical.
  bool unwritten_differs = false;
};

// Inputs.
inline Spec in(std::string name, std::size_t n, double lo = -1, double hi = 1) {
  return {std::move(name), Kind::f32, n, Fill::uniform, lo, hi, Check::none, false};
}
inline Spec in_normal(std::string name, std::size_t n, double scale = 1) {
  return {std::move(name), Kind::f32, n, Fill::normal, 0, scale, Check::none, false};
}
// Uniform in [lo, hi) with lo > 0 (variances, bias corrections).
inline Spec in_positive(std::string name, std::size_t n, double lo, double hi) {
  return {std::move(name), Kind::f32, n, Fill::positive, lo, hi, Check::none, false};
}
// Random values with some NaN, +Inf and -Inf mixed in.
inline Spec in_specials(std::string name, std::size_t n) {
  return {std::move(name), Kind::f32, n, Fill::specials, -1, 1, Check::none, false};
}
inline Spec in_ints(std::string name, std::size_t n, int upper) {
  return {std::move(name), Kind::i32, n, Fill::ints, 0, static_cast<double>(upper), Check::none, false};
}
inline Spec in_bytes(std::string name, std::size_t n) {
  return {std::move(name), Kind::u8, n, Fill::bytes, 0, 256, Check::none, false};
}
// Outputs: start with different values on the two sides (make_buffers), then compared. (The
// fill still draws random values, unused, so that the inputs generated after an output keep
// the values they had when outputs started from them.)
inline Spec out(std::string name, std::size_t n) {
  return {std::move(name), Kind::f32, n, Fill::uniform, -7, 7, Check::rel_l2, true};
}
inline Spec out_ints(std::string name, std::size_t n) {
  return {std::move(name), Kind::i32, n, Fill::ints, 0, 1000, Check::exact, true};
}
// Accumulated outputs (parameter gradients): the same random start values on both sides, compared.
inline Spec acc(std::string name, std::size_t n) {
  return {std::move(name), Kind::f32, n, Fill::uniform, -1, 1, Check::rel_l2, false};
}
// Accumulated outputs that must stay positive (variances): uniform in [lo, hi), compared.
inline Spec acc_positive(std::string name, std::size_t n, double lo, double hi) {
  return {std::move(name), Kind::f32, n, Fill::positive, lo, hi, Check::rel_l2, false};
}
// An output compared bit for bit (pure selection ops: max pooling).
inline Spec out_exact(std::string name, std::size_t n) {
  return {std::move(name), Kind::f32, n, Fill::uniform, -7, 7, Check::exact, true};
}

// The buffers of one case on one device, indexed like the case's specs.
template <class Dev>
struct Buffers {
  std::vector<dtn::Tensor<float, Dev>> f32;
  std::vector<dtn::Tensor<int, Dev>> i32;
  std::vector<dtn::Tensor<unsigned char, Dev>> u8;
  std::vector<std::size_t> slot;  // spec index -> index in its typed vector

  float* f(std::size_t k) { return f32.at(slot.at(k)).data(); }
  int* i(std::size_t k) { return i32.at(slot.at(k)).data(); }
  unsigned char* u(std::size_t k) { return u8.at(slot.at(k)).data(); }
};

struct HostData {
  std::vector<std::vector<float>> f32;
  std::vector<std::vector<int>> i32;
  std::vector<std::vector<unsigned char>> u8;
};

struct Case {
  std::string name;
  double bound = 0;  // relative L2 bound for Check::rel_l2 outputs
  std::vector<Spec> specs;
  std::function<void(Buffers<dtn::Cpu>&)> cpu;
  std::function<void(Buffers<dtn::Cuda>&)> gpu;
};

// body is a generic lambda [](auto backend, auto& b) { decltype(backend)::op(..., b.f(0), ...); }
template <class Body>
Case make_case(std::string name, double bound, std::vector<Spec> specs, Body body) {
  Case c;
  c.name = std::move(name);
  c.bound = bound;
  c.specs = std::move(specs);
  c.cpu = [body](Buffers<dtn::Cpu>& b) { body(dtn::Backend<dtn::Cpu>{}, b); };
  c.gpu = [body](Buffers<dtn::Cuda>& b) { body(dtn::Backend<dtn::Cuda>{}, b); };
  return c;
}

inline std::uint64_t seed_of(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a: a fixed seed per case name
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

inline HostData generate(const Case& c) {
  dtn::Rng rng(seed_of(c.name));
  HostData h;
  for (const Spec& s : c.specs) {
    switch (s.kind) {
      case Kind::f32: {
        std::vector<float> v(s.size);
        for (std::size_t i = 0; i < s.size; ++i) {
          double x = 0;
          switch (s.fill) {
            case Fill::normal: x = s.hi * rng.normal(); break;
            case Fill::specials: {
              const std::uint64_t r = rng.below(16);
              x = r == 0   ? std::numeric_limits<double>::quiet_NaN()
                  : r == 1 ? std::numeric_limits<double>::infinity()
                  : r == 2 ? -std::numeric_limits<double>::infinity()
                           : rng.uniform(-1, 1);
              break;
            }
            default: x = rng.uniform(s.lo, s.hi);
          }
          v[i] = static_cast<float>(x);
        }
        h.f32.push_back(std::move(v));
        break;
      }
      case Kind::i32: {
        std::vector<int> v(s.size);
        for (auto& x : v) x = static_cast<int>(rng.below(static_cast<std::uint64_t>(s.hi)));
        h.i32.push_back(std::move(v));
        break;
      }
      case Kind::u8: {
        std::vector<unsigned char> v(s.size);
        for (auto& x : v) x = static_cast<unsigned char>(rng.below(256));
        h.u8.push_back(std::move(v));
        break;
      }
    }
  }
  return h;
}

template <class T, class Dev>
dtn::Tensor<T, Dev> upload(const std::vector<T>& v) {
  dtn::Tensor<T, Dev> t(dtn::Shape{static_cast<std::int64_t>(v.size())});
  dtn::Copy<Dev, dtn::Cpu>::run(t.data(), v.data(), v.size() * sizeof(T));
  return t;
}

// The start contents of one buffer: the generated data, or for a pure output (unwritten_differs)
// a value that differs between the two sides: NaN on the CPU and 1e30 on the GPU for floats
// (an unwritten element is NaN against a finite number, a mismatch even where NaN is allowed),
// -1 and -2 for ints, 0 and 255 for bytes.
template <class T, class Dev>
dtn::Tensor<T, Dev> start_buffer(const Spec& s, const std::vector<T>& generated, T cpu_start, T gpu_start) {
  if (!s.unwritten_differs) return upload<T, Dev>(generated);
  return upload<T, Dev>(std::vector<T>(generated.size(), std::is_same<Dev, dtn::Cpu>::value ? cpu_start : gpu_start));
}

template <class Dev>
Buffers<Dev> make_buffers(const Case& c, const HostData& h) {
  Buffers<Dev> b;
  for (const Spec& s : c.specs) {
    switch (s.kind) {
      case Kind::f32:
        b.slot.push_back(b.f32.size());
        b.f32.push_back(
            start_buffer<float, Dev>(s, h.f32[b.f32.size()], std::numeric_limits<float>::quiet_NaN(), 1e30f));
        break;
      case Kind::i32:
        b.slot.push_back(b.i32.size());
        b.i32.push_back(start_buffer<int, Dev>(s, h.i32[b.i32.size()], -1, -2));
        break;
      case Kind::u8:
        b.slot.push_back(b.u8.size());
        b.u8.push_back(start_buffer<unsigned char, Dev>(s, h.u8[b.u8.size()], 0, 255));
        break;
    }
  }
  return b;
}

// Relative L2 error; +inf when the sizes differ.
// nonfinite_ok = false (the default, for buffers computed from finite inputs): any NaN or Inf
// on either side gives +inf. nonfinite_ok = true (only where the inputs were deliberately filled
// with special values): a NaN on both sides, or the same infinity on both sides, is skipped and
// any other NaN/Inf gives +inf; if no finite pair is left to compare, the result is +inf too.
inline double rel_l2(const std::vector<float>& gpu, const std::vector<float>& cpu, bool nonfinite_ok = false) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (gpu.size() != cpu.size()) return kInf;
  double num = 0, den = 0;
  std::size_t compared = 0;
  for (std::size_t i = 0; i < cpu.size(); ++i) {
    if (!std::isfinite(gpu[i]) || !std::isfinite(cpu[i])) {
      if (!nonfinite_ok) return kInf;
      const bool gn = std::isnan(gpu[i]), cn = std::isnan(cpu[i]);
      if (gn || cn) {
        if (gn != cn) return kInf;
        continue;
      }
      if (gpu[i] != cpu[i]) return kInf;  // an infinity against another value
      continue;
    }
    const double d = static_cast<double>(gpu[i]) - cpu[i];
    num += d * d;
    den += static_cast<double>(cpu[i]) * cpu[i];
    ++compared;
  }
  if (nonfinite_ok && compared == 0 && !cpu.empty()) return kInf;  // nothing finite was compared
  if (den == 0) return std::sqrt(num);  // an all-zero reference: absolute error
  return std::sqrt(num / den);
}

// Element-wise equality (operator==) of two vectors of the same size. For floating types,
// nonfinite_ok as in rel_l2: false (the default) fails on any NaN or Inf on either side; true
// (inputs deliberately filled with special values) counts a NaN on both sides, or the same
// infinity, as equal.
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b, bool nonfinite_ok = false) {
  (void)nonfinite_ok;  // only read for floating types
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if constexpr (std::is_floating_point<T>::value) {
      if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
        if (!nonfinite_ok) return false;
        if (std::isnan(a[i]) && std::isnan(b[i])) continue;
      }
    }
    if (a[i] != b[i]) return false;
  }
  return true;
}

// Whether a case fills an input with special values (in_specials): only then may its outputs
// legitimately hold NaN or Inf, and only then are they compared with nonfinite_ok.
inline bool uses_specials(const Case& c) {
  return std::any_of(c.specs.begin(), c.specs.end(), [](const Spec& s) { return s.fill == Fill::specials; });
}

// Runs one case on both devices and checks every compared buffer; returns the worst error.
inline double run_case(const Case& c) {
  INFO("parity case: ", c.name);
  const HostData h = generate(c);
  Buffers<dtn::Cpu> cb = make_buffers<dtn::Cpu>(c, h);
  Buffers<dtn::Cuda> gb = make_buffers<dtn::Cuda>(c, h);
  c.cpu(cb);
  c.gpu(gb);
  const bool nonfinite_ok = uses_specials(c);
  double worst = 0;
  for (std::size_t k = 0; k < c.specs.size(); ++k) {
    const Spec& s = c.specs[k];
    if (s.check == Check::none) continue;
    INFO("buffer: ", s.name);
    if (s.kind == Kind::f32) {
      const auto cpu = dtn::to_vector(cb.f32[cb.slot[k]]);
      const auto gpu = dtn::to_vector(gb.f32[gb.slot[k]]);
      if (s.check == Check::exact) {
        CHECK(same_bits(gpu, cpu, nonfinite_ok));
      } else {
        const double e = rel_l2(gpu, cpu, nonfinite_ok);
        INFO("relative L2 error ", e, " (bound ", c.bound, ")");
        CHECK(e <= c.bound);
        worst = std::max(worst, e);
      }
    } else if (s.kind == Kind::i32) {
      CHECK(same_bits(dtn::to_vector(gb.i32[gb.slot[k]]), dtn::to_vector(cb.i32[cb.slot[k]])));
    } else if (s.kind == Kind::u8) {
      CHECK(same_bits(dtn::to_vector(gb.u8[gb.slot[k]]), dtn::to_vector(cb.u8[cb.slot[k]])));
    } else {
      FAIL_CHECK("compared buffer of an unhandled kind");
    }
  }
  return worst;
}

// n values uniform in [lo, hi) from dtn's generator with the given seed.
inline std::vector<float> random_vector(std::size_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
  dtn::Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

// Sets one of this thread's CUDA settings (Get/Set: dtn::cuda::conv_gemm/set_conv_gemm, ...) for a
// scope and restores it after, also when a check throws.
template <class T, T (*Get)(), void (*Set)(T)>
class SettingScope {
 public:
  explicit SettingScope(T value) : was_(Get()) { Set(value); }
  ~SettingScope() { Set(was_); }
  SettingScope(const SettingScope&) = delete;
  SettingScope& operator=(const SettingScope&) = delete;

 private:
  T was_;
};
template <bool (*Get)(), void (*Set)(bool)>
using ModeScope = SettingScope<bool, Get, Set>;
using ConvGemmScope = ModeScope<dtn::cuda::conv_gemm, dtn::cuda::set_conv_gemm>;
using ConvAutotuneScope = ModeScope<dtn::cuda::conv_autotune, dtn::cuda::set_conv_autotune>;
using ConvDeterministicScope = ModeScope<dtn::cuda::conv_deterministic, dtn::cuda::set_conv_deterministic>;
using ConvOverlapScope = ModeScope<dtn::cuda::conv_overlap, dtn::cuda::set_conv_overlap>;
// This thread's convolution workspace limit (dtn::cuda::set_conv_workspace_limit) for a scope.
using WorkspaceLimitScope =
    SettingScope<std::size_t, dtn::cuda::conv_workspace_limit, dtn::cuda::set_conv_workspace_limit>;
inline bool conv_graph_forced() { return dtn::cuda::detail::conv_graph_forced(); }
inline void set_conv_graph_forced(bool on) { dtn::cuda::detail::conv_graph_forced() = on; }
// Autotuning takes cuDNN's graph-API plan wherever one builds (dtn::cuda::detail::conv_graph_forced).
using ConvGraphForcedScope = ModeScope<conv_graph_forced, set_conv_graph_forced>;

// The geometry of a square convolution (h x w input, k x k kernel) with its output size.
inline dtn::ConvGeom conv_geom(int n, int c_in, int h, int w, int c_out, int k, int stride, int pad) {
  dtn::ConvGeom g;
  g.n = n;
  g.c_in = c_in;
  g.h_in = h;
  g.w_in = w;
  g.c_out = c_out;
  g.kh = g.kw = k;
  g.stride = stride;
  g.pad = pad;
  g.h_out = dtn::ConvGeom::out_size(h, k, stride, pad);
  g.w_out = dtn::ConvGeom::out_size(w, k, stride, pad);
  return g;
}

}  // namespace parity
