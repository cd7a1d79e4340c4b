#pragma once
// GraphStep: a whole DomainTransfer training step (D update and g update) as one CUDA graph.
// The first call runs the step eagerly (every buffer, cuDNN plan and workspace comes into being),
// the second captures it, and every call after that replays it: a step becomes one graph launch
// instead of hundreds of kernel launches, with no host round trip inside it. The non-finite
// guard runs on the device (DomainTransfer::run_deferred); the losses are read after the replay.
//
// A graph holds the device addresses of the trainer's buffers and of the thread's convolution
// workspace and reduction scratch. It is recaptured when the batch shapes change, and when a
// device buffer has grown (and so moved) since the capture began (dtn::storage_moves(): between
// steps, an evaluation on a larger batch grows the networks' buffers, one at another geometry or
// with autotuning can grow the workspace): that step runs eagerly and the next one captures
// anew, so a replay never writes to a block the cache has handed on. reset() forgets the graph
// by hand (needed only for buffers replaced by assignment, which the count does not see; the
// trainer's never are).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "../backend/cuda/check.cuh"
#include "../backend/cuda/context.cuh"
#include "domain_transfer.hpp"

namespace dtn {
namespace cuda {

// What a captured step graph is made of (counted once, at capture). forks: the nodes after which
// the graph splits into branches (more than one node depends on them): 0 for work captured on one
// stream, one per dtn::cuda::side_by_side. A fork alone does not say that work may run at once
// (side_by_side serialises its two pieces when a plan is still to be timed, and the join then
// leaves a fork behind): concurrent_kernels counts the kernel nodes that some other kernel node
// is neither before nor after, i.e. that the graph lets run beside another kernel (0 when the
// graph is one chain of kernels).
struct GraphNodeCounts {
  std::size_t total = 0, kernels = 0, memsets = 0, memcpys = 0, other = 0, forks = 0, concurrent_kernels = 0;
};

namespace detail {
// Of the nodes of a DAG (n nodes, edges from[i] -> to[i]) marked in `counted`, how many have
// another marked node that is neither their ancestor nor their descendant. Descendant sets as
// bitsets, built in reverse topological order: n^2 / 8 bytes (31 KiB for a 500-node step graph).
// Returns 0 for a graph with a cycle (a CUDA graph has none).
inline std::size_t unordered_nodes(std::size_t n, const std::vector<std::size_t>& from, const std::vector<std::size_t>& to,
                                   const std::vector<char>& counted) {
  std::vector<std::vector<std::size_t>> out(n);
  std::vector<std::size_t> indegree(n, 0);
  for (std::size_t i = 0; i < from.size(); ++i) {
    out[from[i]].push_back(to[i]);
    ++indegree[to[i]];
  }
  std::vector<std::size_t> order;
  order.reserve(n);
  for (std::size_t v = 0; v < n; ++v)
    if (indegree[v] == 0) order.push_back(v);
  for (std::size_t k = 0; k < order.size(); ++k)
    for (std::size_t w : out[order[k]])
      if (--indegree[w] == 0) order.push_back(w);
  if (order.size() != n) return 0;
  const std::size_t words = (n + 63) / 64;
  std::vector<std::uint64_t> below(n * words, 0);  // below[v]: the nodes reachable from v
  auto has = [&](std::size_t v, std::size_t w) { return (below[v * words + w / 64] >> (w % 64)) & 1u; };
  for (std::size_t k = n; k-- > 0;) {
    const std::size_t v = order[k];
    for (std::size_t w : out[v]) {
      for (std::size_t j = 0; j < words; ++j) below[v * words + j] |= below[w * words + j];
      below[v * words + w / 64] |= std::uint64_t(1) << (w % 64);
    }
  }
  std::size_t unordered = 0;
  for (std::size_t u = 0; u < n; ++u) {
    if (!counted[u]) continue;
    for (std::size_t v = 0; v < n; ++v)
      if (v != u && counted[v] && !has(u, v) && !has(v, u)) {
        ++unordered;
        break;
      }
  }
  return unordered;
}
}  // namespace detail

inline GraphNodeCounts count_graph_nodes(cudaGraph_t graph) {
  GraphNodeCounts c;
  std::size_t n = 0;
  if (cudaGraphGetNodes(graph, nullptr, &n) != cudaSuccess) return c;
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0 && cudaGraphGetNodes(graph, nodes.data(), &n) != cudaSuccess) return c;
  c.total = n;
  std::vector<char> is_kernel(n, 0);
  std::map<cudaGraphNode_t, std::size_t> index;
  for (std::size_t i = 0; i < n; ++i) {
    index[nodes[i]] = i;
    cudaGraphNodeType type{};
    if (cudaGraphNodeGetType(nodes[i], &type) != cudaSuccess) continue;
    if (type == cudaGraphNodeTypeKernel) {
      ++c.kernels;
      is_kernel[i] = 1;
    } else if (type == cudaGraphNodeTypeMemset) {
      ++c.memsets;
    } else if (type == cudaGraphNodeTypeMemcpy) {
      ++c.memcpys;
    } else {
      ++c.other;
    }
  }
  std::size_t e = 0;
  if (cudaGraphGetEdges(graph, nullptr, nullptr, nullptr, &e) != cudaSuccess) return c;
  std::vector<cudaGraphNode_t> from(e), to(e);
  std::vector<cudaGraphEdgeData> data(e);
  if (e > 0 && cudaGraphGetEdges(graph, from.data(), to.data(), data.data(), &e) != cudaSuccess) return c;
  std::vector<std::size_t> out_degree(n, 0), from_i(e), to_i(e);
  for (std::size_t i = 0; i < e; ++i) {
    from_i[i] = index.at(from[i]);
    to_i[i] = index.at(to[i]);
    ++out_degree[from_i[i]];
  }
  for (std::size_t d : out_degree)
    if (d > 1) ++c.forks;
  c.concurrent_kernels = detail::unordered_nodes(n, from_i, to_i, is_kernel);
  return c;
}

template <class Trainer>
class GraphStep {
 public:
  explicit GraphStep(Trainer& trainer) : trainer_(trainer) {}
  ~GraphStep() { reset(); }
  GraphStep(const GraphStep&) = delete;
  GraphStep& operator=(const GraphStep&) = delete;

  DtnLosses step(View<const float, Cuda> xs, View<const float, Cuda> xt) {
    if (xs.shape != xs_.shape() || xt.shape != xt_.shape()) {
      reset();
      xs_.resize(xs.shape);
      xt_.resize(xt.shape);
    }
    copy(xs, xs_.view());
    copy(xt, xt_.view());
    trainer_.prepare_deferred();
    if (exec_ != nullptr && storage_moves() != storage_moves_) reset();
    if (!warm_) {
      trainer_.run_deferred(xs_.view(), xt_.view());
      warm_ = true;
    } else {
      if (exec_ == nullptr) capture();
      DTN_CUDA_CHECK(cudaGraphLaunch(exec_, stream()));
    }
    return trainer_.finish_deferred();
  }
  bool captured() const { return exec_ != nullptr; }
  // The nodes of the last captured graph by kind: each is one launch the graph saves the host,
  // and what a fusion that removes launches is measured against.
  GraphNodeCounts node_counts() const { return counts_; }
  // Forgets the graph; the next step runs eagerly again and the one after recaptures.
  void reset() {
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
    warm_ = false;
  }

 private:
  void capture() {
    cudaStream_t s = stream();
    // Counted before the capture: a buffer that grows during it leaves nodes captured earlier
    // pointing at the released block, and the next step recaptures.
    const std::uint64_t moves = storage_moves();
    begin_capture(s, cudaStreamCaptureModeThreadLocal);
    try {
      trainer_.run_deferred(xs_.view(), xt_.view());
    } catch (...) {
      cudaGraph_t broken = nullptr;
      (void)end_capture(s, &broken);
      if (broken != nullptr) (void)cudaGraphDestroy(broken);
      throw;
    }
    cudaGraph_t graph = nullptr;
    DTN_CUDA_CHECK(end_capture(s, &graph));
    counts_ = count_graph_nodes(graph);
    const cudaError_t inst = cudaGraphInstantiate(&exec_, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (inst != cudaSuccess) {
      exec_ = nullptr;
      DTN_CUDA_CHECK(inst);
    }
    storage_moves_ = moves;
  }

  Trainer& trainer_;
  Tensor<float, Cuda> xs_, xt_;
  GraphNodeCounts counts_;
  cudaGraphExec_t exec_ = nullptr;
  std::uint64_t storage_moves_ = 0;  // dtn::storage_moves() when the capture began
  bool warm_ = false;
};

}  // namespace cuda
}  // namespace dtn
