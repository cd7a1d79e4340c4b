#pragma once
// Convolution on cuDNN's legacy API (cudnnConvolutionForward / BackwardData / BackwardFilter).
//
// One ConvPlan per geometry, math mode and search mode, cached per thread (like the cuDNN handle
// it is used with): the four descriptors, and for each direction the algorithm, its math type
// and workspace size, chosen once on first use. By default the choice uses cuDNN's heuristics
// (cudnnGet*Algorithm_v7) rather than cudnnFind*: no benchmarking noise, so the same algorithm
// is chosen on every run (reproducible training), and no synchronisation, so even a first call
// may be captured into a CUDA graph, provided the handles exist and the workspace is large enough
// (else a clear cuda_error: run the work once eagerly first, as GraphStep does). With dtn::cuda::set_conv_autotune(true) the
// candidates are ranked by cudnnFind* instead, which times them (outside graph capture only:
// it synchronises and allocates). Among the ranked candidates the first one that is
// deterministic, is allowed in the math mode (no tensor-op/TF32 math unless TF32 is on) and fits
// the workspace cap is taken; a non-deterministic one only if none is, or at once when
// dtn::cuda::set_conv_deterministic(false). The workspace comes from the context and only grows.
//
// conv2d_backward_filter accumulates into dw (beta = 1) and db, as the contract says.
//
// Dense convolutions (conv_is_dense: one output pixel, the kernel over the whole input: g's first
// layer as a transposed convolution, D's last) skip cuDNN and run as one cuBLAS GEMM, as on the
// CPU: the 2026-11-26 H100 run measured cuDNN's heuristic choice for g.0's forward at 1.13 ms for
// 0.27 GFLOP and D.9's at 0.29 ms for 6 MFLOP, where the same products are single small GEMMs.
// (Not yet measured on a GPU.)
//
// Each pass can also run on the GEMM engine of conv_gemm.cuh (im2col / gather kernels and one
// cuBLAS SGEMM per image chunk): always with dtn::cuda::set_conv_gemm(true), the default (where
// the shape fits its 32-bit indices), and when autotuning as one more candidate, timed on the
// op's own buffers against cuDNN's best and taken if faster. Autotuning also times the plans of
// cuDNN's graph API (conv_graph.cuh), which reach engines the legacy API does not. The choices
// are listed by dtn::cuda::conv_choices().
#include <cudnn.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../../core/error.hpp"
#include "../../core/tensor.hpp"
#include "../backend.hpp"
#include "batchnorm.cuh"
#include "check.cuh"
#include "context.cuh"
#include "conv_gemm.cuh"
#include "conv_graph.cuh"
#include "elementwise.cuh"
#include "gemm.cuh"
#include "memory.cuh"

namespace dtn {
namespace cuda {
namespace detail {

constexpr std::size_t kConvWorkspaceCap = std::size_t(1) << 30;  // 1 GiB per convolution call
// For the graph API's plans, lower: the context's workspace only grows, so one candidate timed
// with a large workspace keeps that memory for the process. Uncapped, autotuning the DTN step
// at batch 128 in FP32 left a peak of 1613 MiB on an H200 (643 MiB without the graph API).
constexpr std::size_t kGraphWorkspaceCap = std::size_t(256) << 20;
// Under a set_conv_workspace_limit, each cap is the smaller of the two (std::min).

inline std::string conv_geom_str(const ConvGeom& g) {
  return "x [" + std::to_string(g.n) + ", " + std::to_string(g.c_in) + ", " + std::to_string(g.h_in) + ", " +
         std::to_string(g.w_in) + "], w [" + std::to_string(g.c_out) + ", " + std::to_string(g.c_in) + ", " +
         std::to_string(g.kh) + ", " + std::to_string(g.kw) + "], stride " + std::to_string(g.stride) + ", pad " +
         std::to_string(g.pad) + ", y [" + std::to_string(g.n) + ", " + std::to_string(g.c_out) + ", " +
         std::to_string(g.h_out) + ", " + std::to_string(g.w_out) + "]";
}

// Exact FP32: no tensor-core math. TF32 allowed: tensor-core math, but never
// CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, which lets cuDNN convert FP32 data down to FP16/BF16
// (coarser than the TF32 that PyTorch's allow_tf32 rows use).
inline bool math_allowed(cudnnMathType_t m, bool tf32) {
  if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;
  return tf32 || m != CUDNN_TENSOR_OP_MATH;
}

enum class ConvEngine { cudnn, gemm, graph };

// One pass's engine: cuDNN's legacy algorithm, the GEMM engine or a graph-API plan, with the
// times (ms, -1 where not measured) behind the choice and, when the graph API was not taken, why
// (empty when it was timed and lost), for conv_choices().
struct EngineChoice {
  ConvEngine engine = ConvEngine::cudnn;
  float ms[3] = {-1, -1, -1};  // {cuDNN, GEMM, graph}
  std::unique_ptr<GraphConv> graph;
  std::string graph_note;
};

// Per thread, for tests: when autotuning, take the fastest plan of cuDNN's graph API wherever it
// builds one, whatever the other engines time (so that its execution path is checked against the
// CPU whether or not it wins on the GPU at hand). Part of a plan's key.
inline bool& conv_graph_forced() {
  thread_local bool forced = false;
  return forced;
}

// Per thread: how many of the engine configurations cuDNN's heuristics rank first autotuning
// builds and times per pass (graph_conv_candidates). Read when a plan is tuned.
inline int& conv_graph_max_plans() {
  thread_local int n = 8;
  return n;
}

// Milliseconds of run() on stream s: one untimed run (workspace sized, cuBLAS ready), then the
// best of three runs timed with events. Synchronises: outside graph capture only.
template <class Run>
float time_on_stream(cudaStream_t s, Run&& run) {
  const Event a, b;
  run();
  float best = -1;
  for (int i = 0; i < 3; ++i) {
    const float t = elapsed_ms(s, a, b, run);
    if (best < 0 || t < best) best = t;
  }
  return best;
}

// time_on_stream(s, run) for one autotuning candidate, or -1 if its run failed with the stream
// intact (no memory for its workspace, a cuBLAS or cuDNN status), so that the candidate is passed
// over rather than failing an op another engine can run. A fault that poisons the context (an
// illegal address in a kernel) is sticky, and every later call would fail far from its cause:
// that is rethrown.
template <class Run>
float time_candidate(cudaStream_t s, Run&& run) {
  try {
    return time_on_stream(s, run);
  } catch (const error&) {
    (void)cudaGetLastError();
    if (cudaStreamSynchronize(s) != cudaSuccess || cudaPeekAtLastError() != cudaSuccess) throw;
    return -1;
  }
}

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  bool tf32 = false;
  bool autotune = false;       // rank algorithms by cudnnFind* (set_conv_autotune)
  bool deterministic = true;   // prefer deterministic algorithms (set_conv_deterministic)
  std::size_t workspace_limit = Context::no_workspace_limit;  // set_conv_workspace_limit

  bool have_fwd = false, have_bwd_data = false, have_bwd_filter = false;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  cudnnMathType_t fwd_math{}, bwd_data_math{}, bwd_filter_math{};
  std::size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
  bool fwd_det = true, bwd_data_det = true, bwd_filter_det = true;  // the chosen algorithm's determinism
  // Per direction: cuDNN's legacy algorithm above, or the engine autotuning timed faster.
  EngineChoice fwd_choice, bwd_data_choice, bwd_filter_choice;
  bool force_graph = false;  // conv_graph_forced() when the plan was made

  ConvGeom geom;

  ConvPlan(const ConvGeom& g, bool use_tf32, bool use_autotune, bool prefer_deterministic, bool graph_forced = false,
           std::size_t ws_limit = Context::no_workspace_limit)
      : tf32(use_tf32),
        autotune(use_autotune),
        deterministic(prefer_deterministic),
        workspace_limit(ws_limit),
        force_graph(graph_forced),
        geom(g) {
    try {
      DTN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
      DTN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
      DTN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
      DTN_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
      DTN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, g.n, g.c_in, g.h_in, g.w_in));
      DTN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, g.c_out, g.c_in, g.kh, g.kw));
      DTN_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, g.pad, g.pad, g.stride, g.stride, 1, 1,
                                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
      int n = 0, c = 0, h = 0, wd = 0;
      DTN_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv, x, w, &n, &c, &h, &wd));
      if (n != g.n || c != g.c_out || h != g.h_out || wd != g.w_out)
        throw shape_error("dtn::Backend<Cuda> convolution: output size " + std::to_string(h) + "x" +
                          std::to_string(wd) + " does not match the geometry " + conv_geom_str(g));
      DTN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, g.n, g.c_out, g.h_out, g.w_out));
      // Exact mode: FMA math only. TF32 mode: default math (cuDNN may use TF32 tensor cores).
      DTN_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, use_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    } catch (...) {
      destroy();
      throw;
    }
  }
  ~ConvPlan() { destroy(); }
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;

  // Execution math type: FMA in exact mode, the candidate's own in TF32 mode.
  cudnnMathType_t exec_math(cudnnMathType_t candidate) const { return tf32 ? candidate : CUDNN_FMA_MATH; }

  // Whether this choice may time the algorithms: autotuning, and not inside a graph capture.
  bool timed(cudaStream_t s) const { return autotune && !capturing(s); }

  // One direction's choice. The candidates, best first, come from find (cudnnFind*, timed) when
  // timed(s), else from heuristic (cudnnGet*_v7); both are called as (requested, &returned,
  // perf). The first that is deterministic, allowed in the math mode and whose workspace
  // (ws_size(algo, &bytes)) fits the cap (kConvWorkspaceCap, or the plan's lower limit) is
  // taken; a non-deterministic one only if none is (or in the first pass already, when
  // deterministic is false).
  // Returns whether one was found, and sets algo, math, ws, ms and det to it.
  template <class Perf, class Find, class Heuristic, class WsSize, class Algo>
  bool choose(int max_count, cudaStream_t s, Find&& find, Heuristic&& heuristic, WsSize&& ws_size, Algo& algo,
              cudnnMathType_t& math, std::size_t& ws, float& ms, bool& det) {
    // Rank from the mode's math type, not whatever the last candidate tried left on conv.
    DTN_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    std::vector<Perf> perf(static_cast<std::size_t>(max_count > 0 ? max_count : 1));
    int count = 0;
    if (timed(s))
      DTN_CUDNN_CHECK(find(static_cast<int>(perf.size()), &count, perf.data()));
    else
      DTN_CUDNN_CHECK(heuristic(static_cast<int>(perf.size()), &count, perf.data()));
    for (int pass = 0; pass < 2; ++pass)
      for (int i = 0; i < count; ++i) {
        const Perf& p = perf[static_cast<std::size_t>(i)];
        if (p.status != CUDNN_STATUS_SUCCESS || !math_allowed(p.mathType, tf32)) continue;
        if (pass == 0 && deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
        std::size_t bytes = 0;
        DTN_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, exec_math(p.mathType)));
        if (ws_size(p.algo, &bytes) != CUDNN_STATUS_SUCCESS || bytes > std::min(kConvWorkspaceCap, workspace_limit))
          continue;
        algo = p.algo;
        math = exec_math(p.mathType);
        ws = bytes;
        ms = timed(s) ? p.time : -1.0f;
        det = p.determinism == CUDNN_DETERMINISTIC;
        return true;
      }
    return false;
  }

  // When autotuning (outside capture) and the GEMM engine takes g: time run_gemm() and take the
  // GEMM engine for this direction if it beats the cuDNN algorithm just chosen. Where the choice
  // cannot be timed (a plan first needed inside a graph capture), the untimed default stands:
  // the GEMM engine if gemm_default (set_conv_gemm, on by default), as without autotuning.
  // A timing run that fails with the stream intact (out of memory, a cuBLAS error) leaves cuDNN
  // in place rather than failing an op cuDNN can run; a device fault is rethrown.
  template <class Run>
  void consider_gemm(cudaStream_t s, const ConvGeom& g, bool gemm_default, EngineChoice& c, Run&& run_gemm) {
    if (!conv_gemm_supported(g, conv_gemm_workspace_cap(workspace_limit))) return;
    if (!timed(s)) {
      if (gemm_default) c.engine = ConvEngine::gemm;
      return;
    }
    float* ms = c.ms;
    ms[1] = time_candidate(s, run_gemm);
    if (ms[1] >= 0 && (ms[0] < 0 || ms[1] < ms[0])) c.engine = ConvEngine::gemm;
  }

  // When autotuning (outside capture): build the execution plans cuDNN's graph API ranks for
  // pass p (conv_graph.cuh), time each with run(plan), and take the fastest for this direction
  // if it beats the engine chosen so far (always, when force_graph). A plan whose run fails with
  // the stream intact is passed over; a device fault is rethrown.
  template <class Run>
  void consider_graph(cudnnHandle_t h, cudaStream_t s, const ConvGeom& g, ConvPass p, EngineChoice& c, Run&& run) {
    if (!timed(s)) return;
    float* ms = c.ms;
    std::vector<GraphConv> cands =
        graph_conv_candidates(h, g, p, tf32, deterministic, std::min(kGraphWorkspaceCap, workspace_limit),
                              c.graph_note, conv_graph_max_plans());
    int best = -1;
    for (std::size_t i = 0; i < cands.size(); ++i) {
      const float t = time_candidate(s, [&] { run(cands[i]); });
      if (t < 0) continue;
      if (best < 0 || t < ms[2]) {
        best = static_cast<int>(i);
        ms[2] = t;
      }
    }
    if (best < 0) {
      if (c.graph_note.empty()) c.graph_note = "no graph-API plan ran";
      return;
    }
    const float current = c.engine == ConvEngine::gemm ? ms[1] : ms[0];
    if (force_graph || current < 0 || ms[2] < current) {
      c.engine = ConvEngine::graph;
      c.graph = std::make_unique<GraphConv>(std::move(cands[static_cast<std::size_t>(best)]));
    }
  }

  void choose_forward(cudnnHandle_t h, cudaStream_t s, const ConvGeom& g) {
    int max_count = 0;
    DTN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count));
    using Perf = cudnnConvolutionFwdAlgoPerf_t;
    have_fwd = choose<Perf>(
        max_count, s,
        [&](int n, int* c, Perf* p) { return cudnnFindConvolutionForwardAlgorithm(h, x, w, conv, y, n, c, p); },
        [&](int n, int* c, Perf* p) { return cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, conv, y, n, c, p); },
        [&](cudnnConvolutionFwdAlgo_t a, std::size_t* b) {
          return cudnnGetConvolutionForwardWorkspaceSize(h, x, w, conv, y, a, b);
        },
        fwd, fwd_math, fwd_ws, fwd_choice.ms[0], fwd_det);
    if (!have_fwd)
      throw cuda_error("dtn::Backend<Cuda>::conv2d_forward: cuDNN offers no usable algorithm for " + conv_geom_str(g) +
                       limit_note());
  }

  void choose_backward_data(cudnnHandle_t h, cudaStream_t s, const ConvGeom& g) {
    int max_count = 0;
    DTN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_count));
    using Perf = cudnnConvolutionBwdDataAlgoPerf_t;
    have_bwd_data = choose<Perf>(
        max_count, s,
        [&](int n, int* c, Perf* p) { return cudnnFindConvolutionBackwardDataAlgorithm(h, w, y, conv, x, n, c, p); },
        [&](int n, int* c, Perf* p) { return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, y, conv, x, n, c, p); },
        [&](cudnnConvolutionBwdDataAlgo_t a, std::size_t* b) {
          return cudnnGetConvolutionBackwardDataWorkspaceSize(h, w, y, conv, x, a, b);
        },
        bwd_data, bwd_data_math, bwd_data_ws, bwd_data_choice.ms[0], bwd_data_det);
    if (!have_bwd_data)
      throw cuda_error("dtn::Backend<Cuda>::conv2d_backward_data: cuDNN offers no usable algorithm for " +
                       conv_geom_str(g) + limit_note());
  }

  void choose_backward_filter(cudnnHandle_t h, cudaStream_t s, const ConvGeom& g) {
    int max_count = 0;
    DTN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max_count));
    using Perf = cudnnConvolutionBwdFilterAlgoPerf_t;
    have_bwd_filter = choose<Perf>(
        max_count, s,
        [&](int n, int* c, Perf* p) { return cudnnFindConvolutionBackwardFilterAlgorithm(h, x, y, conv, w, n, c, p); },
        [&](int n, int* c, Perf* p) {
          return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, y, conv, w, n, c, p);
        },
        [&](cudnnConvolutionBwdFilterAlgo_t a, std::size_t* b) {
          return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, x, y, conv, w, a, b);
        },
        bwd_filter, bwd_filter_math, bwd_filter_ws, bwd_filter_choice.ms[0], bwd_filter_det);
    if (!have_bwd_filter)
      throw cuda_error("dtn::Backend<Cuda>::conv2d_backward_filter: cuDNN offers no usable algorithm for " +
                       conv_geom_str(g) + limit_note());
  }

 private:
  // What an error about a missing algorithm adds when a workspace limit may be the cause.
  std::string limit_note() const {
    return workspace_limit == Context::no_workspace_limit
               ? std::string()
               : " within the workspace limit of " + std::to_string(workspace_limit) +
                     " bytes (dtn::cuda::set_conv_workspace_limit)";
  }
  void destroy() noexcept {
    if (conv) (void)cudnnDestroyConvolutionDescriptor(conv);
    if (w) (void)cudnnDestroyFilterDescriptor(w);
    if (y) (void)cudnnDestroyTensorDescriptor(y);
    if (x) (void)cudnnDestroyTensorDescriptor(x);
    conv = nullptr;
    w = nullptr;
    x = y = nullptr;
  }
};

using ConvKey = std::tuple<int, int, int, int, int, int, int, int, int, int, int, bool, bool, bool, bool, std::size_t>;

// Before any engine runs: sizes positive, and the output size the one the input, kernel, stride
// and padding give (cuDNN's descriptors would catch a mismatch, but the dense and GEMM paths
// build none).
inline void validate_conv(const ConvGeom& g, const char* where) {
  if (g.n < 0 || g.c_in <= 0 || g.h_in <= 0 || g.w_in <= 0 || g.c_out <= 0 || g.kh <= 0 || g.kw <= 0 ||
      g.stride <= 0 || g.pad < 0 || g.h_out <= 0 || g.w_out <= 0)
    throw argument_error(std::string("dtn::Backend<Cuda>::") + where + ": invalid geometry " + conv_geom_str(g));
  if (g.h_out != ConvGeom::out_size(g.h_in, g.kh, g.stride, g.pad) ||
      g.w_out != ConvGeom::out_size(g.w_in, g.kw, g.stride, g.pad))
    throw shape_error(std::string("dtn::Backend<Cuda>::") + where + ": output size " + std::to_string(g.h_out) + "x" +
                      std::to_string(g.w_out) + " does not match the geometry " + conv_geom_str(g));
}

// The calling thread's plans by geometry and modes.
inline std::map<ConvKey, std::unique_ptr<ConvPlan>>& conv_plans() {
  thread_local std::map<ConvKey, std::unique_ptr<ConvPlan>> plans;
  return plans;
}
// The math and search modes a plan is made for, from the context (and, for tests, conv_graph_forced).
struct ConvModes {
  bool tf32, autotune, deterministic, graph_forced;
  std::size_t workspace_limit;
};
inline ConvModes conv_modes(const Context& ctx) {
  return {ctx.tf32(), ctx.conv_autotune(), ctx.conv_deterministic(), ctx.conv_autotune() && conv_graph_forced(),
          ctx.conv_workspace_limit()};
}
inline ConvKey conv_plan_key(const ConvGeom& g, const ConvModes& m) {
  return ConvKey{g.n,   g.c_in,  g.h_in,  g.w_in, g.c_out,    g.kh,            g.kw,          g.stride,
                 g.pad, g.h_out, g.w_out, m.tf32, m.autotune, m.deterministic, m.graph_forced, m.workspace_limit};
}
// The calling thread's plan for g in the current math and search modes (created on first use).
inline ConvPlan& conv_plan(const ConvGeom& g) {
  const ConvModes m = conv_modes(context());
  auto& plans = conv_plans();
  const ConvKey key = conv_plan_key(g, m);
  auto it = plans.find(key);
  if (it == plans.end())
    it = plans
             .emplace(key, std::make_unique<ConvPlan>(g, m.tf32, m.autotune, m.deterministic, m.graph_forced,
                                                      m.workspace_limit))
             .first;
  return *it->second;
}

}  // namespace detail

// One line per convolution plan of the calling thread: geometry, math and search mode (and the
// workspace limit, where one is set), and for each direction chosen so far the engine and, when
// autotuned, the times behind the choice.
inline std::vector<std::string> conv_choices() {
  std::vector<std::string> out;
  for (const auto& kv : detail::conv_plans()) {
    const detail::ConvPlan& p = *kv.second;
    std::string line = detail::conv_geom_str(p.geom) + (p.tf32 ? ", tf32" : ", fp32") +
                       (p.autotune ? ", timed" : ", heuristic") + (p.deterministic ? "" : ", any determinism") +
                       (p.workspace_limit == Context::no_workspace_limit
                            ? ""
                            : ", workspace limit " + std::to_string(p.workspace_limit));
    auto dir = [&](const char* name, bool have, int algo, bool det, const detail::EngineChoice& c) {
      if (!have) return;
      const float* ms = c.ms;
      const std::unique_ptr<detail::GraphConv>& graph = c.graph;
      line += std::string("; ") + name + " ";
      if (c.engine == detail::ConvEngine::gemm)
        line += "gemm";
      else if (c.engine == detail::ConvEngine::graph && graph)
        line += "cudnn graph engine " + std::to_string(graph->engine) + (graph->deterministic ? "" : " (non-deterministic)") +
                (graph->tensor_core ? " (tensor cores)" : "");
      else
        line += "cudnn algo " + std::to_string(algo) + (det ? "" : " (non-deterministic)");
      if (ms[0] >= 0) line += " (cudnn " + std::to_string(ms[0]) + " ms";
      if (ms[0] >= 0 && ms[1] >= 0) line += ", gemm " + std::to_string(ms[1]) + " ms";
      if (ms[0] >= 0 && ms[2] >= 0) line += ", graph " + std::to_string(ms[2]) + " ms";
      if (ms[0] >= 0 && !c.graph_note.empty()) line += ", graph API: " + c.graph_note;
      if (ms[0] >= 0) line += ")";
    };
    dir("fwd", p.have_fwd, static_cast<int>(p.fwd), p.fwd_det, p.fwd_choice);
    dir("bwd_data", p.have_bwd_data, static_cast<int>(p.bwd_data), p.bwd_data_det, p.bwd_data_choice);
    dir("bwd_filter", p.have_bwd_filter, static_cast<int>(p.bwd_filter), p.bwd_filter_det, p.bwd_filter_choice);
    out.push_back(line);
  }
  return out;
}

namespace detail {
// Runs the graph-API plan c on (x, w, y) as its pass names them, with the context's workspace.
inline void run_graph_conv(Context& ctx, const GraphConv& c, const float* x, const float* w, const float* y) {
  void* ws = c.workspace > 0 ? ctx.workspace(static_cast<std::size_t>(c.workspace)) : nullptr;
  DTN_CUDNN_CHECK(graph_conv_execute(ctx.cudnn(), c, ws, x, w, y));
}
// Whether a pass whose plan chose the graph API may run it on these pointers (its tensors were
// declared kGraphAlignment-aligned); else the pass runs cuDNN's legacy choice, made beside it.
inline bool graph_runs(const EngineChoice& c, const void* a, const void* b, const void* d) {
  return c.engine == ConvEngine::graph && c.graph && graph_aligned(a) && graph_aligned(b) && graph_aligned(d);
}
// Whether g's passes run on the GEMM engine with no plan made: the engine is on
// (set_conv_gemm, the default), takes g, and no timed choice (set_conv_autotune) is asked for.
inline bool conv_gemm_untimed(const Context& ctx, const ConvGeom& g) {
  return ctx.conv_gemm() && !ctx.conv_autotune() &&
         conv_gemm_supported(g, conv_gemm_workspace_cap(ctx.conv_workspace_limit()));
}
// Whether pass p of g runs on an engine already chosen (dense, the untimed GEMM engine, or a plan
// that has chosen this pass): running it times nothing.
inline bool conv_pass_settled(const Context& ctx, const ConvGeom& g, ConvPass p) {
  if (conv_is_dense(g) || conv_gemm_untimed(ctx, g)) return true;
  const auto& plans = conv_plans();
  const auto it = plans.find(conv_plan_key(g, conv_modes(ctx)));
  if (it == plans.end()) return false;
  const ConvPlan& plan = *it->second;
  return p == ConvPass::fwd ? plan.have_fwd : p == ConvPass::bwd_data ? plan.have_bwd_data : plan.have_bwd_filter;
}
}  // namespace detail

// Each pass below: the dense GEMM where conv_is_dense; else the GEMM engine when it is on and
// takes g and autotuning is off (no cuDNN plan is made then); else the plan's engine for the
// pass, chosen on its first use (cuDNN's legacy algorithm, then, when autotuning, the GEMM engine
// and cuDNN's graph-API plans timed beside it).
inline void conv2d_forward(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y) {
  detail::validate_conv(g, "conv2d_forward");
  if (g.n == 0) return;
  if (conv_is_dense(g)) {
    dense_conv_forward([](auto... a) { gemm(a...); }, g, x, w, y);
    if (bias) bias_add(g.n, g.c_out, 1, bias, y);
    return;
  }
  Context& ctx = context();
  detail::ConvPlan* plan = nullptr;
  if (!detail::conv_gemm_untimed(ctx, g)) {
    plan = &detail::conv_plan(g);
    if (!plan->have_fwd) {
      plan->choose_forward(ctx.cudnn(), ctx.stream(), g);
      plan->consider_gemm(ctx.stream(), g, ctx.conv_gemm(), plan->fwd_choice, [&] { conv2d_forward_gemm(g, x, w, y); });
      plan->consider_graph(ctx.cudnn(), ctx.stream(), g, detail::ConvPass::fwd, plan->fwd_choice,
                           [&](const detail::GraphConv& c) { detail::run_graph_conv(ctx, c, x, w, y); });
    }
  }
  if (plan == nullptr || plan->fwd_choice.engine == detail::ConvEngine::gemm) {
    conv2d_forward_gemm(g, x, w, y);
  } else if (detail::graph_runs(plan->fwd_choice, x, w, y)) {
    detail::run_graph_conv(ctx, *plan->fwd_choice.graph, x, w, y);
  } else {
    void* ws = plan->fwd_ws ? ctx.workspace(plan->fwd_ws) : nullptr;
    DTN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan->conv, plan->fwd_math));
    const float one = 1.0f, zero = 0.0f;
    DTN_CUDNN_CHECK(cudnnConvolutionForward(ctx.cudnn(), &one, plan->x, x, plan->w, w, plan->conv, plan->fwd, ws,
                                            plan->fwd_ws, &zero, plan->y, y));
  }
  if (bias) bias_add(g.n, g.c_out, static_cast<long>(g.h_out) * g.w_out, bias, y);
}

inline void conv2d_backward_data(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  detail::validate_conv(g, "conv2d_backward_data");
  if (g.n == 0) return;
  if (conv_is_dense(g)) {
    dense_conv_backward_data([](auto... a) { gemm(a...); }, g, dy, w, dx);
    return;
  }
  Context& ctx = context();
  detail::ConvPlan* plan = nullptr;
  if (!detail::conv_gemm_untimed(ctx, g)) {
    plan = &detail::conv_plan(g);
    if (!plan->have_bwd_data) {
      plan->choose_backward_data(ctx.cudnn(), ctx.stream(), g);
      plan->consider_gemm(ctx.stream(), g, ctx.conv_gemm(), plan->bwd_data_choice,
                          [&] { conv2d_backward_data_gemm(g, dy, w, dx); });
      plan->consider_graph(ctx.cudnn(), ctx.stream(), g, detail::ConvPass::bwd_data, plan->bwd_data_choice,
                           [&](const detail::GraphConv& c) { detail::run_graph_conv(ctx, c, dx, w, dy); });
    }
  }
  if (plan == nullptr || plan->bwd_data_choice.engine == detail::ConvEngine::gemm) {
    conv2d_backward_data_gemm(g, dy, w, dx);
  } else if (detail::graph_runs(plan->bwd_data_choice, dx, w, dy)) {
    detail::run_graph_conv(ctx, *plan->bwd_data_choice.graph, dx, w, dy);
  } else {
    void* ws = plan->bwd_data_ws ? ctx.workspace(plan->bwd_data_ws) : nullptr;
    DTN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan->conv, plan->bwd_data_math));
    const float one = 1.0f, zero = 0.0f;
    DTN_CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.cudnn(), &one, plan->w, w, plan->y, dy, plan->conv,
                                                 plan->bwd_data, ws, plan->bwd_data_ws, &zero, plan->x, dx));
  }
}

// Accumulates: dw += dL/dw, db += dL/db (db may be null).
inline void conv2d_backward_filter(const ConvGeom& g, const float* x, const float* dy, float* dw, float* db) {
  detail::validate_conv(g, "conv2d_backward_filter");
  if (g.n == 0) return;
  if (conv_is_dense(g)) {
    dense_conv_backward_filter([](auto... a) { gemm(a...); }, g, x, dy, dw);
    if (db) bias_backward(g.n, g.c_out, 1, dy, db);
    return;
  }
  Context& ctx = context();
  detail::ConvPlan* plan = nullptr;
  if (!detail::conv_gemm_untimed(ctx, g)) {
    plan = &detail::conv_plan(g);
    if (!plan->have_bwd_filter) {
      plan->choose_backward_filter(ctx.cudnn(), ctx.stream(), g);
      // Timed into a scratch filter: the pass accumulates, and dw must get exactly one gradient.
      if (!plan->timed(ctx.stream())) {
        plan->consider_gemm(ctx.stream(), g, ctx.conv_gemm(), plan->bwd_filter_choice, [] {});
      } else {
        std::optional<Tensor<float, Cuda>> scratch;
        try {
          scratch.emplace(Shape{g.c_out, static_cast<std::int64_t>(detail::conv_gemm_k(g))});
        } catch (const error&) {
          (void)cudaGetLastError();  // no scratch: cuDNN's legacy choice stays
        }
        if (scratch) {
          plan->consider_gemm(ctx.stream(), g, ctx.conv_gemm(), plan->bwd_filter_choice,
                              [&] { conv2d_backward_filter_gemm(g, x, dy, scratch->data()); });
          plan->consider_graph(ctx.cudnn(), ctx.stream(), g, detail::ConvPass::bwd_filter, plan->bwd_filter_choice,
                               [&](const detail::GraphConv& c) { detail::run_graph_conv(ctx, c, x, scratch->data(), dy); });
        }
      }
    }
  }
  if (plan == nullptr || plan->bwd_filter_choice.engine == detail::ConvEngine::gemm) {
    conv2d_backward_filter_gemm(g, x, dy, dw);
  } else if (detail::graph_runs(plan->bwd_filter_choice, x, dw, dy)) {
    detail::run_graph_conv(ctx, *plan->bwd_filter_choice.graph, x, dw, dy);
  } else {
    void* ws = plan->bwd_filter_ws ? ctx.workspace(plan->bwd_filter_ws) : nullptr;
    DTN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan->conv, plan->bwd_filter_math));
    const float one = 1.0f;
    DTN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.cudnn(), &one, plan->x, x, plan->y, dy, plan->conv,
                                                   plan->bwd_filter, ws, plan->bwd_filter_ws, &one, plan->w, dw));
  }
  if (db) bias_backward(g.n, g.c_out, static_cast<long>(g.h_out) * g.w_out, dy, db);
}

namespace detail {
// How Backend<Cuda> runs a convolution's two backward passes (conv2d_backward_passes): with
// set_conv_overlap, the weight gradient on the second lane beside the input gradient
// (side_by_side), which waits for it when its own engine (pass data_pass of g) is still to be
// timed; else one after the other, weight gradient first.
inline auto conv_backward_both(const ConvGeom& g, ConvPass data_pass) {
  return [&g, data_pass](auto& filter, auto& data) {
    Context& ctx = context();
    if (ctx.conv_overlap()) {
      side_by_side(filter, data, !conv_pass_settled(ctx, g, data_pass));
    } else {
      filter();
      data();
    }
  };
}
}  // namespace detail

}  // namespace cuda
}  // namespace dtn
