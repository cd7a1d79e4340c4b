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

    for meta in dtn_meta + torch_meta:
        desc = ", ".join(f"{k}={meta[k]}" for k in ("impl", "torch", "cpu", "cuda_device", "date")
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
    for r in dtn_rows + torch_rows:
        if "peak_mem_mb" in r:
            print(f"# peak device memory, {r.get('impl', '?')} {r.get('mode', '')} {r['name']} "
                  f"B={r['batch']}: {r['peak_mem_mb']:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
