"""CTest driver for test_interop.py, test_net_interop.py and test_step_interop.py, and for
test_bench_tools.py.

  run_interop.py          every test but the comparisons with PyTorch; exit 77 (reported as
                          skipped) when numpy, safetensors or pytest cannot be imported
  run_interop.py --torch  only the comparisons with PyTorch (a network's forward, a whole DTN
                          step); exit 77 when torch cannot be imported
  run_interop.py --bench [--torch]
                          test_bench_tools.py (the benchmark scripts' layer comparison): without
                          --torch the tests that need only pytest, with --torch the two that run
                          PyTorch (its profiler, and torch.compile on the CPU)

Other arguments go to pytest (CTest gives each entry its own --basetemp). A passed test's
temporary directory is removed when it ends, a failed one's kept.

Under this driver (DTN_INTEROP_STRICT=1) a helper program the build should have made but that is
missing fails its tests instead of skipping them, and a test that skips anyway makes the run
exit 77, so that a skip never reads as a pass in CTest's summary."""
import importlib
import os
import sys

torch_only = "--torch" in sys.argv[1:]
bench = "--bench" in sys.argv[1:]
args = [a for a in sys.argv[1:] if a not in ("--torch", "--bench")]
missing = []
needed = ("pytest",) if bench else ("numpy", "safetensors", "pytest")
for module in needed + (("torch",) if torch_only else ()):
    try:
        importlib.import_module(module)
    except ImportError:
        missing.append(module)
if missing:
    print(f"SKIP: python3 ({sys.executable}) cannot import {', '.join(missing)} "
          f"(pip install {' '.join(missing)})")
    sys.exit(77)

import pytest  # noqa: E402


class Outcomes:
    def __init__(self):
        self.skipped = []

    def pytest_runtest_logreport(self, report):
        if report.skipped:
            self.skipped.append(report.nodeid)


os.environ["DTN_INTEROP_STRICT"] = "1"
# pytest makes --basetemp itself (emptied first) but not its parent.
for a in args:
    if a.startswith("--basetemp="):
        os.makedirs(os.path.dirname(os.path.abspath(a[len("--basetemp="):])), exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))
outcomes = Outcomes()
# No cache directory in the source tree; -rs prints every skip's reason. A passed test's tmp_path
# is removed when it ends (pytest >= 7.3), a failed one's kept: the DTN step comparisons write
# 29-65 MB checkpoints per draw, 6.5 GB a run of python/interop_torch, and CI runs it in four
# build trees on one disk.
torch_tests = ("(torch_layer_profile or torch_compile_rows)" if bench
               else "(same_forward_as_pytorch or step_interop)")
selection = torch_tests if torch_only else "not " + torch_tests
files = ["test_bench_tools.py"] if bench else ["test_interop.py", "test_net_interop.py", "test_step_interop.py"]
rc = pytest.main(["-q", "-rs", "-p", "no:cacheprovider", "-o", "tmp_path_retention_policy=failed",
                  "-k", selection,
                  *(os.path.join(here, f) for f in files), *args],
                 plugins=[outcomes])
if rc == 0 and outcomes.skipped:
    print(f"SKIP: {len(outcomes.skipped)} test(s) skipped: {', '.join(outcomes.skipped)}")
    sys.exit(77)
sys.exit(int(rc))
