// GraphStep's count of the kernels a captured step graph lets run beside another
// (GraphNodeCounts::concurrent_kernels, from dtn::cuda::detail::unordered_nodes), on small
// graphs written by hand: the shapes a capture makes of one stream, of an overlapped
// convolution backward (dtn::cuda::side_by_side), and of a serialised one, whose join leaves a
// fork with nothing beside it. No GPU needed.
#include <doctest/doctest.h>

#include <cstddef>
#include <initializer_list>
#include <utility>
#include <vector>

#include <dtn/train/graph_step.cuh>

namespace {

struct Dag {
  std::size_t n = 0;
  std::vector<std::size_t> from, to;
  Dag(std::size_t nodes, std::initializer_list<std::pair<std::size_t, std::size_t>> edges) : n(nodes) {
    for (const auto& e : edges) edge(e.first, e.second);
  }
  void edge(std::size_t a, std::size_t b) {
    from.push_back(a);
    to.push_back(b);
  }
  std::size_t unordered(const std::vector<char>& counted) const {
    return dtn::cuda::detail::unordered_nodes(n, from, to, counted);
  }
  std::size_t unordered() const { return unordered(std::vector<char>(n, 1)); }
};

}  // namespace

TEST_CASE("unordered_nodes: a chain has none, branches between a fork and a join have all their nodes") {
  Dag chain(5, {{0, 1}, {1, 2}, {2, 3}, {3, 4}});
  CHECK(chain.unordered() == 0);

  // 0 -> (1 -> 2) and (3 -> 4) -> 5: an overlapped backward, weight gradient on 1, 2 and input
  // gradient on 3, 4, joined before node 5.
  const Dag both(6, {{0, 1}, {1, 2}, {0, 3}, {3, 4}, {2, 5}, {4, 5}});
  CHECK(both.unordered() == 4);
  CHECK(both.unordered({0, 1, 0, 1, 0, 0}) == 2);  // counted: 1 and 3 only
  CHECK(both.unordered({0, 1, 1, 0, 0, 1}) == 0);  // one branch and the join: ordered
  CHECK(both.unordered({1, 0, 0, 0, 0, 0}) == 0);  // one counted node has nothing to pair with

  // The serialised side_by_side: the side work 1 -> 2 runs first, the join makes the input
  // gradient 3 -> 4 wait on it, and the stream's own edge 0 -> 3 remains: node 0 is a fork, yet
  // everything is ordered.
  const Dag serial(5, {{0, 1}, {1, 2}, {2, 3}, {0, 3}, {3, 4}});
  CHECK(serial.unordered() == 0);

  // No edges: every node may run beside every other. Beyond 64 nodes the bitsets take a second word.
  CHECK(Dag(3, {}).unordered() == 3);
  Dag wide(130, {});
  for (std::size_t i = 1; i < 129; ++i) {
    wide.edge(0, i);
    wide.edge(i, 129);
  }
  CHECK(wide.unordered() == 128);
  wide.edge(64, 65);  // two of the middle nodes now ordered: the others still are not
  CHECK(wide.unordered() == 128);
  std::vector<char> pair(130, 0);
  pair[64] = pair[65] = 1;
  CHECK(wide.unordered(pair) == 0);

  // A cycle is no DAG (a CUDA graph never has one): counted as nothing.
  const Dag cycle(2, {{0, 1}, {1, 0}});
  CHECK(cycle.unordered() == 0);
}
