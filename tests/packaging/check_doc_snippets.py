#!/usr/bin/env python3
"""Compiles and runs every ```cpp block of the given Markdown files (CTest: packaging/doc_snippets).

Each block is a complete program; it is compiled with -Wall -Wextra -Werror against the source
tree's headers and run in a scratch folder, and must exit 0. Blocks that include doctest get
doctest's main from DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN themselves.

usage: check_doc_snippets.py --cxx g++ --include DIR [--include DIR ...] [--openmp-flags FLAGS] --work DIR
                             doc.md [doc.md ...]
--openmp-flags: the compiler's OpenMP flags (default -fopenmp; "" for a build without OpenMP).
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxx", required=True)
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--work", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--openmp-flags", default="-fopenmp")
    ap.add_argument("docs", nargs="+")
    a = ap.parse_args()

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    jobs = []
    for doc in a.docs:
        text = open(doc, encoding="utf-8").read()
        base = os.path.splitext(os.path.basename(doc))[0]
        for i, m in enumerate(re.finditer(r"^```cpp\n(.*?)^```", text, re.S | re.M)):
            line = text.count("\n", 0, m.start()) + 1
            jobs.append((f"{os.path.basename(doc)}:{line}", os.path.join(a.work, f"{base}_{i}"), m.group(1)))
    if not jobs:
        print("check_doc_snippets: no ```cpp blocks found", file=sys.stderr)
        return 1

    def run(job):
        where, stem, code = job
        with open(stem + ".cpp", "w", encoding="utf-8") as f:
            f.write(code)
        scratch = stem + "_run"
        os.makedirs(scratch)
        cmd = [a.cxx, "-std=c++17", *a.openmp_flags.split(), "-O1", "-Wall", "-Wextra", "-Werror"]
        cmd += [f"-I{d}" for d in a.include] + [stem + ".cpp", "-o", stem]
        c = subprocess.run(cmd, capture_output=True, text=True)
        if c.returncode != 0:
            return where, False, "does not compile:\n" + c.stderr[-4000:]
        r = subprocess.run([stem], capture_output=True, text=True, cwd=scratch, timeout=120)
        if r.returncode != 0:
            return where, False, f"exits {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        return where, True, "compiles and runs"

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for where, ok, msg in pool.map(run, jobs):
            print(f"{'ok    ' if ok else 'FAILED'} {where}: {msg}")
            failed += 0 if ok else 1
    print(f"check_doc_snippets: {len(jobs) - failed} of {len(jobs)} blocks OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
