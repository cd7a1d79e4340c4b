"""The benchmark scripts' layer-by-layer comparison (benchmarks/compare.py, torch_dtn.py --profile-step).

compare_layers: on hand-made profiles, a fused dtn pass stands for PyTorch's two layers, layers
only one side has are listed, different layer kinds are warned about, and the kind totals add up;
simd_levels: the CPU vector levels of the two sides' runs.
layer_profile (needs torch): the eager DTN step on the CPU at batch 2, every layer's forward and
backward found with the number of calls the step makes."""
import importlib.util
import os
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
