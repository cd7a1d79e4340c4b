#!/usr/bin/env python3
"""Merge bench_dtn / bench_dtn_cuda JSON with torch_dtn.py JSON into one table.

Rows are matched on (name, device, batch, threads); CUDA rows carry threads 0.  A row found in
several files (repeated runs) counts once, with its fastest time by --stat.  For each dtn row the
table shows the speed of every PyTorch mode found for the same key and the ratio
dtn images/s / PyTorch images/s (> 1: dtn is faster).  Modes labelled +tf32 (TF32 tensor-core
math allowed) are compared only with +tf32 modes, exact FP32 only with exact FP32.

usage: compare.py DTN.json [DTN2.json ...] --torch TORCH.json [TORCH2.json ...] [--markdown]
"""

import argparse
import json
import sys


MAIN_ROWS = ("f_fwd", "g_fwd_bwd", "D_fwd_bwd", "dtn_step")


def load(paths):
    rows, metas = [], []
    for p in paths:
        try:
            with open(p) as fh:
                doc = json.load(fh)
        except (OSError, ValueError) as e:
            sys.exit(f"compare.py: cannot read {p}: {e}")
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            sys.exit(f"compare.py: {p}: expected an object with a 'rows' list")
        for i, r in enumerate(doc["rows"]):
            missing = [k for k in ("name", "device", "batch", "threads", "median_ms", "images_per_s")
                       if k not in r]
            if missing:
                sys.exit(f"compare.py: {p}: row {i} lacks {', '.join(missing)}")
        rows += doc["rows"]
        metas.append(doc.get("meta", {}))
    return rows, metas


def key(r):
    return (r["name"], r["device"], int(r["batch"]), int(r["threads"]))


def tf32(mode):
    """Whether a mode label says TF32 math: such rows are compared only with each other."""
    return "tf32" in (mode or "").split("+")


def fmt_ratio(x):
    return f"{x:.2f}x" if x is not None else "-"


def simd_levels(metas):
    """The CPU vector levels the runs of the metadata used (bench_dtn's compiled level, PyTorch's
    ATen capability; ATen's "default" is bench_dtn's "baseline"), sorted. A fair CPU comparison has
    one: run_cpu.sh ISA=avx2 lowers both sides. Runs on a GPU machine are not counted."""
    return sorted({{"default": "baseline"}.get(m["simd"], m["simd"]) for m in metas
                   if m.get("simd") and not m.get("cuda_device")})


def layer_profiles(metas):
    """The layer profiles (bench_dtn --profile-step, torch_dtn.py --profile-step) in the metadata;
    of several for the same device, threads, batch and mode (repeated runs) the one with the least
    time in layers."""
    best = {}
    for meta in metas:
        for p in meta.get("layer_profiles") or []:
            if not (isinstance(p, dict) and isinstance(p.get("rows"), list) and "batch" in p and "device" in p):
                continue
            k = (p["device"], int(p.get("threads", 0)), int(p["batch"]), p.get("mode", ""))
            if k not in best or p["in_layers_ms"] < best[k]["in_layers_ms"]:
                best[k] = p
    return [best[k] for k in sorted(best)]


def compare_layers(dp, tp, longest=20):
    """Lines setting dtn's profile dp beside PyTorch's tp, pass by pass and per layer kind.

    A dtn pass of fused layers ("BatchNorm2d+ReLU" at index i) stands for PyTorch's layers i and
    i+1 together.  speed = PyTorch ms / dtn ms (> 1: dtn is faster)."""
    torch_by = {(r["net"], int(r["layer"]), r["pass"]): r for r in tp["rows"]}
    used, rows, warnings = set(), [], []
    for r in dp["rows"]:
        kinds = r["kind"].split("+")
        keys = [(r["net"], int(r["layer"]) + i, r["pass"]) for i in range(len(kinds))]
        found = [torch_by[k] for k in keys if k in torch_by]
        used.update(keys)
        t_ms = sum(x["ms"] for x in found) if len(found) == len(keys) else None
        if found and [x["kind"] for x in found] != kinds[:len(found)]:
            warnings.append(f"{r['net']}.{r['layer']} {r['pass']}: dtn {r['kind']}, PyTorch "
                            + "+".join(x["kind"] for x in found))
        rows.append((f"{r['net']}.{r['layer']} {r['kind']}", r["kind"], r["pass"], float(r["ms"]), t_ms))
    for k, r in torch_by.items():
        if k not in used:
            rows.append((f"{r['net']}.{r['layer']} {r['kind']}", r["kind"], r["pass"], None, float(r["ms"])))

    def cell(x):
        return f"{x:9.3f}" if x is not None else f"{'-':>9s}"

    def speed(d, t):
        return f"{t / d:6.2f}x" if d and t is not None else f"{'-':>7s}"

    where = f"{dp['device']}" + (f", {dp['threads']} thr" if dp["device"] == "cpu" else "")
    lines = [f"# per layer, DTN step at batch {dp['batch']} on {where}: dtn {dp['mode']} "
             f"(step {dp['step_ms']:.2f} ms, in layers {dp['in_layers_ms']:.2f}) vs PyTorch {tp['mode']} "
             f"(step {tp['step_ms']:.2f} ms with the profiler on, in layers {tp['in_layers_ms']:.2f}; "
             f"{tp.get('time', 'time per pass')}); ms per step, speed = PyTorch ms / dtn ms"]
    kinds = {}
    for _, kind, pas, d, t in rows:
        k = kinds.setdefault((kind, pas), [0.0, 0.0])
        k[0] += d or 0.0
        k[1] += t or 0.0
    lines.append(f"#   {'kind and pass':<26s} {'dtn':>9s} {'PyTorch':>9s} {'speed':>7s}")
    for (kind, pas), (d, t) in sorted(kinds.items(), key=lambda kv: -max(kv[1])):
        lines.append(f"#   {kind + ' ' + pas:<26s} {cell(d)} {cell(t)} {speed(d, t)}")
    lines.append(f"#   {'layer pass (longest first)':<26s} {'dtn':>9s} {'PyTorch':>9s} {'speed':>7s}")
    top = sorted(rows, key=lambda r: -max(r[3] or 0.0, r[4] or 0.0))[:longest]
    for label, _, pas, d, t in top:
        lines.append(f"#   {label + ' ' + pas:<26s} {cell(d)} {cell(t)} {speed(d, t)}")
    if len(rows) > longest:
        lines.append(f"#   ({len(rows) - longest} shorter layer passes left out)")
    for w in warnings:
        lines.append(f"# WARNING: layer kinds differ: {w}")
    return lines


def profile_pairs(dtn_profiles, torch_profiles):
    """Each dtn profile with the PyTorch profile of the same device, threads, batch and math."""
    for dp in dtn_profiles:
        for tp in torch_profiles:
            if (tp["device"] == dp["device"] and int(tp["batch"]) == int(dp["batch"])
                    and int(tp.get("threads", 0)) == int(dp.get("threads", 0))
                    and tf32(tp.get("mode", "")) == tf32(dp.get("mode", ""))):
                yield dp, tp
                break


def main():
    ap = argparse.ArgumentParser(description="dtn vs PyTorch comparison table")
    ap.add_argument("dtn", nargs="*", help="JSON files written by bench_dtn / bench_dtn_cuda")
    ap.add_argument("--torch", nargs="+", required=True, help="JSON files written by torch_dtn.py")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="compare median times (default) or best times (min: least disturbed by other "
                         "processes on a shared machine)")
    args = ap.parse_args()

    stat = args.stat

    def ms(r):
        return float(r.get(f"{stat}_ms", r["median_ms"]))

    def best_of(rows):
        # The same row measured in several runs (several JSON files): keep the fastest by --stat.
        best = {}
        for r in rows:
            k = (key(r), r.get("mode", ""))
            if k not in best or ms(r) < ms(best[k]):
                best[k] = r
        return list(best.values())

    dtn_all, dtn_meta = load(args.dtn)
    dtn_all = best_of(dtn_all)
    # GEMM references and per-layer rows have no PyTorch peer: summarised after the main table.
    dtn_rows = [r for r in dtn_all if r["name"] in MAIN_ROWS]
    extra = [r for r in dtn_all if r["name"] not in MAIN_ROWS]
    torch_rows, torch_meta = load(args.torch)
    torch_rows = best_of(torch_rows)
    modes = sorted({r.get("mode", "eager") for r in torch_rows}, key=lambda m: (m != "eager", m))
    by_key = {}
    for r in torch_rows:
        by_key[(key(r), r.get("mode", "eager"))] = r


    def ips(r):
        return int(r["batch"]) * 1e3 / ms(r)

    cols = ["name", "device", "batch", "thr", "dtn mode", f"dtn {stat} ms", "dtn img/s", "dtn GFLOP/s"]
    for m in modes:
        cols += [f"torch {m} ms", f"torch {m} img/s", f"ratio vs {m}"]
    table, warnings = [], []
    order = {"f_fwd": 0, "g_fwd_bwd": 1, "D_fwd_bwd": 2, "dtn_step": 3}
    for r in sorted(dtn_rows, key=lambda r: (r["device"], int(r["threads"]), int(r["batch"]),
                                             order.get(r["name"], 9), r.get("mode", ""))):
        line = [r["name"], r["device"], str(r["batch"]), str(r["threads"]), r.get("mode", "-"),
                f"{ms(r):.2f}", f"{ips(r):.1f}",
                f"{r['gflop'] * 1e3 / ms(r):.1f}" if "gflop" in r else "-"]
        for m in modes:
            t = by_key.get((key(r), m))
            if t is None or tf32(m) != tf32(r.get("mode", "")):
                line += ["-", "-", "-"]
            else:
                line += [f"{ms(t):.2f}", f"{ips(t):.1f}", fmt_ratio(ips(r) / ips(t))]
                # Both sides count FLOPs by the same rules; a mismatch means the networks differ.
                if "gflop" in r and "gflop" in t and abs(r["gflop"] - t["gflop"]) > 1e-3 * max(t["gflop"], 1e-9):
                    warnings.append(f"{r['name']} B={r['batch']}: dtn counts {r['gflop']:.4f} GFLOP, "
                                    f"PyTorch {t['gflop']:.4f}")
        table.append(line)
    # PyTorch rows with no dtn counterpart still get listed, so nothing measured is hidden.
    dtn_keys = {(key(r), tf32(r.get("mode", ""))) for r in dtn_rows}
    for (k, m), t in sorted(by_key.items()):
        if (k, tf32(m)) not in dtn_keys:
            line = [k[0], k[1], str(k[2]), str(k[3]), "-", "-", "-", "-"]
            for mm in modes:
                line += ([f"{ms(t):.2f}", f"{ips(t):.1f}", "-"] if mm == m else ["-", "-", "-"])
            table.append(line)

    levels = simd_levels(dtn_meta + torch_meta)
    if len(levels) > 1:
        print(f"compare.py: warning: the two sides ran at different SIMD levels: {levels}", file=sys.stderr)
    for meta in dtn_meta + torch_meta:
        desc = ", ".join(f"{k}={meta[k]}" for k in ("impl", "torch", "cpu", "simd", "onednn_max_cpu_isa",
                                                         "cuda_device", "date")
                         if meta.get(k))
        if desc:
            print(f"# {desc}")
    if args.markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join("---" for _ in cols) + "|")
        for line in table:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(c), *(len(l[i]) for l in table)) if table else len(c) for i, c in enumerate(cols)]
        print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
        print("  ".join("-" * w for w in widths))
        for line in table:
            print("  ".join(v.rjust(w) for v, w in zip(line, widths)))
    gemm = [r for r in extra if r["name"].startswith("gemm_")]
    for r in gemm:
        math = " TF32" if tf32(r.get("mode", "")) else ""
        print(f"# GEMM reference {r['name']}{math} ({r['device']}, {r['threads']} thr): median "
              f"{r['gflops']:.1f} GFLOP/s, best {r.get('gflops_best', r['gflops']):.1f} GFLOP/s")
    layers = [r for r in extra if r["name"].startswith("layer:") and r["name"].endswith(":fwd")
              and "pct_of_gemm_best" in r]
    if layers:
        print("# conv layer forward, % of the GEMM reference (best runs; target >= 60% of Eigen's GEMM on the CPU);")
        print("# where measured, / % of Eigen's GEMM, and [memory time as % of the time: near 100% = bound by memory traffic]:")
        for (dev, thr, mode) in sorted({(r["device"], r["threads"], r.get("mode", "")) for r in layers}):
            def cell(r):
                c = f"{r['name'][6:-4]} {r['pct_of_gemm_best']:.0f}%"
                if "pct_of_eigen_gemm_best" in r:
                    c += f" / {r['pct_of_eigen_gemm_best']:.0f}%"
                if "pct_of_mem_time" in r:
                    c += f" [{r['pct_of_mem_time']:.0f}%]"
                return c
            cells = [cell(r) for r in layers
                     if r["device"] == dev and r["threads"] == thr and r.get("mode", "") == mode]
            label = f" {mode}" if mode not in ("", "dtn") else ""
            print(f"#   {dev} {thr} thr{label}: " + ", ".join(cells))
    ops = [r for r in extra if r["name"].startswith("op:") and "gbs_best" in r]
    copies = [r for r in extra if r["name"] == "copy_d2d" and "gbs_best" in r]
    if ops:
        ref = f" (device-to-device copy {copies[0]['gbs_best']:.0f} GB/s)" if copies else ""
        print(f"# per-channel ops, best time and GB/s of compulsory traffic, % of copy{ref}:")
        for r in ops:
            print(f"#   {r['name'][3:]:<24} B={r['batch']}: {r['us_best']:8.2f} us  {r['gbs_best']:7.0f} GB/s"
                  f"  {r.get('pct_of_copy', 0):5.1f}%")
    for w in sorted(set(warnings)):
        print("# WARNING: FLOP counts differ: " + w)
    for dp, tp in profile_pairs(layer_profiles(dtn_meta), layer_profiles(torch_meta)):
        for line in compare_layers(dp, tp):
            print(line)
    for r in torch_rows:
        st = r.get("compile_stats")
        if st is None:
            continue
        print(f"# torch.compile, {r.get('mode', '')} {r['name']} B={r['batch']}: {st['graphs']} graphs, "
              f"{st['graph_breaks']} graph breaks, {st['cudagraph_skips']} CUDA-graph skips (counts of its run)")
        # A cudagraph mode whose graphs were skipped ran (partly) without CUDA graphs: say so and why.
        if r["device"] == "cuda" and st["cudagraph_skips"]:
            for reason in st.get("cudagraph_skip_reasons") or ["(reason not logged)"]:
                print(f"# WARNING: {r.get('mode', '')}: {reason}")
    for r in dtn_rows + torch_rows:
        if "peak_mem_mb" in r:
            # dtn's rows also say what each of its two lanes holds of its own (bench_dtn_cuda).
            held = "; ".join(f"lane {i}: conv workspace {lane['workspace_mb']:.1f}, scratch "
                             f"{lane['scratch_mb']:.1f}, cuBLAS {lane['cublas_mb']:.1f}"
                             for i, lane in enumerate(r.get("lanes", [])))
            print(f"# peak device memory, {r.get('impl', '?')} {r.get('mode', '')} {r['name']} "
                  f"B={r['batch']}: {r['peak_mem_mb']:.1f} MiB" + (f" (of which {held} MiB)" if held else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
