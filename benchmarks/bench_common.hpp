#pragma once
// Shared by bench_dtn.cpp (CPU) and bench_dtn_cuda.cu (GPU): the digits networks of
// docs/dtn-spec.md, the table of their convolution layers, the FLOP count of each benchmark row
// (the same rules as benchmarks/torch_dtn.py, so GFLOP/s compare one to one), command-line
// options, timing statistics and the JSON row format read by benchmarks/compare.py.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <dtn/dtn.hpp>

#if __has_include(<dtn/train/domain_transfer.hpp>)
#include <dtn/train/domain_transfer.hpp>
#define BENCH_HAVE_TRAINER 1
#else
#define BENCH_HAVE_TRAINER 0
#endif

namespace bench {

// ---- the networks (digits, 32x32): f frozen feature extractor, g generator, D ternary critic
using FSpec = dtn::Sequential<dtn::Conv2d<64, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU,    //
                              dtn::Conv2d<128, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU,   //
                              dtn::Conv2d<256, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU,   //
                              dtn::Conv2d<128, 3, 1, 1>, dtn::MaxPool2d<4>, dtn::ReLU>;
using GSpec = dtn::Sequential<dtn::ConvTranspose2d<512, 4, 1, 0>, dtn::BatchNorm2d, dtn::ReLU,  //
                              dtn::ConvTranspose2d<256, 4, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  //
                              dtn::ConvTranspose2d<128, 4, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  //
                              dtn::ConvTranspose2d<1, 4, 2, 1>, dtn::Tanh>;
using DSpec = dtn::Sequential<dtn::Conv2d<128, 3, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  //
                              dtn::Conv2d<256, 3, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  //
                              dtn::Conv2d<512, 3, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  //
                              dtn::Conv2d<3, 4, 1, 0>>;
inline dtn::Shape f_input() { return dtn::Shape{3, 32, 32}; }
inline dtn::Shape g_input() { return dtn::Shape{128, 1, 1}; }
inline dtn::Shape d_input() { return dtn::Shape{1, 32, 32}; }

// ---- the convolution layers of f, g and D (the layers that carry the FLOPs)
struct ConvInfo {
  const char* net;  // "f", "g" or "D"
  int index;        // position in the Sequential (parameter names "<net>.<index>.weight")
  bool transposed;  // ConvTranspose2d
  int c_in, h_in, w_in, c_out, k, stride, pad, h_out, w_out;
  // Multiply-accumulates per image: a conv computes c_in*k*k of them per output element; a
  // transposed conv is counted as the GEMM of its col2im form, c_out*k*k per input element
  // (the torch_dtn.py convention: includes the few products that land in the cropped padding).
  double macs() const {
    return transposed ? double(c_in) * h_in * w_in * c_out * k * k : double(c_out) * h_out * w_out * c_in * k * k;
  }
  std::string name() const { return std::string(net) + "." + std::to_string(index); }
  // The fewest bytes a pass can read and write at batch b (float32): each operand read once, each
  // result written once. fwd reads x and w and writes y; bwd_data reads dy and w and writes dx;
  // bwd_filter reads x, dy and dw and writes dw (db is small).
  std::pair<double, double> pass_bytes(const std::string& pass, int b) const {
    const double x = double(b) * c_in * h_in * w_in, y = double(b) * c_out * h_out * w_out;
    const double w = double(c_in) * c_out * k * k;
    if (pass == "bwd_filter") return {4.0 * (x + y + w), 4.0 * w};
    return {4.0 * ((pass == "fwd" ? x : y) + w), 4.0 * (pass == "fwd" ? y : x)};
  }
};

inline const std::vector<ConvInfo>& conv_layers() {
  static const std::vector<ConvInfo> t = {
      {"f", 0, false, 3, 32, 32, 64, 3, 1, 1, 32, 32},      {"f", 3, false, 64, 16, 16, 128, 3, 1, 1, 16, 16},
      {"f", 6, false, 128, 8, 8, 256, 3, 1, 1, 8, 8},       {"f", 9, false, 256, 4, 4, 128, 3, 1, 1, 4, 4},
      {"g", 0, true, 128, 1, 1, 512, 4, 1, 0, 4, 4},        {"g", 3, true, 512, 4, 4, 256, 4, 2, 1, 8, 8},
      {"g", 6, true, 256, 8, 8, 128, 4, 2, 1, 16, 16},      {"g", 9, true, 128, 16, 16, 1, 4, 2, 1, 32, 32},
      {"D", 0, false, 1, 32, 32, 128, 3, 2, 1, 16, 16},     {"D", 3, false, 128, 16, 16, 256, 3, 2, 1, 8, 8},
      {"D", 6, false, 256, 8, 8, 512, 3, 2, 1, 4, 4},       {"D", 9, false, 512, 4, 4, 3, 4, 1, 0, 1, 1},
  };
  return t;
}

// Checks the table against the shapes the networks themselves computed, so the FLOP count can
// never silently drift from the networks benchmarked.
template <class Net>
void check_table(const Net& net, const char* which) {
  for (const ConvInfo& c : conv_layers()) {
    if (std::string(c.net) != which) continue;
    const dtn::Shape in = net.sample_shape(static_cast<std::size_t>(c.index));
    const dtn::Shape out = net.sample_shape(static_cast<std::size_t>(c.index) + 1);
    if (in != dtn::Shape{c.c_in, c.h_in, c.w_in} || out != dtn::Shape{c.c_out, c.h_out, c.w_out})
      throw dtn::shape_error("bench: layer table entry " + c.name() + " says " +
                             dtn::Shape{c.c_in, c.h_in, c.w_in}.str() + " -> " +
                             dtn::Shape{c.c_out, c.h_out, c.w_out}.str() + " but the network has " + in.str() +
                             " -> " + out.str());
  }
}

// Per-network MAC sums per image: forward, and the data-gradient MACs without the first layer
// (its input is data: no gradient wanted) and with it (input gradient wanted).
struct NetMacs {
  double fwd = 0, dgrad_inner = 0, dgrad_all = 0;
};
inline NetMacs net_macs(const char* which) {
  NetMacs m;
  bool first = true;
  for (const ConvInfo& c : conv_layers()) {
    if (std::string(c.net) != which) continue;
    m.fwd += c.macs();
    m.dgrad_all += c.macs();
    if (!first) m.dgrad_inner += c.macs();
    first = false;
  }
  return m;
}

// GFLOP per image of each benchmark row; 2 FLOP per MAC; a backward costs a weight gradient
// (= forward MACs) where weights train, and data gradients where an input gradient is needed
// (inner layers always need one when an earlier layer trains). Same rules as torch_dtn.py.
inline double gflop_per_image(const std::string& row) {
  const NetMacs f = net_macs("f"), g = net_macs("g"), d = net_macs("D");
  double macs = 0;
  if (row == "f_fwd") {
    macs = f.fwd;
  } else if (row == "g_fwd_bwd") {
    macs = g.fwd + g.fwd + g.dgrad_inner;
  } else if (row == "D_fwd_bwd") {
    macs = d.fwd + d.fwd + d.dgrad_inner;
  } else if (row == "dtn_step") {
    macs = 3 * f.fwd + f.dgrad_all                       // f(xs), f(xt), f(G(xs)) and its backward
           + 2 * (g.fwd + g.fwd + g.dgrad_inner)         // g on both domains, trained
           + 3 * (d.fwd + d.fwd + d.dgrad_inner)         // D step: three trained calls
           + 2 * (d.fwd + d.dgrad_all);                  // g step: two calls, input gradients only
  } else {
    throw dtn::argument_error("bench: unknown row " + row);
  }
  return 2.0 * macs * 1e-9;
}

inline const std::vector<std::string>& row_names() {
  static const std::vector<std::string> r = {"f_fwd", "g_fwd_bwd", "D_fwd_bwd", "dtn_step"};
  return r;
}

// ---- command line
struct Options {
  std::vector<int> threads{1, 2};
  std::vector<int> batches{64, 128};
  std::vector<std::string> rows = row_names();
  int warmup = 2;
  int reps = 7;
  int step_reps = 5;
  int gemm_n = 1024;
  bool layers = true;
  bool only_layers = false;
  bool graph = true;
  bool tf32 = false;
  bool conv_autotune = false;
  bool conv_gemm = true;   // --conv-cudnn: cuDNN's heuristic algorithms instead of the GEMM engine
  bool conv_deterministic = true;  // --conv-nondeterministic: cuDNN's first choice even if non-deterministic
  int graph_plans = 8;             // --graph-plans N: graph-API engine configurations timed per pass
  bool conv_overlap = false;       // --conv-overlap: weight gradients on a second stream (set_conv_overlap)
  int conv_workspace_mib = 0;      // --conv-workspace-mib N: set_conv_workspace_limit(N MiB); 0: no limit
  bool profile_step = false;
  bool fusion = true;  // --no-fusion: batch norm and its activation as two passes
  bool joint = false;  // --joint-batches: DtnConfig::joint_batches (g and D once per update on all batches; f per batch)
  bool winograd = true;  // --no-winograd (CPU): f's, g's and D's Winograd convolutions through im2col + GEMM
  std::string json;
};

inline std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

inline int parse_int(const std::string& flag, const std::string& v, int lo) {
  std::size_t used = 0;
  int x = 0;
  try {
    x = std::stoi(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || x < lo)
    throw dtn::argument_error("bench: " + flag + " expects integers >= " + std::to_string(lo) + ", got '" + v + "'");
  return x;
}

inline std::vector<int> parse_ints(const std::string& flag, const std::string& v, int lo) {
  std::vector<int> out;
  for (const std::string& s : split(v)) out.push_back(parse_int(flag, s, lo));
  if (out.empty()) throw dtn::argument_error("bench: " + flag + " needs at least one value");
  return out;
}

inline Options parse_options(int argc, char** argv, bool cuda) {
  Options o;
  if (cuda) {
    o.reps = 30;
    o.step_reps = 20;
    o.warmup = 3;
    o.gemm_n = 4096;  // 1024^3 is too small to keep a large GPU busy
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw dtn::argument_error("bench: " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--threads" && !cuda) o.threads = parse_ints(a, value(), 1);
    else if (a == "--batches") o.batches = parse_ints(a, value(), 1);
    else if (a == "--warmup") o.warmup = parse_int(a, value(), 0);
    else if (a == "--reps") o.reps = parse_int(a, value(), 1);
    else if (a == "--step-reps") o.step_reps = parse_int(a, value(), 1);
    else if (a == "--gemm-n") o.gemm_n = parse_int(a, value(), 16);
    else if (a == "--tf32" && cuda) o.tf32 = true;
    else if (a == "--conv-autotune" && cuda) o.conv_autotune = true;
    else if (a == "--conv-cudnn" && cuda) o.conv_gemm = false;
    else if (a == "--conv-nondeterministic" && cuda) o.conv_deterministic = false;
    else if (a == "--graph-plans" && cuda) o.graph_plans = parse_int(a, value(), 0);
    else if (a == "--conv-overlap" && cuda) o.conv_overlap = true;
    else if (a == "--conv-workspace-mib" && cuda) o.conv_workspace_mib = parse_int(a, value(), 1);
    else if (a == "--profile-step") o.profile_step = true;
    else if (a == "--no-layers") o.layers = false;
    else if (a == "--no-fusion") o.fusion = false;
    else if (a == "--joint-batches") o.joint = true;
    else if (a == "--no-winograd" && !cuda) o.winograd = false;
    else if (a == "--only-layers") o.only_layers = true;
    else if (a == "--no-graph" && cuda) o.graph = false;
    else if (a == "--json") o.json = value();
    else if (a == "--rows") {
      o.rows = split(value());
      for (const std::string& r : o.rows)
        if (std::find(row_names().begin(), row_names().end(), r) == row_names().end())
          throw dtn::argument_error("bench: --rows: unknown row '" + r + "' (known: f_fwd, g_fwd_bwd, D_fwd_bwd, dtn_step)");
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: %s [options]\n"
          "%s"
          "  --batches LIST    batch sizes (default 64,128)\n"
          "  --rows LIST       f_fwd,g_fwd_bwd,D_fwd_bwd,dtn_step (default all)\n"
          "  --warmup N        untimed runs before each row (default %d)\n"
          "  --reps N          timed runs per row (default %d); --step-reps N for dtn_step (default %d)\n"
          "  --gemm-n N        size of the sgemm reference (default %d)\n"
          "%s"
          "  --no-layers       skip the per-convolution-layer table\n"
          "  --only-layers     only the GEMM reference and the per-convolution-layer table\n"
          "  --profile-step    break a DTN step at the largest batch down layer by layer (LayerHook)\n"
          "  --no-fusion       batch norm and the activation after it as two layers (default: one fused\n"
          "                    pass, Network::set_fusion); the mode label gets a +unfused suffix\n"
          "  --joint-batches   the DTN step with DtnConfig::joint_batches: g once on both batches, D once\n"
          "                    per update on all of its batches (batch norm per batch); +joint suffix\n"
          "%s"
          "  --json PATH       write rows and metadata as JSON (read by compare.py)\n",
          argv[0], cuda ? "" : "  --threads LIST    thread counts (default 1,2)\n", o.warmup, o.reps, o.step_reps,
          o.gemm_n,
          cuda ? "  --no-graph        no CUDA-graph replay rows\n"
                 "  --tf32            allow TF32 tensor-core math (default off: exact FP32, as torch_dtn.py)\n"
                 "  --conv-autotune   run each convolution pass on whichever times fastest: cuDNN's legacy\n"
                 "                    algorithms (cudnnFind*), its graph-API plans or the GEMM engine\n"
                 "                    (dtn::cuda::set_conv_autotune); rows are then labelled tuned, tuned+graph\n"
                 "  --conv-cudnn      convolutions on cuDNN's heuristic algorithms instead of the GEMM\n"
                 "                    engine, the default (dtn::cuda::set_conv_gemm(false)); the mode label\n"
                 "                    gets a +cudnn suffix\n"
                 "  --conv-nondeterministic  cuDNN's non-deterministic algorithms allowed like the others\n"
                 "                    (dtn::cuda::set_conv_deterministic(false), as PyTorch's default); the mode\n"
                 "                    label gets a +nondet suffix\n"
                 "  --graph-plans N   with --conv-autotune: time the first N engine configurations cuDNN's\n"
                 "                    heuristics rank for each pass (default 8; 0: none); the mode label\n"
                 "                    gets a +plansN suffix unless N is 8\n"
                 "  --conv-overlap    each convolution's weight-gradient pass on a second stream beside its\n"
                 "                    input-gradient pass (dtn::cuda::set_conv_overlap); +overlap suffix\n"
                 "  --conv-workspace-mib N  at most N MiB of workspace per convolution pass and lane\n"
                 "                    (dtn::cuda::set_conv_workspace_limit; default: each engine's own cap);\n"
                 "                    +wsN suffix\n"
               : "",
          cuda ? ""
               : "  --no-winograd     3x3 stride-1 and 4x4 and 3x3 stride-2 convolutions through im2col + GEMM\n"
                 "                    instead of Winograd F(2x2, 3x3) and F(2x2, 2x2) per parity\n"
                 "                    (dtn::cpu::winograd::set_enabled(false)); the mode label gets\n"
                 "                    a +im2col suffix\n");
      std::exit(0);
    } else {
      throw dtn::argument_error("bench: unknown option '" + a + "' (try --help)");
    }
  }
  return o;
}

// ---- timing and rows
struct Stats {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int reps = 0;
};

inline Stats summarize(std::vector<double> ms) {
  Stats s;
  s.reps = static_cast<int>(ms.size());
  std::sort(ms.begin(), ms.end());
  const std::size_t n = ms.size();
  s.median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  s.min_ms = ms.front();
  s.max_ms = ms.back();
  return s;
}

// Host wall-clock timing of fn() (fn must finish its work before returning; `sync` is called
// after each run, e.g. cudaDeviceSynchronize).
template <class Fn, class Sync>
Stats time_host(Fn&& fn, Sync&& sync, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  sync();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    sync();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return summarize(ms);
}

inline double round_to(double x, double q) { return std::round(x / q) * q; }
inline std::string fmt(double x, int decimals) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", decimals, x);
  return b;
}

inline nlohmann::json make_row(const std::string& name, const char* device, const std::string& mode, int batch,
                               int threads, const Stats& s, double gflop) {
  nlohmann::json r;
  r["impl"] = "dtn";
  r["name"] = name;
  r["device"] = device;
  r["mode"] = mode;
  r["batch"] = batch;
  r["threads"] = threads;
  r["median_ms"] = round_to(s.median_ms, 1e-4);
  r["min_ms"] = round_to(s.min_ms, 1e-4);
  r["max_ms"] = round_to(s.max_ms, 1e-4);
  r["reps"] = s.reps;
  r["images_per_s"] = round_to(batch * 1e3 / s.median_ms, 0.01);
  r["gflop"] = round_to(gflop, 1e-4);
  r["gflops"] = round_to(gflop * 1e3 / s.median_ms, 0.01);
  return r;
}

inline void print_row(const nlohmann::json& r) {
  std::printf("%-5s %-16s %-5s %-7s %5d %3d %11.3f %10.1f %9.2f %9.1f\n", r["impl"].get<std::string>().c_str(),
              r["name"].get<std::string>().c_str(), r["device"].get<std::string>().c_str(),
              r["mode"].get<std::string>().c_str(), r["batch"].get<int>(), r["threads"].get<int>(),
              r["median_ms"].get<double>(), r["images_per_s"].get<double>(), r["gflop"].get<double>(),
              r["gflops"].get<double>());
  std::fflush(stdout);
}

inline void print_header() {
  std::printf("%-5s %-16s %-5s %-7s %5s %3s %11s %10s %9s %9s\n", "impl", "name", "dev", "mode", "batch", "thr",
              "median ms", "images/s", "GFLOP", "GFLOP/s");
}

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const auto p = line.find(':');
      return p == std::string::npos ? line : line.substr(p + 2);
    }
  return "unknown";
}

inline std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

inline std::vector<double> loadavg() {
  std::ifstream in("/proc/loadavg");
  std::vector<double> v(3, -1.0);
  in >> v[0] >> v[1] >> v[2];
  return v;
}

inline nlohmann::json flop_meta(const std::vector<int>& batches) {
  nlohmann::json m;
  for (const std::string& r : row_names()) m["gflop_per_image"][r] = gflop_per_image(r);
  for (int b : batches) m["gflop_per_dtn_step"][std::to_string(b)] = gflop_per_image("dtn_step") * b;
  return m;
}

inline void write_json(const std::string& path, const nlohmann::json& doc) {
  if (path.empty()) return;
  std::ofstream out(path);
  if (!out) throw dtn::io_error("bench: cannot open " + path + " for writing");
  out << doc.dump(1) << '\n';
  if (!out) throw dtn::io_error("bench: writing " + path + " failed");
}

// Fills a host vector with uniform values in [lo, hi) from a fixed seed.
inline std::vector<float> uniform_host(std::size_t n, float lo, float hi, std::uint64_t seed) {
  dtn::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

template <class Dev>
dtn::Tensor<float, Dev> uniform_tensor(dtn::Shape s, float lo, float hi, std::uint64_t seed) {
  return dtn::to<Dev>(dtn::from_vector(s, uniform_host(s.numel(), lo, hi, seed)).view());
}

template <class Dev>
dtn::Tensor<float, Dev> constant_tensor(dtn::Shape s, float v) {
  return dtn::to<Dev>(dtn::from_vector(s, std::vector<float>(s.numel(), v)).view());
}

// ---- the generic parts of both benchmarks. A Timer is callable as
//   Stats timer(const std::function<void()>& fn, int warmup, int reps)
// and returns when the device work of every run has finished.
struct Where {
  const char* device;         // "cpu" or "cuda"
  int threads;                // CPU threads; 0 on the GPU
  const char* mode = "dtn";   // "dtn" (plain calls) or "graph" (CUDA-graph replay); "tuned", "tuned+graph"
                              // the same with --conv-autotune (bench_dtn_cuda)
};

inline nlohmann::json& emit(nlohmann::json& rows, nlohmann::json r) {
  print_row(r);
  rows.push_back(std::move(r));
  return rows.back();
}

// Square single-precision GEMM c = a b (n x n), timed as the row `name`, with gemm(a, b, c)
// running the product. Returns the best-run GFLOP/s (min time: least disturbed by other
// processes) and the median-run GFLOP/s.
template <class Dev, class Timer, class Gemm>
std::pair<double, double> bench_gemm(int n, Where at, Timer& timer, const Options& o, nlohmann::json& rows,
                                     const std::string& name, Gemm gemm) {
  auto a = uniform_tensor<Dev>(dtn::Shape{n, n}, -1, 1, 1);
  auto b = uniform_tensor<Dev>(dtn::Shape{n, n}, -1, 1, 2);
  dtn::Tensor<float, Dev> c(dtn::Shape{n, n});
  const Stats s = timer([&] { gemm(a.data(), b.data(), c.data()); }, o.warmup, std::max(o.reps, 5));
  const double gflop = 2.0 * n * n * double(n) * 1e-9;
  nlohmann::json r = make_row(name, at.device, "gemm", n, at.threads, s, gflop);
  r["images_per_s"] = 0;  // not an image workload
  r["gflops_best"] = round_to(gflop * 1e3 / s.min_ms, 0.01);
  emit(rows, r);
  return {gflop * 1e3 / s.min_ms, gflop * 1e3 / s.median_ms};
}
// The row gemm_N, through Backend<Dev>::gemm (on the CPU dtn's own packed GEMM where the target
// has AVX2 + FMA, else Eigen's; cuBLAS on the GPU): the reference the convolution layers are
// compared against.
template <class Dev, class Timer>
std::pair<double, double> bench_gemm(int n, Where at, Timer& timer, const Options& o, nlohmann::json& rows) {
  return bench_gemm<Dev>(n, at, timer, o, rows, "gemm_" + std::to_string(n), [n](const float* a, const float* b, float* c) {
    dtn::Backend<Dev>::gemm(false, false, n, n, n, 1.f, a, n, b, n, 0.f, c, n);
  });
}

template <class Dev>
struct Nets {
  dtn::Net<FSpec, float, Dev> f{f_input(), "f", dtn::InitScheme::pytorch, 1};
  dtn::Net<GSpec, float, Dev> g{g_input(), "g", dtn::InitScheme::pytorch, 2};
  dtn::Net<DSpec, float, Dev> d{d_input(), "D", dtn::InitScheme::pytorch, 3};
  // fusion: Options::fusion (--no-fusion), batch norm and its activation as one pass
  explicit Nets(bool fusion) {
    check_table(f, "f");
    check_table(g, "g");
    check_table(d, "D");
    f.eval();
    f.freeze();
    f.set_fusion(fusion);
    g.set_fusion(fusion);
    d.set_fusion(fusion);
  }
};

// f_fwd, g_fwd_bwd, D_fwd_bwd at one batch size.
template <class Dev, class Timer>
void bench_net_rows(int batch, Where at, Timer& timer, const Options& o, nlohmann::json& rows) {
  Nets<Dev> n(o.fusion);
  auto xs = uniform_tensor<Dev>(dtn::Shape{batch, 3, 32, 32}, -1, 1, 100);
  auto xt = uniform_tensor<Dev>(dtn::Shape{batch, 1, 32, 32}, -1, 1, 101);
  auto feats = uniform_tensor<Dev>(dtn::Shape{batch, 128, 1, 1}, 0, 1, 102);  // f outputs are post-ReLU
  auto ones_g = constant_tensor<Dev>(dtn::Shape{batch, 1, 32, 32}, 1.f);       // d(sum of outputs)
  auto ones_d = constant_tensor<Dev>(dtn::Shape{batch, 3, 1, 1}, 1.f);
  for (const std::string& name : o.rows) {
    std::function<void()> fn;
    if (name == "f_fwd") {
      fn = [&] { n.f.forward(xs.view()); };
    } else if (name == "g_fwd_bwd") {
      fn = [&] {
        n.g.zero_grad();
        n.g.forward(feats.view());
        n.g.backward(ones_g.view(), false);
      };
    } else if (name == "D_fwd_bwd") {
      fn = [&] {
        n.d.zero_grad();
        n.d.forward(xt.view());
        n.d.backward(ones_d.view(), false);
      };
    } else {
      continue;  // dtn_step is timed by the caller
    }
    emit(rows, make_row(name, at.device, at.mode, batch, at.threads, timer(fn, o.warmup, o.reps),
                        gflop_per_image(name) * batch));
  }
}

// The GEMM reference measured again right before each layer pass: on a machine shared with
// other work the load drifts, and a percentage against a GEMM timed minutes earlier means little.
// `product` is the GEMM to time (default: Backend<Dev>::gemm, dtn's own on the CPU).
template <class Dev, class Timer>
class GemmNow {
 public:
  using Product = std::function<void(int, const float*, const float*, float*)>;
  GemmNow(int n, Timer& timer, Product product = {})
      : n_(n), timer_(timer), a_(uniform_tensor<Dev>(dtn::Shape{n, n}, -1, 1, 1)),
        b_(uniform_tensor<Dev>(dtn::Shape{n, n}, -1, 1, 2)), c_(dtn::Shape{n, n}), product_(std::move(product)) {
    if (!product_)
      product_ = [](int n, const float* a, const float* b, float* c) {
        dtn::Backend<Dev>::gemm(false, false, n, n, n, 1.f, a, n, b, n, 0.f, c, n);
      };
  }
  // Best-of-5 GFLOP/s now.
  double operator()() {
    const Stats s = timer_([&] { product_(n_, a_.data(), b_.data(), c_.data()); }, 1, 5);
    return 2.0 * n_ * n_ * double(n_) * 1e-9 * 1e3 / s.min_ms;
  }

 private:
  int n_;
  Timer& timer_;
  dtn::Tensor<float, Dev> a_, b_, c_;
  Product product_;
};

// What each layer pass is compared against, measured right before it: dtn's GEMM (gemm), and
// where the caller has them, Eigen's GEMM (eigen: issue 2's conv target is stated against it) and
// the memory bandwidth (bandwidth: bytes per second, reading and writing), from which the pass's
// fewest bytes (ConvInfo::pass_bytes) give its memory time: reads / read rate + writes / write
// rate, the time its traffic takes when nothing else limits it.
struct Bandwidth {
  double read = 0, write = 0;
};
struct LayerRefs {
  std::function<double()> gemm, eigen;
  std::function<Bandwidth()> bandwidth;
};

// One convolution layer (layer I of a network) on its own: forward, backward-data and
// backward-filter, as GFLOP/s and as a percentage of the references measured just before (best
// runs of all: the least disturbed by other processes), and where the bandwidth is measured, the
// pass's memory time (its fewest bytes at that bandwidth) as a percentage of its time: near 100%,
// the pass is as fast as its memory traffic allows.
template <std::size_t I, class Dev, class Net, class Timer>
void bench_conv_layer(Net& net, const ConvInfo& c, int batch, Where at, Timer& timer, const LayerRefs& refs,
                      const Options& o, nlohmann::json& rows) {
  auto& layer = net.template layer<I>();
  const dtn::Shape xs{batch, c.c_in, c.h_in, c.w_in}, ys{batch, c.c_out, c.h_out, c.w_out};
  auto x = uniform_tensor<Dev>(xs, -1, 1, 10 + I);
  auto dy = uniform_tensor<Dev>(ys, -1, 1, 20 + I);
  dtn::Tensor<float, Dev> y(ys), dx(xs);
  const double gflop = 2.0 * c.macs() * batch * 1e-9;
  const std::pair<const char*, std::function<void()>> passes[] = {
      {"fwd", [&] { layer.forward(x.view(), y.view(), true); }},
      {"bwd_data", [&] { layer.backward(x.view(), y.view(), dy.view(), dx.view(), false); }},
      {"bwd_filter", [&] { layer.backward(x.view(), y.view(), dy.view(), dtn::View<float, Dev>(), true); }},
  };
  for (const auto& p : passes) {
    const double gemm_best = refs.gemm();
    const double eigen_best = refs.eigen ? refs.eigen() : 0.0;
    const Bandwidth bw = refs.bandwidth ? refs.bandwidth() : Bandwidth{};
    const Stats s = timer(p.second, o.warmup, o.reps);
    nlohmann::json r = make_row("layer:" + c.name() + ":" + p.first, at.device, at.mode, batch, at.threads, s, gflop);
    const double best = gflop * 1e3 / s.min_ms;
    r["gflops_best"] = round_to(best, 0.01);
    r["gemm_gflops_best"] = round_to(gemm_best, 0.01);
    r["pct_of_gemm_best"] = round_to(100.0 * best / gemm_best, 0.1);
    std::string line = "% of GEMM (" + fmt(gemm_best, 1) + ")";
    // The target (>= 60% for the forward) is against Eigen's GEMM where it is measured.
    double target_pct = r["pct_of_gemm_best"].get<double>();
    if (eigen_best > 0) {
      r["eigen_gemm_gflops_best"] = round_to(eigen_best, 0.01);
      r["pct_of_eigen_gemm_best"] = round_to(100.0 * best / eigen_best, 0.1);
      target_pct = r["pct_of_eigen_gemm_best"].get<double>();
      line += ", " + fmt(target_pct, 1) + "% of Eigen's (" + fmt(eigen_best, 1) + ")";
    }
    if (bw.read > 0 && bw.write > 0) {
      const auto bytes = c.pass_bytes(p.first, batch);
      const double mem_ms = (bytes.first / bw.read + bytes.second / bw.write) * 1e3;
      r["read_gbs"] = round_to(bw.read * 1e-9, 0.1);
      r["write_gbs"] = round_to(bw.write * 1e-9, 0.1);
      r["mem_ms"] = round_to(mem_ms, 0.0001);
      r["pct_of_mem_time"] = round_to(100.0 * mem_ms / s.min_ms, 0.1);
      // Above 100%: the pass ran faster than its bytes stream from memory, i.e. its operands were
      // served from cache (D.9's 2 MiB input at batch 64), and memory does not bind it.
      line += "; memory time " + fmt(mem_ms, 3) + " ms = " + fmt(r["pct_of_mem_time"].get<double>(), 0) + "%" +
              (mem_ms > s.min_ms ? " (in cache)" : "");
    }
    rows.push_back(r);
    const bool low = std::string(p.first) == "fwd" && target_pct < 60.0;
    std::printf("  %-5s %-10s B=%-4d thr=%d  median %9.3f ms  best %8.1f GFLOP/s = %6.1f%s%s\n", c.name().c_str(),
                p.first, batch, at.threads, s.median_ms, best, r["pct_of_gemm_best"].get<double>(), line.c_str(),
                low ? "  (forward below the 60% target)" : "");
    std::fflush(stdout);
  }
}

template <class Dev, class Net, class Timer, std::size_t... I>
void bench_net_layers(Net& net, const char* which, int batch, Where at, Timer& timer, const LayerRefs& refs,
                      const Options& o, nlohmann::json& rows, std::index_sequence<I...>) {
  auto one = [&](auto index) {
    constexpr std::size_t i = decltype(index)::value;
    for (const ConvInfo& c : conv_layers())
      if (std::string(c.net) == which && std::size_t(c.index) == i)
        bench_conv_layer<i, Dev>(net, c, batch, at, timer, refs, o, rows);
  };
  (one(std::integral_constant<std::size_t, I>{}), ...);
}

// The per-layer table of f, g and D at one batch size. refs.gemm, when not set, is dtn's GEMM
// (Backend<Dev>::gemm) on an n^3 product.
template <class Dev, class Timer>
void bench_layers(int batch, Where at, Timer& timer, const Options& o, nlohmann::json& rows, LayerRefs refs = {}) {
  std::printf("per-layer GFLOP/s at batch %d (%s, %d thread(s)); %% of a %d^3 sgemm timed just before (its GFLOP/s)\n",
              batch, at.device, at.threads, o.gemm_n);
  GemmNow<Dev, Timer> gemm_now(o.gemm_n, timer);
  if (!refs.gemm) refs.gemm = [&gemm_now] { return gemm_now(); };
  Nets<Dev> n(o.fusion);
  bench_net_layers<Dev>(n.f, "f", batch, at, timer, refs, o, rows, std::make_index_sequence<FSpec::template network<float, Dev>::depth>{});
  bench_net_layers<Dev>(n.g, "g", batch, at, timer, refs, o, rows, std::make_index_sequence<GSpec::template network<float, Dev>::depth>{});
  bench_net_layers<Dev>(n.d, "D", batch, at, timer, refs, o, rows, std::make_index_sequence<DSpec::template network<float, Dev>::depth>{});
}

#if BENCH_HAVE_TRAINER
// The DTN step through dtn::DomainTransfer, PyTorch's default initialisation like the peer.
template <class Dev>
struct Trainer {
  using Type = dtn::DomainTransfer<FSpec, GSpec, DSpec, Dev>;
  static dtn::DtnConfig config(bool fusion, bool joint) {
    dtn::DtnConfig cfg;  // alpha = beta = 15, gamma = 0, Adam 2e-4 (0.5, 0.999): the digits setting
    cfg.init = dtn::InitScheme::pytorch;
    cfg.seed = 7;
    cfg.fuse_layers = fusion;
    cfg.joint_batches = joint;
    return cfg;
  }
};

// The trainer and the two batches (uniform in [-1, 1], fixed seeds) a DTN-step row runs on.
template <class Dev>
struct StepSetup {
  typename Trainer<Dev>::Type trainer;
  dtn::Tensor<float, Dev> xs, xt;
  StepSetup(int batch, const Options& o)
      : trainer(f_input(), d_input(), Trainer<Dev>::config(o.fusion, o.joint)),
        xs(uniform_tensor<Dev>(dtn::Shape{batch, 3, 32, 32}, -1, 1, 200)),
        xt(uniform_tensor<Dev>(dtn::Shape{batch, 1, 32, 32}, -1, 1, 201)) {}
  dtn::DtnLosses step() { return trainer.step(xs.view(), xt.view()); }
};

// Times trainer.step() at one batch size; throws if a step produces a non-finite loss (the
// trainer's default policy), so a broken step cannot post a fast time. Returns the row index.
template <class Dev, class Timer>
std::size_t bench_step(int batch, Where at, Timer& timer, const Options& o, nlohmann::json& rows) {
  StepSetup<Dev> setup(batch, o);
  check_table(setup.trainer.f(), "f");
  check_table(setup.trainer.g(), "g");
  check_table(setup.trainer.d(), "D");
  dtn::DtnLosses last;
  const Stats s = timer([&] { last = setup.step(); }, o.warmup, o.step_reps);
  nlohmann::json r = make_row("dtn_step", at.device, at.mode, batch, at.threads, s, gflop_per_image("dtn_step") * batch);
  r["loss_d"] = last.d;
  r["loss_g"] = last.g;
  emit(rows, r);
  return rows.size() - 1;
}

// The DTN step at one batch size broken down layer by layer: `steps` steps (after the warm-up)
// with `hook` installed on this thread, `collect()` called after them (the GPU hook waits for
// its events there), the step's wall time around them. Prints the time per layer kind and pass,
// then the 25 longest (network, layer, pass) entries, per step. Returns the profile for the JSON
// metadata ("layer_profiles", which compare.py sets beside torch_dtn.py --profile-step's, layer
// by layer): where it ran (`at`), the batch, the step's wall time, the printed lines and every
// (network, layer, pass) with its time per step.
template <class Dev, class Hook, class Collect>
nlohmann::json profile_step(int batch, Where at, const Options& o, Hook& hook, Collect&& collect, int steps = 3) {
  StepSetup<Dev> setup(batch, o);
  for (int i = 0; i < std::max(o.warmup, 1); ++i) setup.step();
  hook.clear();
  double wall_ms = 0;
  {
    dtn::ScopedLayerHook on(hook);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) setup.step();  // reads the losses back: waits for the work
    collect();
    wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / steps;
  }
  const dtn::LayerTimes& t = hook.times();
  const double in_layers = t.total_ms() / steps;
  std::vector<std::string> lines;
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "DTN step at batch %d, mean of %d steps: %.2f ms; in layers %.2f ms (%.1f%%), outside them (losses, "
                "optimizer, copies, checks, hook overhead) %.2f ms",
                batch, steps, wall_ms, in_layers, wall_ms > 0 ? 100.0 * in_layers / wall_ms : 0.0, wall_ms - in_layers);
  lines.emplace_back(buf);
  lines.emplace_back("per layer kind and pass (ms per step, % of the step):");
  for (const auto& kv : t.by_kind()) {
    std::snprintf(buf, sizeof buf, "  %-22s %9.3f ms  %5.1f%%", kv.first.c_str(), kv.second / steps,
                  wall_ms > 0 ? 100.0 * kv.second / steps / wall_ms : 0.0);
    lines.emplace_back(buf);
  }
  lines.emplace_back("longest layer passes (ms per step, % of the time in layers):");
  const std::vector<std::string> table = t.table(steps);
  for (std::size_t i = 0; i < table.size() && i < 25; ++i) lines.push_back("  " + table[i]);
  for (const std::string& l : lines) std::printf("%s\n", l.c_str());
  std::fflush(stdout);
  nlohmann::json rows = nlohmann::json::array();
  for (const dtn::LayerTimes::Row& r : t.rows())
    rows.push_back({{"net", r.net},
                    {"layer", r.layer},
                    {"kind", r.kind},
                    {"pass", r.backward ? "bwd" : "fwd"},
                    {"ms", r.ms / steps},
                    {"calls", static_cast<double>(r.calls) / steps}});
  return {{"impl", "dtn"},        {"device", at.device},   {"threads", at.threads}, {"mode", at.mode},
          {"batch", batch},       {"steps", steps},        {"step_ms", wall_ms},    {"in_layers_ms", in_layers},
          {"lines", lines},       {"rows", rows}};
}
#endif

}  // namespace bench
