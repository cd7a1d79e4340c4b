// bench_dtn_cuda: the dtn side of the dtn-vs-PyTorch table on the GPU (peer: torch_dtn.py --device cuda).
//
// Same rows as bench_dtn (f_fwd, g_fwd_bwd, D_fwd_bwd, dtn_step at batch 64 and 128, per-conv-layer
// GFLOP/s against a cuBLAS sgemm reference), plus the per-channel ops (batch norm, bias) at the
// batch-norm layers' shapes in GB/s against a device-to-device copy (op:* rows), timed with CUDA events on dtn's stream; TF32 off
// unless --tf32 (as torch_dtn.py).  Mode "graph": the f/g/D rows once more, captured into a CUDA
// graph and replayed (the launch overhead a captured training loop would save), and the whole DTN
// step through dtn::cuda::GraphStep (DomainTransfer's deferred step with its device-side guard).
// dtn_step rows carry peak_mem_mb: the caching allocator's high-water mark of bytes in use,
// read right after the step rows (steps run first, smallest batch first, so the mark at the
// largest batch is that step's peak).
// --conv-autotune: cuDNN's convolution algorithms chosen by timing them (cudnnFind*) instead of by
// its heuristics, the GEMM engine (conv_gemm.cuh) timed beside them; the rows are then labelled
// tuned and tuned+graph, and the choices are listed at the end. --conv-cudnn: convolutions on
// cuDNN's heuristic algorithms instead of the GEMM engine (the default); the labels get a +cudnn
// suffix. --conv-overlap: each convolution's weight gradient on a second stream beside its input
// gradient (dtn::cuda::set_conv_overlap); +overlap suffix. --conv-workspace-mib N: at most N MiB of
// workspace per convolution pass and lane (dtn::cuda::set_conv_workspace_limit); +wsN suffix.
// Without a usable GPU it prints the reason and exits 77 (skipped).
#include <dtn/cuda.cuh>

#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bench_common.hpp"

namespace {

using dtn::Cuda;
using Json = nlohmann::json;

// Times fn() with events recorded on dtn's stream around each run.
template <class Launch>
bench::Stats time_events(Launch&& launch, int reps) {
  cudaStream_t s = dtn::cuda::stream();
  const dtn::cuda::Event a, b;
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) ms.push_back(dtn::cuda::elapsed_ms(s, a, b, launch));
  return bench::summarize(ms);
}

struct EventTimer {
  bench::Stats operator()(const std::function<void()>& fn, int warmup, int reps) const {
    for (int i = 0; i < warmup; ++i) fn();
    dtn::cuda::synchronize();
    return time_events(fn, reps);
  }
};

__global__ void empty_kernel() {}

// The replay time of a graph of `n` empty one-thread kernels in a chain: what the graph's launches
// alone cost, the floor under a captured step with n kernel nodes.
double empty_chain_ms(std::size_t n, int reps) {
  cudaStream_t s = dtn::cuda::stream();
  cudaGraph_t graph = nullptr;
  dtn::cuda::begin_capture(s, cudaStreamCaptureModeThreadLocal);
  for (std::size_t i = 0; i < n; ++i) empty_kernel<<<1, 1, 0, s>>>();
  DTN_CUDA_CHECK(dtn::cuda::end_capture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  DTN_CUDA_CHECK(inst);
  DTN_CUDA_CHECK(cudaGraphLaunch(exec, s));
  const bench::Stats st = time_events([&] { DTN_CUDA_CHECK(cudaGraphLaunch(exec, s)); }, reps);
  (void)cudaGraphExecDestroy(exec);
  return st.median_ms;
}

// Runs fn() eagerly `warmup` times (buffers sized, convolution algorithms chosen), captures one
// run into a CUDA graph and times its replays.
struct GraphTimer {
  bench::Stats operator()(const std::function<void()>& fn, int warmup, int reps) const {
    for (int i = 0; i < std::max(warmup, 1); ++i) fn();
    cudaStream_t s = dtn::cuda::stream();
    DTN_CUDA_CHECK(cudaStreamSynchronize(s));
    cudaGraph_t graph = nullptr;
    dtn::cuda::begin_capture(s, cudaStreamCaptureModeThreadLocal);
    try {
      fn();
    } catch (...) {
      (void)dtn::cuda::end_capture(s, &graph);
      if (graph) (void)cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      throw;
    }
    DTN_CUDA_CHECK(dtn::cuda::end_capture(s, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    DTN_CUDA_CHECK(inst);
    struct ExecGuard {
      cudaGraphExec_t e;
      ~ExecGuard() { (void)cudaGraphExecDestroy(e); }
    } guard{exec};
    DTN_CUDA_CHECK(cudaGraphLaunch(exec, s));
    DTN_CUDA_CHECK(cudaStreamSynchronize(s));
    return time_events([&] { DTN_CUDA_CHECK(cudaGraphLaunch(exec, s)); }, reps);
  }
};

// The per-channel ops (batch norm, bias add and gradient) at the shapes of the example's batch-norm
// layers, one row each ("op:<op>:<c>x<hw>"), with the effective bandwidth of the op's compulsory
// traffic (each input read once, each output written once) beside a device-to-device copy timed
// just before: a memory-bound op near the copy's rate has nothing left to gain. The ops read
// more than that (batch norm's two statistics passes), so 100% is out of reach for them.
void bench_channel_ops(int batch, const bench::Where& at, const EventTimer& timer, const bench::Options& o,
                       Json& rows) {
  using B = dtn::Backend<Cuda>;
  // Device-to-device copy reference: 256 MiB each way.
  const std::size_t copy_n = std::size_t(64) << 20;
  dtn::Tensor<float, Cuda> src(dtn::Shape{static_cast<std::int64_t>(copy_n)}), dst(src.shape());
  src.zero();
  const bench::Stats cs = timer(
      [&] {
        DTN_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), copy_n * sizeof(float), cudaMemcpyDeviceToDevice,
                                       dtn::cuda::stream()));
      },
      o.warmup, std::max(o.reps, 5));
  const double copy_gbs = 2.0 * copy_n * sizeof(float) / (cs.min_ms * 1e6);
  Json cr = bench::make_row("copy_d2d", at.device, "copy", 0, 0, cs, 0);
  cr["images_per_s"] = 0;
  cr["gbs_best"] = bench::round_to(copy_gbs, 0.1);
  bench::emit(rows, cr);
  std::printf("per-channel ops at batch %d; device-to-device copy %.0f GB/s (read + write, best of %d)\n", batch,
              copy_gbs, cs.reps);

  struct Shape2 {
    int c;
    long hw;
  };
  // The batch-norm shapes of g and D (128x16x16 .. 512x4x4), and those of the example's f, which
  // has batch norm after each pooling (64x16x16 .. 128x1x1; the benchmark's f has none).
  const Shape2 shapes[] = {{64, 256}, {128, 64}, {256, 16}, {128, 1}, {512, 16}, {256, 64}, {128, 256}};
  for (const Shape2& sh : shapes) {
    const std::int64_t n = batch, c = sh.c, hw = sh.hw;
    const dtn::Shape big{n, c, hw}, small{c};
    auto x = bench::uniform_tensor<Cuda>(big, -1, 1, 300), dy = bench::uniform_tensor<Cuda>(big, -1, 1, 301);
    dtn::Tensor<float, Cuda> y(big), dx(big);
    auto gamma = bench::uniform_tensor<Cuda>(small, 0.5, 1.5, 302), beta = bench::uniform_tensor<Cuda>(small, -1, 1, 303);
    auto rmean = bench::uniform_tensor<Cuda>(small, -0.1f, 0.1f, 304), rvar = bench::uniform_tensor<Cuda>(small, 0.5, 2, 305);
    dtn::Tensor<float, Cuda> smean(small), sinv(small), dg(small), db(small);
    dg.zero();
    db.zero();
    dtn::BnGeom g;
    g.n = batch;
    g.c = sh.c;
    g.hw = sh.hw;
    g.eps = 1e-5;
    g.momentum = 0.1;
    const double elems = double(n) * c * hw;
    const std::string tag = std::to_string(sh.c) + "x" + std::to_string(sh.hw);
    struct Op {
      const char* name;
      double bytes_per_elem;  // compulsory traffic
      std::function<void()> fn;
    };
    const Op ops[] = {
        {"bn_fwd_train", 8,
         [&] {
           B::batchnorm_forward_train(g, x.data(), gamma.data(), beta.data(), rmean.data(), rvar.data(), y.data(),
                                      smean.data(), sinv.data());
         }},
        {"bn_fwd_eval", 8,
         [&] { B::batchnorm_forward_eval(g, x.data(), gamma.data(), beta.data(), rmean.data(), rvar.data(), y.data()); }},
        {"bn_bwd", 12,
         [&] {
           B::batchnorm_backward(g, x.data(), dy.data(), gamma.data(), smean.data(), sinv.data(), dx.data(), dg.data(),
                                 db.data());
         }},
        {"bias_add", 8, [&] { B::bias_add(batch, sh.c, sh.hw, beta.data(), y.data()); }},
        {"bias_bwd", 4, [&] { B::bias_backward(batch, sh.c, sh.hw, dy.data(), db.data()); }},
    };
    // Three batches of `batch` one after the other, each its own batch (DtnConfig::joint_batches:
    // D's batches in the D update): one launch per stage for the three segments, against the plain
    // op launched on each in turn. Rows with elems3.
    const std::int64_t n3 = 3 * n;
    auto x3 = bench::uniform_tensor<Cuda>(dtn::Shape{n3, c, hw}, -1, 1, 306),
         dy3 = bench::uniform_tensor<Cuda>(dtn::Shape{n3, c, hw}, -1, 1, 307);
    dtn::Tensor<float, Cuda> y3(x3.shape()), dx3(x3.shape()), smean3(dtn::Shape{3 * c}), sinv3(dtn::Shape{3 * c});
    const int seg[3] = {batch, batch, batch};
    dtn::BnGeom g3 = g;
    g3.n = 3 * batch;
    const std::size_t stride3 = static_cast<std::size_t>(n) * c * hw;
    const Op ops3[] = {
        {"bn_fwd_train_3seg", 8,
         [&] {
           B::batchnorm_forward_train_segments(g3, 3, seg, x3.data(), gamma.data(), beta.data(), rmean.data(), rvar.data(),
                                               y3.data(), smean3.data(), sinv3.data());
         }},
        {"bn_fwd_train_3x", 8,
         [&] {
           for (int z = 0; z < 3; ++z)
             B::batchnorm_forward_train(g, x3.data() + z * stride3, gamma.data(), beta.data(), rmean.data(), rvar.data(),
                                        y3.data() + z * stride3, smean3.data() + z * c, sinv3.data() + z * c);
         }},
        {"bn_bwd_3seg", 12,
         [&] {
           B::batchnorm_backward_segments(g3, 3, seg, x3.data(), dy3.data(), gamma.data(), smean3.data(), sinv3.data(),
                                          dx3.data(), dg.data(), db.data());
         }},
        {"bn_bwd_3x", 12,
         [&] {
           for (int z = 0; z < 3; ++z)
             B::batchnorm_backward(g, x3.data() + z * stride3, dy3.data() + z * stride3, gamma.data(),
                                   smean3.data() + z * c, sinv3.data() + z * c, dx3.data() + z * stride3, dg.data(),
                                   db.data());
         }},
    };
    std::vector<std::pair<const Op*, double>> all;
    for (const Op& op : ops) all.emplace_back(&op, elems);
    for (const Op& op : ops3) all.emplace_back(&op, 3 * elems);
    for (const auto& entry : all) {
      const Op& op = *entry.first;
      const bench::Stats st = timer(op.fn, o.warmup, o.reps);
      Json r = bench::make_row(std::string("op:") + op.name + ":" + tag, at.device, at.mode, batch, 0, st, 0);
      const double gbs = op.bytes_per_elem * entry.second / (st.min_ms * 1e6);
      r["images_per_s"] = 0;
      r["us_best"] = bench::round_to(st.min_ms * 1e3, 0.01);
      r["gbs_best"] = bench::round_to(gbs, 0.1);
      r["pct_of_copy"] = bench::round_to(100.0 * gbs / copy_gbs, 0.1);
      bench::emit(rows, r);
      std::printf("  %-17s [%d, %3d, %3ld]  best %8.2f us  %7.0f GB/s = %5.1f%% of copy\n", op.name,
                  entry.second == elems ? batch : 3 * batch, sh.c, sh.hw, st.min_ms * 1e3, gbs, 100.0 * gbs / copy_gbs);
    }
  }
  std::fflush(stdout);
}

std::string device_name(int* sm_count, double* mem_gib) {
  int dev = 0;
  DTN_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  DTN_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  *sm_count = p.multiProcessorCount;
  *mem_gib = double(p.totalGlobalMem) / double(1u << 30);
  return p.name;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const bench::Options o = bench::parse_options(argc, argv, true);
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      std::printf("SKIPPED: no CUDA device: %s\n", e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
      return 77;
    }
    dtn::cuda::set_tf32(o.tf32);
    dtn::cuda::set_conv_autotune(o.conv_autotune);
    dtn::cuda::set_conv_gemm(o.conv_gemm);
    dtn::cuda::set_conv_deterministic(o.conv_deterministic);
    dtn::cuda::detail::conv_graph_max_plans() = o.graph_plans;
    dtn::cuda::set_conv_overlap(o.conv_overlap);
    if (o.conv_workspace_mib > 0)
      dtn::cuda::set_conv_workspace_limit(static_cast<std::size_t>(o.conv_workspace_mib) << 20);
    const std::string suffix = std::string(o.conv_autotune || o.conv_gemm ? "" : "+cudnn") +
                               (o.conv_deterministic ? "" : "+nondet") +
                               (o.tf32 ? "+tf32" : "") + (o.fusion ? "" : "+unfused") + (o.joint ? "+joint" : "") +
                               (o.conv_overlap ? "+overlap" : "") +
                               (o.conv_workspace_mib > 0 ? "+ws" + std::to_string(o.conv_workspace_mib) : "") +
                               (o.conv_autotune && o.graph_plans != 8 ? "+plans" + std::to_string(o.graph_plans) : "");
    const std::string plain_mode = (o.conv_autotune ? "tuned" : "dtn") + suffix;
    const std::string graph_mode = (o.conv_autotune ? "tuned+graph" : "graph") + suffix;
    int sms = 0;
    double mem = 0;
    const std::string gpu = device_name(&sms, &mem);
    Json doc;
    doc["meta"] = bench::flop_meta(o.batches);
    doc["meta"]["impl"] = "dtn";
    doc["meta"]["cuda_device"] = gpu;
    doc["meta"]["cpu"] = bench::cpu_model();
    doc["meta"]["tf32"] = o.tf32;
    doc["meta"]["fusion"] = o.fusion;
    doc["meta"]["joint_batches"] = o.joint;
    doc["meta"]["conv_autotune"] = o.conv_autotune;
    doc["meta"]["conv_gemm"] = o.conv_gemm;
    doc["meta"]["conv_deterministic"] = o.conv_deterministic;
    doc["meta"]["graph_plans"] = o.graph_plans;
    doc["meta"]["conv_overlap"] = o.conv_overlap;
    doc["meta"]["conv_workspace_mib"] = o.conv_workspace_mib;  // 0: no limit
    doc["meta"]["cuda_runtime"] = CUDART_VERSION;
    doc["meta"]["date"] = bench::utc_now();
    doc["meta"]["timing"] = "cudaEvent on dtn::cuda::stream(), median of reps after warm-up";
    doc["meta"]["dtn_step_graph"] =
        "mode graph: the whole step through dtn::cuda::GraphStep (deferred step, device-side guard, one graph launch)";
    Json& rows = doc["rows"] = Json::array();
    std::printf("dtn GPU benchmark: %s (%d SMs, %.1f GiB), TF32 %s, conv algorithms %s, engine %s\n", gpu.c_str(),
                sms, mem, o.tf32 ? "on" : "off", o.conv_autotune ? "timed (cudnnFind)" : "cuDNN heuristics",
                o.conv_autotune ? "cuDNN (legacy or graph API) or GEMM, whichever times faster"
                                : (o.conv_gemm ? "GEMM for every pass it takes" : "cuDNN"));
    for (const std::string& r : bench::row_names())
      std::printf("GFLOP per image, %-10s: %.4f\n", r.c_str(), bench::gflop_per_image(r));
    bench::print_header();

    EventTimer timer;
    const bench::Where at{"cuda", 0, plain_mode.c_str()};
    std::vector<int> batches = o.batches;
    std::sort(batches.begin(), batches.end());
    const bool want_step =
        !o.only_layers && std::find(o.rows.begin(), o.rows.end(), "dtn_step") != o.rows.end();
#if BENCH_HAVE_TRAINER
    // Steps first, smallest batch first: the allocator's high-water mark read after each step is
    // then that step's peak (everything earlier used less).
    if (want_step)
      for (int b : batches) {
        const std::size_t i = bench::bench_step<Cuda>(b, at, timer, o, rows);
        rows[i]["peak_mem_mb"] = bench::round_to(double(dtn::cuda::allocator_stats().peak_bytes_in_use) / (1 << 20), 0.01);
        rows[i]["peak_mem_note"] = "dtn caching allocator: peak bytes in use since process start";
        std::printf("  peak device memory after dtn_step B=%d: %.1f MiB\n", b, rows[i]["peak_mem_mb"].get<double>());
        // Of that, what each lane holds of its own (the second lane: with --conv-overlap).
        Json lanes = Json::array();
        for (int lane : {0, 1}) {
          const auto lb = dtn::cuda::context().lane_bytes(lane);
          auto mib = [](std::size_t bytes) { return bench::round_to(double(bytes) / (1 << 20), 0.01); };
          lanes.push_back({{"workspace_mb", mib(lb.workspace)}, {"scratch_mb", mib(lb.scratch)}, {"cublas_mb", mib(lb.cublas)}});
          std::printf("    lane %d: convolution workspace %.1f MiB, reduction scratch %.1f MiB, cuBLAS workspace %.1f MiB\n",
                      lane, mib(lb.workspace), mib(lb.scratch), mib(lb.cublas));
        }
        rows[i]["lanes"] = lanes;
      }
    // The whole step (D and g updates) as one CUDA graph: dtn::cuda::GraphStep runs the first
    // step eagerly, captures the second and replays after; the guard runs on the device.
    if (want_step && o.graph)
      for (int b : batches) {
        try {
          bench::StepSetup<Cuda> setup(b, o);
          dtn::cuda::GraphStep<typename bench::Trainer<Cuda>::Type> graph(setup.trainer);
          const auto xs = setup.xs.view(), xt = setup.xt.view();
          dtn::DtnLosses last = graph.step(xs, xt);  // eager
          last = graph.step(xs, xt);                 // captured, then replayed
          const bench::Stats s = timer([&] { last = graph.step(xs, xt); }, o.warmup, o.step_reps);
          nlohmann::json r =
              bench::make_row("dtn_step", "cuda", graph_mode, b, 0, s, bench::gflop_per_image("dtn_step") * b);
          r["loss_d"] = last.d;
          r["loss_g"] = last.g;
          r["captured"] = graph.captured();
          const auto nc = graph.node_counts();
          const double chain = empty_chain_ms(nc.kernels, o.step_reps);
          r["graph_nodes"] = nc.total;
          r["graph_kernel_nodes"] = nc.kernels;
          r["graph_forks"] = nc.forks;
          r["graph_concurrent_kernels"] = nc.concurrent_kernels;
          r["empty_chain_ms"] = bench::round_to(chain, 1e-4);
          std::printf(
              "  step graph at batch %d: %zu nodes (%zu kernels, %zu memsets, %zu copies, %zu other), %zu forks, "
              "%zu kernels unordered with another; a graph of as many empty kernels replays in %.3f ms\n",
              b, nc.total, nc.kernels, nc.memsets, nc.memcpys, nc.other, nc.forks, nc.concurrent_kernels, chain);
          bench::emit(rows, r);
        } catch (const dtn::error& ex) {
          std::printf("note: graph-captured dtn_step at batch %d failed: %s\n", b, ex.what());
          doc["meta"]["dtn_step_graph_error"] = ex.what();
          break;
        }
      }
#else
    if (want_step) std::printf("note: dtn_step not measured (no DomainTransfer trainer in this build)\n");
#endif
    if (!o.only_layers)
      for (int b : batches) bench::bench_net_rows<Cuda>(b, at, timer, o, rows);
    if (o.graph && !o.only_layers) {
      GraphTimer graph_timer;
      const bench::Where gat{"cuda", 0, graph_mode.c_str()};
      for (int b : batches) {
        try {
          bench::bench_net_rows<Cuda>(b, gat, graph_timer, o, rows);
        } catch (const dtn::error& ex) {
          std::printf("note: CUDA-graph rows at batch %d skipped: %s\n", b, ex.what());
          doc["meta"]["graph_error"] = ex.what();
          break;
        }
      }
    }
    bench::bench_gemm<Cuda>(o.gemm_n, at, timer, o, rows);
    if (o.layers) bench::bench_layers<Cuda>(batches.back(), at, timer, o, rows);
    if (o.layers && o.conv_gemm && !o.conv_autotune) bench_channel_ops(batches.back(), at, timer, o, rows);
#if BENCH_HAVE_TRAINER
    if (o.profile_step) {
      dtn::cuda::LayerProfile prof;
      std::printf("layer profile (CUDA events around each layer pass, eager steps):\n");
      doc["meta"]["layer_profiles"].push_back(
          bench::profile_step<Cuda>(batches.back(), at, o, prof, [&prof] { prof.collect(); }));
    }
#endif
    if (o.conv_autotune) {
      std::printf(
          "convolution choices (autotuned; times: cuDNN's cudnnFind, then the best of 3 runs of the GEMM engine\n"
          "and of the fastest graph-API plan):\n");
      for (const std::string& line : dtn::cuda::conv_choices()) std::printf("  %s\n", line.c_str());
    }
    const dtn::cuda::AllocatorStats st = dtn::cuda::allocator_stats();
    doc["meta"]["allocator"] = {{"peak_bytes_in_use", st.peak_bytes_in_use},
                                {"bytes_reserved", st.bytes_reserved},
                                {"num_cuda_malloc", st.num_cuda_malloc}};
    bench::write_json(o.json, doc);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dtn_cuda: %s\n", e.what());
    return 1;
  }
}
