// GraphStep's count of the kernels a captured step graph lets run beside another
// (GraphNodeCounts::concurrent_kernels, from dtn::cuda::detail::unordered_nodes), on small
// graphs written by hand: the shapes a capture makes of one stream, of an overlapped
// convolution backward (dtn::cuda::side_by_side), and of a serialised one, whose join leaves a
// fork with nothing beside it. No GPU needed.
#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

#include <dtn/train/graph_step.cuh>

namespace {

struct Dag {
  std::size_t n = 0;
  std::vector<std::size_t> from, to;
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
  Dag chain{5, {}, {}};
  for (std::size_t i = 0; i + 1 < 5; ++i) chain.edge(i, i + 1);
  CHECK(chain.unordered() == 0);

  // 0 -> (1 -> 2) and (3 -> 4) -> 5: an overlapped backward, weight gradient on 1, 2 and input
  // gradient on 3, 4, joined before node 5.
  Dag both{6, {}, {}};
  both.edge(0, 1);
  both.edge(1, 2);
  both.edge(0, 3);
  both.edge(3, 4);
  both.edge(2, 5);
  both.edge(4, 5);
  CHECK(both.unordered() == 4);
  CHECK(both.unordered({0, 1, 0, 1, 0, 0}) == 2);  // counted: 1 and 3 only
  CHECK(both.unordered({0, 1, 1, 0, 0, 1}) == 0);  // one branch and the join: ordered
  CHECK(both.unordered({1, 0, 0, 0, 0, 0}) == 0);  // one counted node has nothing to pair with

  // The serialised side_by_side: the side work 1 -> 2 runs first, the join makes the input
  // gradient 3 -> 4 wait on it, and the stream's own edge 0 -> 3 remains: node 0 is a fork, yet
  // everything is ordered.
  Dag serial{5, {}, {}};
  serial.edge(0, 1);
  serial.edge(1, 2);
  serial.edge(2, 3);
  serial.edge(0, 3);
  serial.edge(3, 4);
  CHECK(serial.unordered() == 0);

  // No edges: every node may run beside every other. Beyond 64 nodes the bitsets take a second word.
  CHECK(Dag{3, {}, {}}.unordered() == 3);
  Dag wide{130, {}, {}};
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
  Dag cycle{2, {}, {}};
  cycle.edge(0, 1);
  cycle.edge(1, 0);
  CHECK(cycle.unordered() == 0);
}
