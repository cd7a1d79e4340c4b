#pragma once
// Convolution passes through cuDNN's graph (backend) API: one operation graph per pass
// (CONVOLUTION_FORWARD, _BACKWARD_DATA or _BACKWARD_FILTER), the engine configurations cuDNN's
// heuristics rank for it (mode A), each finalized into an execution plan. The legacy API that
// ConvPlan otherwise uses reaches a fixed set of eight algorithms; the graph API also reaches the
// engines written for newer GPUs. On an H200 (2026-12-04) PyTorch, which uses this API, ran f.3's
// TF32 forward at batch 128 in 0.049 ms a call where the legacy API's best took 0.12-0.18 ms; through
// this file dtn's took 0.040 ms (benchmarks/RESULTS.md).
//
// Used by autotuning only (dtn::cuda::set_conv_autotune): the candidates are timed on the op's
// own buffers beside the legacy algorithm and the GEMM engine, and the fastest is kept. Which
// engines may run follows the modes: in exact FP32 none whose numerical notes say tensor cores,
// down-converted inputs or reduced-precision reduction; non-deterministic ones only with
// set_conv_deterministic(false); none compiled at run time. Nothing here throws for a graph cuDNN
// cannot run: the candidates are then empty and `why` says which call refused it.
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../backend.hpp"
#include "check.cuh"

namespace dtn {
namespace cuda {
namespace detail {

enum class ConvPass { fwd, bwd_data, bwd_filter };

// cuDNN 9 marks the handle attributes of operation graphs and execution plans deprecated, but
// every 9.x release still reads them when given; set by value so that the build stays free of
// deprecation warnings.
constexpr auto kAttrOpGraphHandle = static_cast<cudnnBackendAttributeName_t>(800);  // CUDNN_ATTR_OPERATIONGRAPH_HANDLE
constexpr auto kAttrPlanHandle = static_cast<cudnnBackendAttributeName_t>(400);     // CUDNN_ATTR_EXECUTION_PLAN_HANDLE

// The tensors' unique ids in every graph: x (or dx), w (or dw), y (or dy).
constexpr std::int64_t kUidX = 1, kUidW = 2, kUidY = 3;
// The byte alignment every graph declares for its tensors; execution checks the pointers.
constexpr std::int64_t kGraphAlignment = 16;

// One backend descriptor, destroyed with its owner.
class BackendDesc {
 public:
  BackendDesc() = default;
  explicit BackendDesc(cudnnBackendDescriptorType_t type) { status_ = cudnnBackendCreateDescriptor(type, &d_); }
  ~BackendDesc() { reset(); }
  BackendDesc(BackendDesc&& o) noexcept : d_(std::exchange(o.d_, nullptr)), status_(o.status_) {}
  BackendDesc& operator=(BackendDesc&& o) noexcept {
    if (this != &o) {
      reset();
      d_ = std::exchange(o.d_, nullptr);
      status_ = o.status_;
    }
    return *this;
  }
  BackendDesc(const BackendDesc&) = delete;
  BackendDesc& operator=(const BackendDesc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  cudnnBackendDescriptor_t* out() { return &d_; }
  cudnnStatus_t created() const { return d_ ? CUDNN_STATUS_SUCCESS : status_; }

 private:
  void reset() noexcept {
    if (d_) (void)cudnnBackendDestroyDescriptor(d_);
    d_ = nullptr;
  }
  cudnnBackendDescriptor_t d_ = nullptr;
  cudnnStatus_t status_ = CUDNN_STATUS_NOT_INITIALIZED;
};

// An execution plan for one pass, with what the choice needs to know about it.
struct GraphConv {
  BackendDesc plan;
  std::int64_t workspace = 0;
  std::int64_t engine = -1;  // cuDNN's global engine index
  bool deterministic = true;
  bool tensor_core = false;
};

// Records the first failing step of a graph build in `why`; returns whether s succeeded.
inline bool graph_ok(cudnnStatus_t s, const char* step, std::string& why) {
  if (s == CUDNN_STATUS_SUCCESS) return true;
  if (why.empty()) why = std::string(step) + ": " + cudnnGetErrorString(s);
  return false;
}

inline BackendDesc graph_tensor(std::int64_t uid, const std::int64_t (&dims)[4], std::string& why) {
  BackendDesc t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  if (!graph_ok(t.created(), "tensor descriptor", why)) return t;
  const std::int64_t strides[4] = {dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1};
  const cudnnDataType_t type = CUDNN_DATA_FLOAT;
  const bool set = graph_ok(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type),
                            "tensor data type", why) &&
                   graph_ok(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims),
                            "tensor dimensions", why) &&
                   graph_ok(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides),
                            "tensor strides", why) &&
                   graph_ok(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid),
                            "tensor id", why) &&
                   graph_ok(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1,
                                                     &kGraphAlignment),
                            "tensor alignment", why);
  if (set) graph_ok(cudnnBackendFinalize(t.get()), "tensor finalize", why);
  return t;
}

// The descriptor type and attribute names of pass p's operation, and its beta.
struct GraphConvOp {
  cudnnBackendDescriptorType_t type;
  cudnnBackendAttributeName_t alpha, beta, conv, x, w, y;  // x: x or dx, w: w or dw, y: y or dy
  float beta_value;
};
inline GraphConvOp graph_conv_op(ConvPass p) {
  switch (p) {
    case ConvPass::fwd:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, 0.0f};
    case ConvPass::bwd_data:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, 0.0f};
    case ConvPass::bwd_filter:
    default:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, 1.0f};
  }
}

// The finalized operation graph of pass p of g, or an empty descriptor (and why) if cuDNN refuses it.
// `parts` keeps the descriptors the graph refers to alive with it.
inline BackendDesc graph_conv_op_graph(cudnnHandle_t h, const ConvGeom& g, ConvPass p, std::vector<BackendDesc>& parts,
                                       std::string& why) {
  const std::int64_t xd[4] = {g.n, g.c_in, g.h_in, g.w_in}, wd[4] = {g.c_out, g.c_in, g.kh, g.kw},
                     yd[4] = {g.n, g.c_out, g.h_out, g.w_out};
  parts.push_back(graph_tensor(kUidX, xd, why));
  parts.push_back(graph_tensor(kUidW, wd, why));
  parts.push_back(graph_tensor(kUidY, yd, why));
  if (!why.empty()) return BackendDesc();
  const cudnnBackendDescriptor_t x = parts[0].get(), w = parts[1].get(), y = parts[2].get();

  BackendDesc conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  if (!graph_ok(conv.created(), "convolution descriptor", why)) return BackendDesc();
  const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const std::int64_t dims = 2, ones[2] = {1, 1}, strides[2] = {g.stride, g.stride}, pads[2] = {g.pad, g.pad};
  const bool conv_set =
      graph_ok(cudnnBackendSetAttribute(conv.get(), CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp),
               "convolution compute type", why) &&
      graph_ok(cudnnBackendSetAttribute(conv.get(), CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1,
                                        &mode),
               "convolution mode", why) &&
      graph_ok(cudnnBackendSetAttribute(conv.get(), CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims),
               "convolution spatial dims", why) &&
      graph_ok(cudnnBackendSetAttribute(conv.get(), CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, ones),
               "convolution dilations", why) &&
      graph_ok(cudnnBackendSetAttribute(conv.get(), CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, strides),
               "convolution strides", why) &&
      graph_ok(cudnnBackendSetAttribute(conv.get(), CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pads),
               "convolution pre-paddings", why) &&
      graph_ok(cudnnBackendSetAttribute(conv.get(), CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pads),
               "convolution post-paddings", why);
  if (!conv_set || !graph_ok(cudnnBackendFinalize(conv.get()), "convolution finalize", why)) return BackendDesc();

  // The operation: y = conv(x, w); dx = conv^T(dy, w); dw += conv'(x, dy) (backward filter
  // accumulates, as Backend::conv2d_backward_filter's contract says).
  const GraphConvOp k = graph_conv_op(p);
  const float alpha = 1.0f, beta = k.beta_value;
  BackendDesc op(k.type);
  if (!graph_ok(op.created(), "operation descriptor", why)) return BackendDesc();
  const cudnnBackendDescriptor_t c = conv.get();
  const bool op_set =
      graph_ok(cudnnBackendSetAttribute(op.get(), k.alpha, CUDNN_TYPE_FLOAT, 1, &alpha), "operation alpha", why) &&
      graph_ok(cudnnBackendSetAttribute(op.get(), k.beta, CUDNN_TYPE_FLOAT, 1, &beta), "operation beta", why) &&
      graph_ok(cudnnBackendSetAttribute(op.get(), k.conv, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c), "operation conv", why) &&
      graph_ok(cudnnBackendSetAttribute(op.get(), k.x, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x), "operation x", why) &&
      graph_ok(cudnnBackendSetAttribute(op.get(), k.w, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w), "operation w", why) &&
      graph_ok(cudnnBackendSetAttribute(op.get(), k.y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y), "operation y", why);
  if (!op_set || !graph_ok(cudnnBackendFinalize(op.get()), "operation finalize", why)) return BackendDesc();

  BackendDesc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  if (!graph_ok(graph.created(), "operation graph descriptor", why)) return BackendDesc();
  const cudnnBackendDescriptor_t o = op.get();
  const bool graph_set =
      graph_ok(cudnnBackendSetAttribute(graph.get(), kAttrOpGraphHandle, CUDNN_TYPE_HANDLE, 1, &h), "graph handle", why) &&
      graph_ok(cudnnBackendSetAttribute(graph.get(), CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &o),
               "graph operations", why);
  if (!graph_set || !graph_ok(cudnnBackendFinalize(graph.get()), "graph finalize", why)) return BackendDesc();
  parts.push_back(std::move(conv));
  parts.push_back(std::move(op));
  return graph;
}

// Execution plans for pass p of g, in the order cuDNN's heuristics (mode A) rank their engine
// configurations: at most max_plans, each allowed by the math mode (tf32) and the determinism
// mode and needing at most workspace_cap bytes. Empty, with why set, when cuDNN offers none.
inline std::vector<GraphConv> graph_conv_candidates(cudnnHandle_t h, const ConvGeom& g, ConvPass p, bool tf32,
                                                    bool deterministic, std::size_t workspace_cap, std::string& why,
                                                    int max_plans = 8) {
  std::vector<GraphConv> out;
  if (max_plans <= 0) {
    why = "no graph-API plan asked for";
    return out;
  }
  std::vector<BackendDesc> parts;
  BackendDesc graph = graph_conv_op_graph(h, g, p, parts, why);
  if (!why.empty()) return out;
  const cudnnBackendDescriptor_t gr = graph.get();
  BackendDesc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  if (!graph_ok(heur.created(), "heuristics descriptor", why)) return out;
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  if (!graph_ok(cudnnBackendSetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &gr),
                "heuristics graph", why) ||
      !graph_ok(cudnnBackendSetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode),
                "heuristics mode", why) ||
      !graph_ok(cudnnBackendFinalize(heur.get()), "heuristics finalize", why))
    return out;
  std::int64_t count = 0;
  if (!graph_ok(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                         &count, nullptr),
                "heuristics result count", why))
    return out;
  if (count <= 0) {
    why = "cuDNN's heuristics offer no engine";
    return out;
  }
  std::vector<BackendDesc> cfgs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (std::int64_t i = 0; i < count; ++i) {
    cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    if (!graph_ok(cfgs.back().created(), "engine config descriptor", why)) return out;
    raw.push_back(cfgs.back().get());
  }
  std::int64_t got = 0;
  if (!graph_ok(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                         count, &got, raw.data()),
                "heuristics results", why))
    return out;
  std::string refused;  // the first refusal, should no configuration be usable
  std::int64_t over_cap = 0;  // configurations allowed but needing more workspace than the cap
  for (std::int64_t i = 0; i < got && static_cast<int>(out.size()) < max_plans; ++i) {
    const cudnnBackendDescriptor_t cfg = raw[static_cast<std::size_t>(i)];
    GraphConv c;
    BackendDesc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    std::int64_t n_engine = 0, n_notes = 0, n_behavior = 0;
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    cudnnBackendBehaviorNote_t behavior[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    if (!graph_ok(engine.created(), "engine descriptor", refused) ||
        !graph_ok(cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                           &n_engine, engine.out()),
                  "engine of a config", refused) ||
        !graph_ok(cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n_engine,
                                           &c.engine),
                  "engine index", refused) ||
        !graph_ok(cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                           CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n_notes, notes),
                  "engine notes", refused) ||
        !graph_ok(cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                           CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n_behavior, behavior),
                  "engine behaviour notes", refused))
      continue;
    // Engines compiled at run time (NVRTC) are left out: finalizing one can take seconds, and the
    // search runs on every new geometry.
    bool allowed = true;
    for (std::int64_t k = 0; k < n_behavior && k < CUDNN_BEHAVIOR_NOTE_TYPE_COUNT; ++k)
      if (behavior[k] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) allowed = false;
    for (std::int64_t k = 0; k < n_notes && k < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; ++k) {
      switch (notes[k]) {
        case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC:
          c.deterministic = false;
          allowed = allowed && !deterministic;
          break;
        case CUDNN_NUMERICAL_NOTE_TENSOR_CORE:
        case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS:
          c.tensor_core = true;
          allowed = allowed && tf32;  // FP32 data on tensor cores is TF32 math
          break;
        case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION:
          allowed = false;
          break;
        default:
          break;
      }
    }
    if (!allowed) continue;
    c.plan = BackendDesc(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    std::int64_t n_ws = 0;
    if (!graph_ok(c.plan.created(), "plan descriptor", refused) ||
        !graph_ok(cudnnBackendSetAttribute(c.plan.get(), kAttrPlanHandle, CUDNN_TYPE_HANDLE, 1, &h), "plan handle",
                  refused) ||
        !graph_ok(cudnnBackendSetAttribute(c.plan.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg),
                  "plan config", refused) ||
        !graph_ok(cudnnBackendFinalize(c.plan.get()), "plan finalize", refused) ||
        !graph_ok(cudnnBackendGetAttribute(c.plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                           &n_ws, &c.workspace),
                  "plan workspace size", refused))
      continue;
    if (c.workspace < 0 || static_cast<std::size_t>(c.workspace) > workspace_cap) {
      ++over_cap;
      continue;
    }
    out.push_back(std::move(c));
  }
  if (out.empty())
    why = !refused.empty() ? std::to_string(got) + " engine configs, none usable (first refusal: " + refused + ")"
          : over_cap > 0   ? std::to_string(got) + " engine configs: " + std::to_string(over_cap) +
                               " allowed in this math and determinism mode but over the workspace cap of " +
                               std::to_string(workspace_cap) + " bytes, the others not allowed"
                           : std::to_string(got) + " engine configs, none allowed in this math and determinism mode";
  return out;
}

inline bool graph_aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % kGraphAlignment == 0; }

// Runs plan c on (x, w, y) as its pass names them (dx for x in backward data, dw for w in backward
// filter, dy for y in both backward passes), with ws of at least c.workspace bytes.
inline cudnnStatus_t graph_conv_execute(cudnnHandle_t h, const GraphConv& c, void* ws, const float* x, const float* w,
                                        const float* y) {
  BackendDesc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  if (pack.created() != CUDNN_STATUS_SUCCESS) return pack.created();
  const std::int64_t uids[3] = {kUidX, kUidW, kUidY};
  void* ptrs[3] = {const_cast<float*>(x), const_cast<float*>(w), const_cast<float*>(y)};
  cudnnStatus_t s = cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
  if (s == CUDNN_STATUS_SUCCESS)
    s = cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs);
  if (s == CUDNN_STATUS_SUCCESS)
    s = cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
  if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(pack.get());
  if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendExecute(h, c.plan.get(), pack.get());
  return s;
}

}  // namespace detail
}  // namespace cuda
}  // namespace dtn
