// dtn::cuda::Context, side_by_side and Memory<Cuda> (include/dtn/backend/cuda/context.cuh,
// memory.cuh) against the fake CUDA runtime of fake_cudart.hpp: the thread's stream and handles,
// what a thread's end gives back, the second lane's fork and join (eagerly and inside a graph
// capture), the blocks held while two lanes run, the failure paths, a thread on another device,
// and the copies' synchronisation rules. Each case runs in a thread of its own, so that it gets a
// new Context (one per thread) and that Context's end is part of what is checked. The process's
// caching allocator is the real one, shared by the cases: they compare its counts before and after.
#include <doctest/doctest.h>

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <dtn/backend/cuda/memory.cuh>
#include <dtn/core/tensor.hpp>

#include "fake_cudart.hpp"

namespace {

using dtn::Cuda;
using dtn::Shape;
using dtn::Tensor;
using dtn::cuda::Context;

using fake::contains;
using fake::error_of;

// Runs f in a new thread (a new Context, destroyed when the thread ends); returns what it threw.
std::string in_thread(const std::function<void()>& f) {
  std::string thrown;
  std::thread t([&] { thrown = error_of(f); });
  t.join();
  return thrown == "(nothing thrown)" ? "" : thrown;
}

// For a case's life: the process's allocator gives its cache back while the fake still holds
// those blocks, then the fake starts over; at the end the cache is given back again, so that the
// next case (of this file or another, in any order) starts from an empty cache. Blocks a case has
// deliberately lost stay counted in use, so cases compare counts before and after.
struct FreshDevice {
  FreshDevice() {
    dtn::cuda::release_cached_memory();
    fake::reset();
  }
  ~FreshDevice() {
    try {
      dtn::cuda::release_cached_memory();
    } catch (const std::exception& e) {
      FAIL_CHECK("release_cached_memory at the end of the case: " << e.what());
    }
  }
  FreshDevice(const FreshDevice&) = delete;
  FreshDevice& operator=(const FreshDevice&) = delete;
};

}  // namespace

TEST_CASE("Context: a stream per thread, handles bound to it when first asked for, all given back when the thread ends") {
  const FreshDevice device;
  const dtn::cuda::AllocatorStats before = dtn::cuda::allocator_stats();
  cudaStream_t s = nullptr;
  const std::string thrown = in_thread([&] {
    Context& ctx = dtn::cuda::context();
    s = ctx.stream();
    CHECK(fake::objects().streams_made == 1);
    CHECK(fake::objects().cudnn_made == 0);
    CHECK(fake::objects().cublas_made == 0);
    cudnnHandle_t dnn = ctx.cudnn();
    CHECK(fake::cudnn_stream(dnn) == s);
    cublasHandle_t blas = ctx.cublas();
    const fake::CublasState b = fake::cublas_state(blas);
    CHECK(b.stream == s);
    CHECK(b.workspace != nullptr);  // set after the stream, which resets it
    CHECK(b.workspace_bytes == Context::cublas_workspace_bytes);
    CHECK(b.math_mode == CUBLAS_DEFAULT_MATH);
    ctx.set_tf32(true);
    CHECK(fake::cublas_state(blas).math_mode == CUBLAS_TF32_TENSOR_OP_MATH);
    ctx.set_tf32(false);
    CHECK(fake::cublas_state(blas).math_mode == CUBLAS_DEFAULT_MATH);
    CHECK(ctx.cudnn() == dnn);
    CHECK(ctx.cublas() == blas);
    // The workspace only grows; growing gives the old one back and counts a storage move.
    void* w = ctx.workspace(1000);
    CHECK(ctx.workspace(500) == w);
    const std::uint64_t moves = dtn::storage_moves();
    void* bigger = ctx.workspace(std::size_t(1) << 20);
    CHECK(bigger != w);
    CHECK(dtn::storage_moves() == moves + 1);
    CHECK(ctx.workspace_bytes() == std::size_t(1) << 20);
    const long at = fake::position(s);
    Tensor<float, Cuda> t(Shape{256});
    t.zero();
    CHECK(fake::position(s) == at + 1);  // queued on the thread's stream
  });
  CHECK(thrown == "");
  const fake::Objects o = fake::objects();
  CHECK(o.streams_destroyed == 1);
  CHECK(o.cudnn_destroyed == 1);
  CHECK(o.cublas_destroyed == 1);
  CHECK(fake::stream_syncs() >= 1);  // the context waits for its stream before destroying it
  CHECK(dtn::cuda::allocator_stats().bytes_in_use == before.bytes_in_use);
  // Its blocks are the cache's now, tagged with no stream: another thread takes them with no
  // wait (a wait would be an event recorded on the destroyed stream).
  const std::size_t waits = fake::waits();
  CHECK(in_thread([] {
          Context& ctx = dtn::cuda::context();
          (void)ctx.workspace(std::size_t(1) << 20);
          Tensor<float, Cuda> t(Shape{256});
        }) == "");
  CHECK(fake::waits() == waits);
  CHECK(dtn::cuda::allocator_stats().num_stream_waits == before.num_stream_waits);
  CHECK(fake::misuses().empty());
}

TEST_CASE("side_by_side: the side work on the second lane after all the stream queued, the main work on the stream, which then waits for both") {
  const FreshDevice device;
  const std::string thrown = in_thread([] {
    Context& ctx = dtn::cuda::context();
    const cudaStream_t s0 = ctx.stream();
    cublasHandle_t main_blas = ctx.cublas();
    cudnnHandle_t dnn = ctx.cudnn();
    Tensor<float, Cuda> a(Shape{1024}), b(Shape{1024});
    a.zero();
    const long forked_at = fake::position(s0);
    cudaStream_t side = nullptr, main = nullptr, nested = nullptr;
    cublasHandle_t side_blas = nullptr;
    cudnnHandle_t side_dnn = nullptr;
    dtn::cuda::side_by_side(
        [&] {
          side = dtn::cuda::stream();
          b.zero();
          side_blas = dtn::cuda::context().cublas();
          side_dnn = dtn::cuda::context().cudnn();
          // Already on the second lane: a nested call runs both parts here, one after the other.
          dtn::cuda::side_by_side([&] { nested = dtn::cuda::stream(); }, [] {});
        },
        [&] {
          main = dtn::cuda::stream();
          a.zero();
        });
    CHECK(ctx.has_side_lane());
    CHECK(side != s0);
    CHECK(main == s0);
    CHECK(nested == side);
    CHECK(fake::waited_for(side, s0, forked_at));               // the fork
    CHECK(fake::waited_for(s0, side, fake::position(side)));    // the join: all the lane queued
    CHECK(fake::position(side) >= 1);
    CHECK(!ctx.on_side_lane());
    CHECK(dtn::cuda::stream() == s0);
    // The lane's own cuBLAS handle and workspace; the one cuDNN handle switched to the lane and back.
    CHECK(side_blas != main_blas);
    CHECK(fake::cublas_state(side_blas).stream == side);
    CHECK(fake::cublas_state(side_blas).workspace != fake::cublas_state(main_blas).workspace);
    CHECK(side_dnn == dnn);
    CHECK(fake::cudnn_stream(dnn) == side);  // left on the lane until the handle's next use
    CHECK(ctx.cudnn() == dnn);
    CHECK(fake::cudnn_stream(dnn) == s0);    // which binds it to the stream again
    CHECK(ctx.lane_bytes(1).cublas == Context::cublas_workspace_bytes);
  });
  CHECK(thrown == "");
  CHECK(fake::objects().streams_destroyed == 2);
  CHECK(fake::objects().cublas_destroyed == 2);
  CHECK(fake::misuses().empty());
}

TEST_CASE("side_by_side with main_alone: the main work is queued only after the stream waits for the side work") {
  const FreshDevice device;
  const std::string thrown = in_thread([] {
    Context& ctx = dtn::cuda::context();
    const cudaStream_t s0 = ctx.stream();
    Tensor<float, Cuda> a(Shape{64});
    cudaStream_t side = nullptr;
    bool joined_first = false, main_on_stream = false;
    dtn::cuda::side_by_side(
        [&] {
          side = dtn::cuda::stream();
          a.zero();
          a.zero();
        },
        [&] {
          main_on_stream = dtn::cuda::stream() == s0;
          joined_first = fake::waited_for(s0, side, fake::position(side));
        },
        true);
    CHECK(main_on_stream);
    CHECK(joined_first);
    CHECK(!ctx.on_side_lane());
  });
  CHECK(thrown == "");
  CHECK(fake::misuses().empty());
}

TEST_CASE("side_by_side: blocks freed while the lanes run are held until the join, then cached for the stream") {
  const FreshDevice device;
  const std::string thrown = in_thread([] {
    Context& ctx = dtn::cuda::context();
    const cudaStream_t s0 = ctx.stream();
    dtn::cuda::side_by_side([] {}, [] {});  // the lane made, its workspaces settled
    void* side_block = nullptr;
    void* main_block = nullptr;
    std::size_t cached_in_main = 0;
    const std::size_t cached_before = dtn::cuda::allocator_stats().cached_blocks;
    dtn::cuda::side_by_side(
        [&] {
          Tensor<float, Cuda> t(Shape{4096});
          t.zero();
          side_block = t.data();
        },  // freed here, while the main work still to be queued may run beside its zeroing
        [&] {
          Tensor<float, Cuda> u(Shape{4096});
          main_block = u.data();
          cached_in_main = dtn::cuda::allocator_stats().cached_blocks;
        });
    CHECK(main_block != side_block);  // not handed to the other lane while the side work may use it
    CHECK(cached_in_main == cached_before);
    CHECK(dtn::cuda::allocator_stats().cached_blocks == cached_before + 2);  // both back at the join
    // Tagged with the stream, which has waited for both lanes: reused there with no wait.
    const std::size_t waits = fake::waits();
    Tensor<float, Cuda> v(Shape{4096}), w(Shape{4096});
    CHECK(((v.data() == side_block && w.data() == main_block) || (v.data() == main_block && w.data() == side_block)));
    CHECK(fake::waits() == waits);
    CHECK(dtn::cuda::stream() == s0);
  });
  CHECK(thrown == "");
  CHECK(fake::misuses().empty());
}

TEST_CASE("side_by_side: an exception from the side work still joins the lanes, and its blocks go back to the cache") {
  const FreshDevice device;
  const dtn::cuda::AllocatorStats before = dtn::cuda::allocator_stats();
  const std::string thrown = in_thread([] {
    Context& ctx = dtn::cuda::context();
    const cudaStream_t s0 = ctx.stream();
    cudaStream_t side = nullptr;
    bool main_ran = false;
    const std::string msg = error_of([&] {
      dtn::cuda::side_by_side(
          [&] {
            side = dtn::cuda::stream();
            Tensor<float, Cuda> t(Shape{4096});
            t.zero();
            throw std::runtime_error("the side work failed");
          },
          [&] { main_ran = true; });
    });
    CHECK(msg == "the side work failed");
    CHECK(!main_ran);
    CHECK(!ctx.on_side_lane());
    CHECK(dtn::cuda::stream() == s0);
    CHECK(fake::waited_for(s0, side, fake::position(side)));
  });
  CHECK(thrown == "");
  CHECK(dtn::cuda::allocator_stats().bytes_in_use == before.bytes_in_use);
  CHECK(fake::misuses().empty());
}

TEST_CASE("side_by_side: a join that fails drops the blocks freed meanwhile instead of caching them") {
  const FreshDevice device;
  const std::string thrown = in_thread([] {
    Context& ctx = dtn::cuda::context();
    dtn::cuda::side_by_side([] {}, [] {});
    void* lost = nullptr;
    const std::size_t cached_before = dtn::cuda::allocator_stats().cached_blocks;
    const std::string msg = error_of([&] {
      dtn::cuda::side_by_side(
          [&] {
            Tensor<float, Cuda> t(Shape{8192});
            t.zero();
            lost = t.data();
          },
          [&] { fake::fail_call("cudaEventRecord", 0, cudaErrorLaunchFailure); });  // the join's record
    });
    CHECK(contains(msg, "cudaEventRecord"));
    CHECK(!ctx.on_side_lane());
    CHECK(dtn::cuda::allocator_stats().cached_blocks == cached_before);
    // Never handed out again: the lanes' queued work may still use it.
    std::vector<Tensor<float, Cuda>> later;
    for (int i = 0; i < 4; ++i) {
      later.emplace_back(Shape{8192});
      CHECK(later.back().data() != lost);
    }
  });
  CHECK(thrown == "");
  CHECK(fake::misuses().empty());
}

TEST_CASE("side_by_side in a graph capture: the second lane joins the capture at the fork and is joined back, so the capture ends cleanly") {
  const FreshDevice device;
  const std::string thrown = in_thread([] {
    Context& ctx = dtn::cuda::context();
    const cudaStream_t s0 = ctx.stream();
    Tensor<float, Cuda> a(Shape{256}), b(Shape{256});
    // No second lane yet: it cannot be made in a capture, so both parts run on the stream.
    dtn::cuda::begin_capture(s0);
    cudaStream_t side = nullptr;
    dtn::cuda::side_by_side([&] { side = dtn::cuda::stream(); }, [] {});
    CHECK(side == s0);
    CHECK(!ctx.has_side_lane());
    cudaGraph_t graph = nullptr;
    CHECK(dtn::cuda::end_capture(s0, &graph) == cudaSuccess);
    // Made eagerly, the lane is a branch of the next capture.
    dtn::cuda::side_by_side([] {}, [] {});
    CHECK(ctx.has_side_lane());
    dtn::cuda::begin_capture(s0);
    dtn::cuda::side_by_side(
        [&] {
          side = dtn::cuda::stream();
          b.zero();
        },
        [&] { a.zero(); });
    CHECK(side != s0);
    CHECK(fake::capture_joins() == 1);
    CHECK(fake::capturing(side));
    CHECK(dtn::cuda::end_capture(s0, &graph) == cudaSuccess);  // not unjoined, not invalidated
    CHECK(graph != nullptr);
    CHECK(!fake::capturing(side));
  });
  CHECK(thrown == "");
  CHECK(fake::misuses().empty());
}

TEST_CASE("Context: a failing cublasSetWorkspace leaves the lane with no handle and gives the workspace back, a failing second lane leaves none") {
  const FreshDevice device;
  const dtn::cuda::AllocatorStats before = dtn::cuda::allocator_stats();
  const std::string thrown = in_thread([&] {
    Context& ctx = dtn::cuda::context();
    fake::fail_call("cublasSetWorkspace_v2", 0, CUBLAS_STATUS_INTERNAL_ERROR);
    const std::string msg = error_of([&] { ctx.cublas(); });
    CHECK(contains(msg, "cublasSetWorkspace"));
    CHECK(fake::objects().cublas_made == 1);
    CHECK(fake::objects().cublas_destroyed == 1);
    CHECK(dtn::cuda::allocator_stats().bytes_in_use == before.bytes_in_use);
    cublasHandle_t h = ctx.cublas();  // the next call makes it whole
    CHECK(fake::cublas_state(h).workspace_bytes == Context::cublas_workspace_bytes);
    CHECK(ctx.lane_bytes(0).cublas == Context::cublas_workspace_bytes);
    // The second lane is made whole or not at all too: its stream is destroyed when its cuBLAS
    // handle cannot be made, no work has moved to it, and the next side_by_side makes it.
    fake::fail_call("cublasCreate_v2", 0, CUBLAS_STATUS_ALLOC_FAILED);
    bool ran = false;
    const std::string lane = error_of([&] { dtn::cuda::side_by_side([&] { ran = true; }, [&] { ran = true; }); });
    CHECK(contains(lane, "cublasCreate"));
    CHECK(!ran);
    CHECK(!ctx.has_side_lane());
    CHECK(!ctx.on_side_lane());
    CHECK(fake::objects().streams_made == 2);
    CHECK(fake::objects().streams_destroyed == 1);
    dtn::cuda::side_by_side([] {}, [] {});
    CHECK(ctx.has_side_lane());
  });
  CHECK(thrown == "");
  CHECK(fake::objects().cublas_destroyed == 3);
  CHECK(fake::objects().streams_destroyed == 3);
  CHECK(dtn::cuda::allocator_stats().bytes_in_use == before.bytes_in_use);
  CHECK(fake::misuses().empty());
}

TEST_CASE("Context: a thread on another device gets no context, and a block it frees is set aside, never reused") {
  const FreshDevice device;
  std::unique_ptr<Tensor<float, Cuda>> t;
  struct DestroyInThread {  // never on this thread, which has no context and should get none
    std::unique_ptr<Tensor<float, Cuda>>& t;
    ~DestroyInThread() {
      if (t) std::thread([this] { t.reset(); }).join();
    }
  } destroy{t};
  REQUIRE(in_thread([&] {
            t.reset(new Tensor<float, Cuda>(Shape{2048}));  // binds device 0 (if no case has yet)
            t->zero();
          }) == "");
  void* p = t->data();
  const dtn::cuda::AllocatorStats before = dtn::cuda::allocator_stats();
  std::string refused;
  CHECK(in_thread([&] {
          CHECK(cudaSetDevice(1) == cudaSuccess);
          refused = error_of([] { dtn::cuda::context(); });
          t.reset();  // Memory<Cuda>::deallocate with no context: the block's stream is unknown
        }) == "");
  CHECK(contains(refused, "this thread's dtn::cuda::Context (its first CUDA op)"));
  CHECK(contains(refused, "the current device is 1"));
  const dtn::cuda::AllocatorStats after = dtn::cuda::allocator_stats();
  CHECK(after.bytes_in_use == before.bytes_in_use - 8192);
  CHECK(after.cached_blocks == before.cached_blocks);
  CHECK(in_thread([&] {
          Tensor<float, Cuda> u(Shape{2048});
          CHECK(u.data() != p);
        }) == "");
  dtn::cuda::release_cached_memory();
  CHECK(!fake::is_live(p));
  CHECK(fake::misuses().empty());
}

TEST_CASE("Memory<Cuda>: a copy to the host waits for the stream, one from pageable host memory to the device does not") {
  const FreshDevice device;
  const std::string thrown = in_thread([] {
    std::vector<float> host(16, 3.0f), back(16, 0.0f);
    Tensor<float, Cuda> d(Shape{16});
    const std::size_t syncs = fake::stream_syncs();
    dtn::Copy<Cuda, dtn::Cpu>::run(d.data(), host.data(), 16 * sizeof(float));
    CHECK(fake::stream_syncs() == syncs);
    dtn::Copy<dtn::Cpu, Cuda>::run(back.data(), d.data(), 16 * sizeof(float));
    CHECK(fake::stream_syncs() == syncs + 1);
    CHECK(back == host);
  });
  CHECK(thrown == "");
  CHECK(fake::misuses().empty());
}

#if DTN_FAKE_HOST_OOM  // (fake_cudart.hpp)
TEST_CASE("side_by_side: a block freed while the lanes run that the host has no memory to note is dropped, never reused") {
  const FreshDevice device;
  const std::string thrown = in_thread([] {
    dtn::cuda::side_by_side([] {}, [] {});
    const std::size_t cached_before = dtn::cuda::allocator_stats().cached_blocks;
    void* dropped = nullptr;
    dtn::cuda::side_by_side(
        [&] {
          // The context notes 16 blocks without allocating (it reserves room at the fork); the
          // 17th needs host memory, which is made to fail.
          std::vector<Tensor<float, Cuda>> ts;
          ts.reserve(17);
          for (int i = 0; i < 17; ++i) ts.emplace_back(Shape{1024});
          dropped = ts.front().data();
          while (ts.size() > 1) ts.pop_back();
          fake::fail_host_allocation(0);
          ts.pop_back();  // Memory<Cuda>::deallocate is noexcept: the block is dropped
          fake::fail_host_allocation(-1);
        },
        [] {});
    CHECK(dtn::cuda::allocator_stats().cached_blocks == cached_before + 16);
    std::vector<Tensor<float, Cuda>> later;
    for (int i = 0; i < 17; ++i) {
      later.emplace_back(Shape{1024});
      CHECK(later.back().data() != dropped);
    }
  });
  CHECK(thrown == "");
  CHECK(fake::misuses().empty());
}
#endif  // DTN_FAKE_HOST_OOM
