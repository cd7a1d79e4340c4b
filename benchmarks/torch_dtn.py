#!/usr/bin/env python3
"""PyTorch peer of bench_dtn: the digits DTN of /work/shared/docs/dtn-spec.md, timed in PyTorch.

Networks (PyTorch default init, no pretrained weights: timing only):
  f: conv3x3 p1 3->64, maxpool2, ReLU; ->128, maxpool2, ReLU; ->256, maxpool2, ReLU; ->128, maxpool4,
     ReLU.  3x32x32 -> 128x1x1.  Frozen: eval mode, requires_grad False (gradients still flow through
     it into g for L_CONST).
  g: convT4 s1 p0 128->512, BN, ReLU; convT4 s2 p1 ->256, BN, ReLU; ->128, BN, ReLU; ->1, tanh.
  D: conv3 s2 p1 1->128, BN, ReLU; ->256, BN, ReLU; ->512, BN, ReLU; conv4 valid ->3 logits.
  Adam lr 2e-4, betas (0.5, 0.999) for g and D.

One DTN step at batch B (B source images 3x32x32, B target images 1x32x32):
  fs = f(xs), ft = f(repeat3(xt))                     (no grad: f is frozen and its inputs are data)
  gs = g(fs), gt = g(ft)                              (G(x) = g(f(x3)); g run once per domain batch)
  D update (G fixed, G outputs detached):
    L_D = CE(D(gs.detach()),0) + CE(D(gt.detach()),1) + CE(D(xt),2)
  g update (D fixed: D's parameters do not collect gradients in this phase):
    L_G = CE(D(gs),2) + CE(D(gt),2) + 15*MSE(fs, f(repeat3(gs))) + 15*MSE(xt, gt)   (+ 0 * TV)
  g and D are applied separately to the source and target batch (separate BN batch statistics).
  Per step: f 3 forward calls (1 with backward to its input), g 2 calls, D 5 calls.

Rows: f_fwd (eval, no grad), g_fwd_bwd (on f features, loss = sum of outputs, weight grads only),
D_fwd_bwd (on target images, loss = sum of logits, weight grads only), dtn_step.
images_per_s = batch / median time (batch = per-domain batch B; a DTN step reads B source + B target).

FLOP count: conv/convT/linear MACs of every call actually run, 2 FLOP per MAC; a backward costs the
data gradient (same MACs as the forward) where the layer input requires grad plus the weight gradient
(same MACs) where the weight requires grad.  ConvT MACs are counted as the GEMM of its col2im form
(Cin*Hin*Win*Cout*k*k), i.e. including the few products that land in the cropped padding.
BN, pooling, activations, losses and Adam are not counted (they are memory-bound, not FLOP-bound).

torch.compile (--modes compile): f, g and D each wrapped by torch.compile(module, mode=--compile-mode),
as a user compiles a model; losses, backward and Adam stay eager. Rows of the default mode are
labelled "compile", others "compile:<mode>" (reduce-overhead: Inductor's code replayed as CUDA
graphs, the mode PyTorch recommends where the host side is the bound, as it is for eager here).
The compiled run fails rather than fall back to eager when Dynamo's recompile limit is hit, and
each compile row records its graphs, graph breaks and CUDA-graph skips ("compile_stats"), so a
compile row that is eager in disguise shows as such.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch._dynamo
import torch.nn as nn
import torch.nn.functional as F

ALPHA = 15.0  # L_CONST weight (digits)
BETA = 15.0   # L_TID weight (digits)
ROW_NAMES = ("f_fwd", "g_fwd_bwd", "D_fwd_bwd", "dtn_step")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


def mode_label(mode, compile_mode):
    """The row label of a mode: "eager", "compile" (default compile mode) or "compile:<mode>"."""
    if mode != "compile" or compile_mode in (None, "default"):
        return mode
    return f"compile:{compile_mode}"


class CompileWatch:
    """What torch.compile did in this process: graphs compiled, graph breaks, and the CUDA-graph
    skips of cudagraph modes (Inductor counts each; on a GPU it also logs the reason, kept here;
    on the CPU, where no graph is a CUDA graph, it counts every graph without a reason)."""

    def __init__(self):
        self.skip_reasons = []
        watch = self

        class Collect(logging.Handler):
            def emit(self, record):
                msg = record.getMessage()
                if msg not in watch.skip_reasons:
                    watch.skip_reasons.append(msg)

        self.handler = Collect(level=logging.WARNING)
        # Inductor's logger for cudagraph skips (torch._inductor.cudagraph_utils.cudagraphs_log).
        try:
            import torch._inductor.cudagraph_utils as cgu
            self.logger = cgu.cudagraphs_log
        except (ImportError, AttributeError):
            self.logger = None
        if self.logger is not None:
            self.logger.addHandler(self.handler)

    def restart(self):
        """A fresh compiler state, as in a new process (caches on disk are kept)."""
        from torch._dynamo.utils import counters
        torch._dynamo.reset()
        counters.clear()
        self.skip_reasons.clear()

    def stats(self):
        from torch._dynamo.utils import counters
        return {
            "graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"]),
            "cudagraph_skip_reasons": list(self.skip_reasons),
        }


# ----------------------------------------------------------------------------------------- networks
def make_f():
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 1, 1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(64, 128, 3, 1, 1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(128, 256, 3, 1, 1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(256, 128, 3, 1, 1), nn.MaxPool2d(4), nn.ReLU(),
    )


def make_g():
    return nn.Sequential(
        nn.ConvTranspose2d(128, 512, 4, 1, 0), nn.BatchNorm2d(512), nn.ReLU(),
        nn.ConvTranspose2d(512, 256, 4, 2, 1), nn.BatchNorm2d(256), nn.ReLU(),
        nn.ConvTranspose2d(256, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 1, 4, 2, 1), nn.Tanh(),
    )


def make_d():
    return nn.Sequential(
        nn.Conv2d(1, 128, 3, 2, 1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.Conv2d(128, 256, 3, 2, 1), nn.BatchNorm2d(256), nn.ReLU(),
        nn.Conv2d(256, 512, 3, 2, 1), nn.BatchNorm2d(512), nn.ReLU(),
        nn.Conv2d(512, 3, 4, 1, 0),
    )


def repeat3(x):
    # A contiguous copy, as dtn's repeat_channels makes: an expanded view (stride 1024 where f's
    # other input has 3072) made torch.compile build f a graph more (one recompile, no gain).
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def total_variation(z, eps):
    """dtn's L_TV of one batch (anisotropic, B = 1, smoothed): (1/N) sum over channels and pixels of
    sqrt(dh^2 + dv^2 + eps), forward differences, 0 past the last column and row."""
    dh = F.pad(z[..., :, 1:] - z[..., :, :-1], (0, 1))
    dv = F.pad(z[..., 1:, :] - z[..., :-1, :], (0, 0, 0, 1))
    return torch.sqrt(dh * dh + dv * dv + eps).sum() / z.shape[0]


class Dtn:
    """f, g, D and their optimisers; step() is one full DTN training step, in the order of dtn's
    trainer (tests/python/test_step_interop.py checks the two against each other). The benchmark
    uses the defaults; gamma > 0 adds L_TV, gamma/2 on each of G(xs) and G(xt)."""

    def __init__(self, device, compile_mode=None, lr=2e-4, betas=(0.5, 0.999), eps=1e-8,
                 gamma=0.0, tv_eps=1e-8, dtype=torch.float32, keep_terms=False):
        # Modes whose Inductor code runs as CUDA graphs (cudagraph trees): each step is marked.
        self.cudagraph_steps = compile_mode in CUDAGRAPH_MODES
        self.gamma, self.tv_eps = gamma, tv_eps
        # keep_terms: the last step's loss terms kept in self.terms, as tensors (the timed runs
        # keep nothing beyond what the step returns).
        self.keep_terms = keep_terms
        self.terms = {}
        self.f = make_f().to(device, dtype).eval()
        self.f.requires_grad_(False)
        self.g = make_g().to(device, dtype).train()
        self.d = make_d().to(device, dtype).train()
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=lr, betas=betas, eps=eps)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=lr, betas=betas, eps=eps)
        # Callables used by the step; compiled versions share parameters with the modules.
        self.fc, self.gc, self.dc = self.f, self.g, self.d
        if compile_mode is not None:
            self.fc = torch.compile(self.f, mode=compile_mode)
            self.gc = torch.compile(self.g, mode=compile_mode)
            self.dc = torch.compile(self.d, mode=compile_mode)

    def own(self, t):
        """t, or a copy of it where it is a CUDA graph's output that a later compiled call may
        overwrite. cudagraph trees start a new iteration at each compiled call made while no
        backward is pending, and the outputs of the previous one are then overwritten: so f's two
        no-grad outputs, made before any backward is pending, are copied (PyTorch's documented
        remedy; 2 x B x 128 floats). The calls after g's first have g's backward pending."""
        return t.clone() if self.cudagraph_steps else t

    def step(self, xs, xt):
        dev = xs.device
        ns, nt = xs.shape[0], xt.shape[0]  # batch sizes (equal in the benchmark: 3 label tensors)
        src0 = torch.full((ns,), 0, dtype=torch.long, device=dev)
        tgt1, tgt2 = (torch.full((nt,), k, dtype=torch.long, device=dev) for k in (1, 2))
        src2 = tgt2 if ns == nt else torch.full((ns,), 2, dtype=torch.long, device=dev)
        with torch.no_grad():
            fs = self.own(self.fc(xs))
            ft = self.own(self.fc(repeat3(xt)))
        gs = self.gc(fs)
        gt = self.gc(ft)
        # D update: G fixed.
        self.d.requires_grad_(True)
        d_source = F.cross_entropy(self.dc(gs.detach()).flatten(1), src0)
        d_target_fake = F.cross_entropy(self.dc(gt.detach()).flatten(1), tgt1)
        d_target_real = F.cross_entropy(self.dc(xt).flatten(1), tgt2)
        loss_d = d_source + d_target_fake + d_target_real
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        # g update: D fixed (no gradients for D's parameters), f frozen but differentiated through.
        # D sees the target batch first, as in dtn (the order of batch norm's running statistics).
        self.d.requires_grad_(False)
        l_gang = (F.cross_entropy(self.dc(gt).flatten(1), tgt2)
                  + F.cross_entropy(self.dc(gs).flatten(1), src2))
        l_const = F.mse_loss(self.fc(repeat3(gs)), fs)
        l_tid = F.mse_loss(gt, xt)
        loss_g = l_gang + ALPHA * l_const + BETA * l_tid
        l_tv = None
        if self.gamma > 0:
            l_tv = 0.5 * (total_variation(gs, self.tv_eps) + total_variation(gt, self.tv_eps))
            loss_g = loss_g + self.gamma * l_tv
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        if self.keep_terms:
            self.terms = {"d_source": d_source, "d_target_fake": d_target_fake, "d_target_real": d_target_real,
                          "d": loss_d, "gang": l_gang, "constancy": l_const, "tid": l_tid, "tv": l_tv, "g": loss_g}
        return loss_d, loss_g


# ------------------------------------------------------------------------------------- FLOP counting
class FlopCounter:
    """Counts conv/convT/linear MACs of every forward call, and the backward MACs the call implies."""

    def __init__(self, modules):
        self.fwd = 0
        self.bwd = 0
        self.handles = [m.register_forward_hook(self._hook) for m in modules
                        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]

    def _hook(self, mod, inputs, out):
        x = inputs[0]
        if isinstance(mod, nn.Conv2d):
            macs = out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups
        elif isinstance(mod, nn.ConvTranspose2d):
            macs = x.numel() * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups
        else:
            macs = out.numel() * mod.in_features
        self.fwd += macs
        if torch.is_grad_enabled():
            if x.requires_grad:
                self.bwd += macs  # data gradient
            if mod.weight.requires_grad:
                self.bwd += macs  # weight gradient

    def gflop(self):
        return 2.0 * (self.fwd + self.bwd) / 1e9

    def close(self):
        for h in self.handles:
            h.remove()


def count_gflop(kind, batch):
    """GFLOP of one call of benchmark `kind` at `batch`, counted on the CPU on a fresh model (cheap at
    batch 1: MACs scale linearly with the batch)."""
    m = Dtn("cpu")
    counter = FlopCounter(list(m.f.modules()) + list(m.g.modules()) + list(m.d.modules()))
    xs, xt, feats = make_inputs("cpu", 1)
    run_kind(m, kind, xs, xt, feats)
    counter.close()
    return counter.gflop() * batch, counter


# ---------------------------------------------------------------------------------------- benchmarks
def make_inputs(device, batch, seed=1234):
    gen = torch.Generator().manual_seed(seed)
    xs = (torch.rand(batch, 3, 32, 32, generator=gen) * 2 - 1).to(device)
    xt = (torch.rand(batch, 1, 32, 32, generator=gen) * 2 - 1).to(device)
    feats = torch.rand(batch, 128, 1, 1, generator=gen).to(device)  # f outputs are post-ReLU, >= 0
    return xs, xt, feats


def run_kind(m, kind, xs, xt, feats):
    if m.cudagraph_steps:
        # A new iteration for cudagraph trees: outputs of the previous call may be overwritten.
        torch.compiler.cudagraph_mark_step_begin()
    if kind == "f_fwd":
        with torch.no_grad():
            return m.fc(xs)
    if kind == "g_fwd_bwd":
        m.g.zero_grad(set_to_none=True)
        out = m.gc(feats)
        out.sum().backward()
        return out
    if kind == "D_fwd_bwd":
        m.d.requires_grad_(True)
        m.d.zero_grad(set_to_none=True)
        out = m.dc(xt)
        out.sum().backward()
        return out
    if kind == "dtn_step":
        return m.step(xs, xt)
    raise ValueError(f"unknown benchmark {kind!r}")


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device, warmup, reps):
    """Median wall time in ms of fn() over reps runs, after warmup runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    if device == "cuda":
        for _ in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def bench_device(args, device, mode, flops, on_row=None):
    rows = []
    threads = args.threads if device == "cpu" else 0
    compile_mode = args.compile_mode if mode == "compile" else None
    label = mode_label(mode, compile_mode) + ("+tf32" if args.tf32 else "")
    watch = CompileWatch() if compile_mode is not None else None
    for batch in args.batches:
        if watch is not None:
            # Each batch size compiles from scratch, as its own process would: f, g and D share
            # one code object's cache, and a second batch size (recompiled with a dynamic batch
            # dimension) would exceed Dynamo's recompile limit of 8 entries (the run would fail).
            watch.restart()
        torch.manual_seed(args.seed)
        m = Dtn(device, compile_mode)
        xs, xt, feats = make_inputs(device, batch, args.seed)
        for kind in args.rows:
            reps = args.step_reps if kind == "dtn_step" else args.reps
            if device == "cuda" and kind == "dtn_step":
                sync(device)
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            med, times = time_ms(lambda: run_kind(m, kind, xs, xt, feats), device, args.warmup, reps)
            wall = time.perf_counter() - t0
            gflop = flops[kind] * batch
            row = {
                "impl": "torch", "name": kind, "device": device,
                "mode": label, "batch": batch,
                "threads": threads, "median_ms": round(med, 4),
                "min_ms": round(min(times), 4), "max_ms": round(max(times), 4), "reps": reps,
                "images_per_s": round(batch * 1e3 / med, 2),
                "gflop": round(gflop, 4), "gflops": round(gflop * 1e3 / med, 2),
            }
            if device == "cuda" and kind == "dtn_step":
                row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 2)
            if watch is not None:
                # Counts of this batch size's run so far (its rows are timed in turn).
                row["compile_stats"] = watch.stats()
            rows.append(row)
            if on_row is not None:
                on_row(rows)
            print(f"  {device:4s} {label:7s} {kind:10s} B={batch:3d}  {med:9.3f} ms  "
                  f"({len(times)} reps, {wall:.1f} s incl. warm-up)", file=sys.stderr, flush=True)
            if watch is not None:
                st = row["compile_stats"]
                print(f"  {label}: {st['graphs']} graphs, {st['graph_breaks']} graph breaks, "
                      f"{st['cudagraph_skips']} CUDA-graph skips at batch {batch} so far"
                      + "".join(f"\n    skip: {r}" for r in st["cudagraph_skip_reasons"]),
                      file=sys.stderr, flush=True)
        del m
    return rows


LAYER_TAG = "layer:"
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "


def layer_profile(device, batch, args, steps=3):
    """The DTN step at one batch size broken down layer by layer, as bench_dtn --profile-step does.

    Each layer's forward runs inside a profiler range named after it (forward pre/post hooks); a
    backward node is the layer's whose forward op has the node's sequence number.  Time per pass:
    the CPU time of the range or node on the CPU, the time of the kernels launched in it on CUDA
    (CUPTI; dtn's GPU profile puts CUDA events around each pass, which also counts the gaps
    between kernels).  Returns the profile for the JSON metadata ("layer_profiles")."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    torch.manual_seed(args.seed)
    m = Dtn(device)
    xs, xt, _ = make_inputs(device, batch, args.seed)
    for _ in range(max(args.warmup, 1)):
        m.step(xs, xt)
    sync(device)

    def enter(tag):
        def hook(mod, inputs):
            mod._dtn_range = record_function(tag)
            mod._dtn_range.__enter__()
        return hook

    def leave(mod, inputs, out):
        mod._dtn_range.__exit__(None, None, None)

    handles = []
    for net, seq in (("f", m.f), ("g", m.g), ("d", m.d)):
        for i, mod in enumerate(seq):
            tag = f"{LAYER_TAG}{net}:{i}:{type(mod).__name__}"
            handles += [mod.register_forward_pre_hook(enter(tag)), mod.register_forward_hook(leave)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    try:
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for _ in range(steps):
                m.step(xs, xt)
            sync(device)
            wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    finally:
        for h in handles:
            h.remove()

    def ms(e):
        if device == "cpu":
            return e.cpu_time_total / 1e3
        t = getattr(e, "device_time_total", None)
        return (t if t is not None else e.cuda_time_total) / 1e3

    # Host-side events only: with CUDA on, each profiler range also appears as a device-side
    # annotation of the same name (its time the span from first to last kernel), which would count
    # every forward twice.
    events = [e for e in prof.events() if e.device_type == DeviceType.CPU]
    rows, layer_of = {}, {}

    def add(net, layer, kind, pas, t):
        r = rows.setdefault((net, layer, pas), {"net": net, "layer": layer, "kind": kind, "pass": pas,
                                                "ms": 0.0, "calls": 0})
        r["ms"] += t
        r["calls"] += 1

    for e in events:
        if not e.name.startswith(LAYER_TAG):
            continue
        net, layer, kind = e.name[len(LAYER_TAG):].split(":")
        add(net, int(layer), kind, "fwd", ms(e))
        stack = list(e.cpu_children)
        while stack:
            c = stack.pop()
            if c.sequence_nr >= 0:
                layer_of[(c.thread, c.sequence_nr)] = (net, int(layer), kind)
            stack.extend(c.cpu_children)
    for e in events:
        if e.name.startswith(BACKWARD_PREFIX) and e.sequence_nr >= 0:
            owner = layer_of.get((e.fwd_thread, e.sequence_nr))
            if owner is not None:
                add(*owner, "bwd", ms(e))
    out = sorted(rows.values(), key=lambda r: -r["ms"])
    for r in out:
        r["ms"] /= steps
        r["calls"] /= steps
    in_layers = sum(r["ms"] for r in out)
    if not out or in_layers <= 0:
        # E.g. CUPTI unavailable: the profiler only warns and every kernel time reads 0.
        raise RuntimeError(f"the profiler attributed no time to any layer on {device}")
    return {"impl": "torch", "device": device, "threads": args.threads if device == "cpu" else 0,
            "mode": "eager" + ("+tf32" if args.tf32 else ""), "batch": batch, "steps": steps,
            "step_ms": wall_ms, "in_layers_ms": in_layers,
            "time": "CPU time per pass" if device == "cpu" else "kernel time per pass (CUPTI)",
            "rows": out}


def print_profile(p, file=sys.stdout):
    print(f"layer profile, PyTorch {p['mode']} on {p['device']}, batch {p['batch']}, mean of {p['steps']} steps "
          f"(profiler on): {p['step_ms']:.2f} ms per step, {p['time']} in layers {p['in_layers_ms']:.2f} ms",
          file=file)
    for r in p["rows"][:25]:
        print(f"  {r['net']}.{r['layer']} {r['kind']:<16s} {r['pass']} {r['ms']:10.3f} ms  ({r['calls']:g} calls)",
              file=file)


def run_compile_subprocess(args, device):
    """torch.compile can take a minute or hang on a bad toolchain: run it in a child with a timeout."""
    out = args.json + f".compile-{device}.tmp.json" if args.json else f"/tmp/torch_dtn_compile_{os.getpid()}.json"
    cmd = [sys.executable, os.path.abspath(__file__), "--device", device, "--modes", "compile",
           "--no-child", "--json", out, "--threads", str(args.threads),
           "--batches", ",".join(map(str, args.batches)), "--rows", ",".join(args.rows),
           "--warmup", str(args.warmup), "--reps", str(args.reps), "--step-reps", str(args.step_reps),
           "--seed", str(args.seed), "--compile-mode", args.compile_mode, "--quiet"]
    if args.tf32:
        cmd.append("--tf32")
    note = None
    try:
        subprocess.run(cmd, check=True, timeout=args.compile_timeout)
    except subprocess.TimeoutExpired:
        note = f"torch.compile on {device} exceeded {args.compile_timeout} s: remaining compile rows skipped"
    except (subprocess.CalledProcessError, OSError) as e:
        note = f"torch.compile on {device} failed ({e}): remaining compile rows skipped"
    # The child rewrites its JSON after every row, so rows finished before a timeout are kept.
    try:
        with open(out) as fh:
            rows = json.load(fh)["rows"]
        os.remove(out)
    except (OSError, ValueError, KeyError):
        rows = []
    return rows, note


def write_json(path, meta, rows, indent=None):
    with open(path, "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=indent)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(rows):
    hdr = f"{'impl':6s} {'name':10s} {'device':6s} {'mode':8s} {'batch':>5s} {'thr':>3s} " \
          f"{'median ms':>10s} {'images/s':>10s} {'GFLOP':>8s} {'GFLOP/s':>8s}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['impl']:6s} {r['name']:10s} {r['device']:6s} {r['mode']:8s} {r['batch']:5d} "
              f"{r['threads']:3d} {r['median_ms']:10.3f} {r['images_per_s']:10.1f} {r['gflop']:8.2f} "
              f"{r['gflops']:8.1f}" + (f"  peak {r['peak_mem_mb']:.1f} MiB" if "peak_mem_mb" in r else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto: cpu, plus cuda when available")
    ap.add_argument("--modes", default=None,
                    help="comma list of eager,compile (default: eager on cpu; eager,compile on cuda)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the CPU rows")
    ap.add_argument("--batches", default="64,128")
    ap.add_argument("--rows", default=",".join(ROW_NAMES))
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=None, help="timed runs per row (default cpu 7, cuda 30)")
    ap.add_argument("--step-reps", type=int, default=None,
                    help="timed runs of dtn_step (default cpu 5, cuda 20)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in cuDNN and cuBLAS (default off)")
    ap.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                    help="torch.compile mode (rows of modes other than default are labelled "
                         "compile:<mode>)")
    ap.add_argument("--compile-timeout", type=int, default=150,
                    help="seconds allowed for the whole torch.compile run before it is skipped")
    ap.add_argument("--json", default=None, help="write the rows and metadata here")
    ap.add_argument("--no-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quiet", action="store_true", help="no table on stdout")
    ap.add_argument("--profile-step", action="store_true",
                    help="also break the eager DTN step at the largest batch down layer by layer "
                         "(torch.profiler), for compare.py to set beside bench_dtn --profile-step")
    args = ap.parse_args()

    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.rows = [r for r in args.rows.split(",") if r]
    for r in args.rows:
        if r not in ROW_NAMES:
            ap.error(f"--rows: unknown row {r!r} (known: {', '.join(ROW_NAMES)})")
    if args.threads < 1:
        ap.error("--threads must be >= 1")

    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    torch.set_num_threads(args.threads)
    # A compiled function that hits Dynamo's recompile limit runs eagerly from then on, silently:
    # here that is an error, so that no compile row is an eager one.
    for flag in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(torch._dynamo.config, flag):
            setattr(torch._dynamo.config, flag, True)
            break

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" \
        else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("torch_dtn.py: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2

    flops = {}
    breakdown = {}
    for kind in ROW_NAMES:
        per_image, counter = count_gflop(kind, 1)
        flops[kind] = per_image
        breakdown[kind] = {"fwd_gflop_per_image": 2e-9 * counter.fwd, "bwd_gflop_per_image": 2e-9 * counter.bwd}

    rows, notes, profiles = [], [], []
    for device in devices:
        modes = args.modes.split(",") if args.modes else (["eager"] if device == "cpu" else ["eager", "compile"])
        reps = args.reps if args.reps is not None else (7 if device == "cpu" else 30)
        step_reps = args.step_reps if args.step_reps is not None else (5 if device == "cpu" else 20)
        for mode in modes:
            a = argparse.Namespace(**vars(args))
            a.reps, a.step_reps = reps, step_reps
            if mode == "compile" and not args.no_child:
                got, note = run_compile_subprocess(a, device)
                rows += got
                if note:
                    notes.append(note)
                    print("torch_dtn.py: " + note, file=sys.stderr)
            elif mode in ("eager", "compile"):
                done = list(rows)

                def save_partial(new_rows, done=done):
                    # A child run (--no-child) saves after every row for its parent's timeout.
                    if args.no_child and args.json:
                        write_json(args.json, {}, done + new_rows)
                rows += bench_device(a, device, mode, flops, save_partial)
                if mode == "eager" and args.profile_step:
                    # A profiler that cannot start (no CUPTI, say) costs the profile, not the rows:
                    # they are on disk before it starts (also against a time limit or a crash).
                    if args.json:
                        write_json(args.json, {"impl": "torch", "notes": ["written before the layer profile"]}, rows)
                    try:
                        profiles.append(layer_profile(device, max(args.batches), a))
                        print_profile(profiles[-1], sys.stdout if not args.quiet else sys.stderr)
                    except Exception as e:  # noqa: BLE001 (any profiler failure)
                        notes.append(f"layer profile on {device} failed: {type(e).__name__}: {e}")
                        print("torch_dtn.py: " + notes[-1], file=sys.stderr)
            else:
                ap.error(f"--modes: unknown mode {mode!r}")

    meta = {
        "impl": "torch", "torch": torch.__version__, "python": platform.python_version(),
        "cpu": cpu_model(), "threads": args.threads, "tf32": args.tf32,
        # ATen's vector level; ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA lower it (run_cpu.sh ISA=avx2).
        "simd": torch.backends.cpu.get_cpu_capability().lower(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "cudnn_benchmark": True, "compile_mode": args.compile_mode,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "notes": notes,
        # Other processes on a shared box skew CPU timings: the load average says how busy it was.
        "loadavg_after": list(os.getloadavg()),
        "gflop_per_image": flops, "gflop_breakdown_per_image": breakdown,
        "gflop_per_dtn_step": {str(b): flops["dtn_step"] * b for b in args.batches},
        "layer_profiles": profiles,
    }
    if args.json:
        write_json(args.json, meta, rows, indent=1)
    if not args.quiet:
        print(f"PyTorch {torch.__version__}, CPU: {meta['cpu']}, threads {args.threads}, TF32 {args.tf32}"
              + (f", GPU: {meta['cuda_device']}" if meta["cuda_device"] else ""))
        for kind in ROW_NAMES:
            b = breakdown[kind]
            print(f"GFLOP per image, {kind:10s}: {flops[kind]:.4f} "
                  f"(forward {b['fwd_gflop_per_image']:.4f}, backward {b['bwd_gflop_per_image']:.4f})")
        for b in args.batches:
            print(f"GFLOP per DTN step at batch {b}: {flops['dtn_step'] * b:.2f}")
        print_table(rows)
        for n in notes:
            print("note: " + n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
