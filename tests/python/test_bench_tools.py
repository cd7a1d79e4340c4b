"""The benchmark scripts' layer-by-layer comparison (benchmarks/compare.py, torch_dtn.py --profile-step).

compare_layers: on hand-made profiles, a fused dtn pass stands for PyTorch's two layers, layers
only one side has are listed, different layer kinds are warned about, and the kind totals add up;
simd_levels: the CPU vector levels of the two sides' runs.
layer_profile (needs torch): the eager DTN step on the CPU at batch 2, every layer's forward and
backward found with the number of calls the step makes."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks")
sys.path.insert(0, BENCH)

import compare  # noqa: E402


def row(net, layer, kind, pas, ms):
    return {"net": net, "layer": layer, "kind": kind, "pass": pas, "ms": ms, "calls": 1}


def profile(impl, rows, mode="dtn", device="cpu", threads=2, batch=64):
    return {"impl": impl, "device": device, "threads": threads, "mode": mode, "batch": batch, "steps": 3,
            "step_ms": sum(r["ms"] for r in rows) + 1.0, "in_layers_ms": sum(r["ms"] for r in rows), "rows": rows}


def parse(lines):
    """{label: (dtn ms, PyTorch ms, speed)} of the table lines ('#   label  dtn  PyTorch  speed')."""
    def num(v):
        return None if v == "-" else float(v.rstrip("x"))

    out = {}
    for line in lines:
        if not line.startswith("#   "):
            continue
        parts = line[1:].split()
        try:
            out[" ".join(parts[:-3])] = tuple(num(v) for v in parts[-3:])
        except ValueError:
            pass  # a header line
    return out


def test_fused_pass_stands_for_two_torch_layers():
    dp = profile("dtn", [row("d", 0, "Conv2d", "fwd", 4.0), row("d", 1, "BatchNorm2d+ReLU", "fwd", 2.0),
                         row("d", 1, "BatchNorm2d+ReLU", "bwd", 3.0)])
    tp = profile("torch", [row("d", 0, "Conv2d", "fwd", 8.0), row("d", 1, "BatchNorm2d", "fwd", 1.5),
                           row("d", 2, "ReLU", "fwd", 1.5), row("d", 1, "BatchNorm2d", "bwd", 2.0),
                           row("d", 2, "ReLU", "bwd", 4.0)], mode="eager")
    lines = compare.compare_layers(dp, tp)
    t = parse(lines)
    assert t["d.0 Conv2d fwd"] == (4.0, 8.0, 2.0)
    assert t["d.1 BatchNorm2d+ReLU fwd"] == (2.0, 3.0, 1.5)
    assert t["d.1 BatchNorm2d+ReLU bwd"] == (3.0, 6.0, 2.0)
    assert t["BatchNorm2d+ReLU bwd"] == (3.0, 6.0, 2.0)  # the kind total
    assert not any("WARNING" in line for line in lines)


def test_layers_one_side_has_are_listed_and_kinds_checked():
    dp = profile("dtn", [row("g", 0, "ConvTranspose2d", "fwd", 5.0), row("g", 1, "Tanh", "fwd", 1.0)])
    tp = profile("torch", [row("g", 0, "ConvTranspose2d", "fwd", 5.0), row("g", 1, "Sigmoid", "fwd", 1.0),
                           row("g", 2, "ReLU", "fwd", 0.5)], mode="eager")
    lines = compare.compare_layers(dp, tp)
    t = parse(lines)
    assert t["g.0 ConvTranspose2d fwd"] == (5.0, 5.0, 1.0)
    assert t["g.2 ReLU fwd"] == (None, 0.5, None)  # PyTorch only
    assert any("WARNING" in line and "g.1" in line and "Sigmoid" in line for line in lines)


def test_pairs_match_device_threads_batch_and_math():
    d = profile("dtn", [row("f", 0, "Conv2d", "fwd", 1.0)], batch=128)
    wrong_batch = profile("torch", [row("f", 0, "Conv2d", "fwd", 1.0)], mode="eager", batch=64)
    wrong_math = profile("torch", [row("f", 0, "Conv2d", "fwd", 1.0)], mode="eager+tf32", batch=128)
    right = profile("torch", [row("f", 0, "Conv2d", "fwd", 2.0)], mode="eager", batch=128)
    pairs = list(compare.profile_pairs([d], [wrong_batch, wrong_math, right]))
    assert pairs == [(d, right)]
    # Of repeated runs the profile with the least time in layers counts.
    slow = profile("dtn", [row("f", 0, "Conv2d", "fwd", 3.0)], batch=128)
    assert compare.layer_profiles([{"layer_profiles": [slow]}, {"layer_profiles": [d]}]) == [d]


def test_simd_levels_of_the_two_sides():
    dtn_avx2, torch_avx2 = {"impl": "dtn", "simd": "avx2"}, {"impl": "torch", "simd": "avx2"}
    assert compare.simd_levels([dtn_avx2, torch_avx2]) == ["avx2"]
    assert compare.simd_levels([{"simd": "avx512"}, torch_avx2]) == ["avx2", "avx512"]
    assert compare.simd_levels([{"simd": "baseline"}, {"simd": "default"}]) == ["baseline"]
    # bench_dtn_cuda's metadata has no level, and PyTorch's on a GPU machine does not count
    assert compare.simd_levels([{"impl": "dtn"}, {"simd": "avx512", "cuda_device": "NVIDIA H200"}]) == []


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_layer_profile_finds_every_pass():
    import argparse

    import torch_dtn

    args = argparse.Namespace(seed=1, warmup=1, threads=1, tf32=False)
    p = torch_dtn.layer_profile("cpu", 2, args, steps=2)
    assert p["batch"] == 2 and p["steps"] == 2 and p["device"] == "cpu"
    calls = {(r["net"], r["layer"], r["pass"]): r["calls"] for r in p["rows"]}
    # Per step: f 3 forward calls (1 differentiated to its input), g 2 calls, D 5 calls (3 in the
    # D update, 2 in the g update), each with a backward.
    nets = {"f": (torch_dtn.make_f(), 3, 1), "g": (torch_dtn.make_g(), 2, 2), "d": (torch_dtn.make_d(), 5, 5)}
    for net, (seq, fwd, bwd) in nets.items():
        for i in range(len(seq)):
            assert calls.get((net, i, "fwd")) == fwd, (net, i)
            assert calls.get((net, i, "bwd")) == bwd, (net, i)
    assert all(r["ms"] > 0 for r in p["rows"])
    assert 0 < p["in_layers_ms"] <= p["step_ms"]


def write_rows(path, rows, meta=None):
    with open(path, "w") as fh:
        json.dump({"meta": meta or {}, "rows": rows}, fh)


def step_row(impl, mode, ms, device="cuda", **extra):
    r = {"impl": impl, "name": "dtn_step", "device": device, "batch": 128, "threads": 0, "mode": mode,
         "median_ms": ms, "images_per_s": 128e3 / ms, "gflop": 276.7}
    r.update(extra)
    return r


def test_compile_modes_are_columns_of_their_own_and_cudagraph_skips_are_warned(tmp_path, capsys, monkeypatch):
    stats = {"graphs": 9, "graph_breaks": 0, "cudagraph_skips": 2,
             "cudagraph_skip_reasons": ["skipping cudagraphs due to mutated inputs (2 instances)"]}
    write_rows(tmp_path / "dtn.json", [step_row("dtn", "graph", 10.0)])
    write_rows(tmp_path / "torch.json", [
        step_row("torch", "eager", 15.0),
        step_row("torch", "compile", 20.0, compile_stats=dict(stats, cudagraph_skips=0, cudagraph_skip_reasons=[])),
        step_row("torch", "compile:reduce-overhead", 8.0, compile_stats=stats)])
    monkeypatch.setattr(sys, "argv", ["compare.py", str(tmp_path / "dtn.json"), "--torch", str(tmp_path / "torch.json")])
    assert compare.main() == 0
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if "dtn mode" in line).split()
    cells = next(line for line in out if line.split()[:1] == ["dtn_step"]).split()
    # name device batch thr "dtn mode" dtn-ms img/s GFLOP/s, then (ms, img/s, ratio) per PyTorch mode
    ratios = [c for c in cells if c.endswith("x")]
    assert ratios == ["1.50x", "2.00x", "0.80x"]  # eager first, then by name: compile, compile:reduce-overhead
    assert "compile:reduce-overhead" in " ".join(header)
    stat_lines = [line for line in out if line.startswith("# torch.compile")]
    assert len(stat_lines) == 2 and "9 graphs, 0 graph breaks, 2 CUDA-graph skips" in stat_lines[1]
    warnings = [line for line in out if line.startswith("# WARNING")]
    assert warnings == ["# WARNING: compile:reduce-overhead: skipping cudagraphs due to mutated inputs (2 instances)"]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_compile_rows_carry_their_mode_and_what_was_compiled(tmp_path):
    # Two batch sizes in one run: f, g and D share one code object's cache of compiled graphs, and
    # the step's 5 graphs twice exceed Dynamo's recompile limit (8), which the run treats as a
    # failure, unless each batch size starts from a fresh compiler state.
    out = tmp_path / "tc.json"
    subprocess.run([sys.executable, os.path.join(BENCH, "torch_dtn.py"), "--device", "cpu", "--modes", "compile",
                    "--compile-mode", "reduce-overhead", "--threads", "1", "--batches", "2,3", "--rows",
                    "f_fwd,dtn_step", "--warmup", "1", "--reps", "1", "--step-reps", "1", "--quiet",
                    "--json", str(out)], check=True, timeout=900)
    with open(out) as fh:
        doc = json.load(fh)
    assert doc["meta"]["notes"] == []
    rows = doc["rows"]
    assert [(r["name"], r["batch"]) for r in rows] == [("f_fwd", 2), ("dtn_step", 2), ("f_fwd", 3), ("dtn_step", 3)]
    for r in rows:
        assert r["mode"] == "compile:reduce-overhead"
        st = r["compile_stats"]
        assert st["graph_breaks"] == 0
        # No CUDA graphs on the CPU: Inductor counts every graph of a cudagraph mode as skipped there.
        assert st["cudagraph_skips"] >= 1
    # Counted per batch size: f's no-grad forward first, then the step's other graphs.
    assert rows[0]["compile_stats"]["graphs"] == rows[2]["compile_stats"]["graphs"] >= 1
    assert rows[1]["compile_stats"]["graphs"] == rows[3]["compile_stats"]["graphs"] > rows[0]["compile_stats"]["graphs"]


def test_peak_memory_lines_say_what_each_lane_holds(tmp_path, capsys, monkeypatch):
    lanes = [{"workspace_mb": 128.0, "scratch_mb": 0.5, "cublas_mb": 32.0},
             {"workspace_mb": 64.0, "scratch_mb": 0.3, "cublas_mb": 32.0}]
    write_rows(tmp_path / "dtn.json", [step_row("dtn", "tuned+tf32+joint+overlap", 4.0, peak_mem_mb=990.5, lanes=lanes)])
    write_rows(tmp_path / "torch.json", [step_row("torch", "eager", 12.0, peak_mem_mb=714.5)])
    monkeypatch.setattr(sys, "argv", ["compare.py", str(tmp_path / "dtn.json"), "--torch", str(tmp_path / "torch.json")])
    assert compare.main() == 0
    peaks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# peak device memory")]
    assert peaks == [
        "# peak device memory, dtn tuned+tf32+joint+overlap dtn_step B=128: 990.5 MiB (of which lane 0: conv "
        "workspace 128.0, scratch 0.5, cuBLAS 32.0; lane 1: conv workspace 64.0, scratch 0.3, cuBLAS 32.0 MiB)",
        "# peak device memory, torch eager dtn_step B=128: 714.5 MiB"]
