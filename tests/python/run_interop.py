"""CTest driver for test_interop.py: exit 77 (reported as skipped) when numpy, safetensors or
pytest cannot be imported; otherwise the pytest result."""
import importlib
import os
import sys

missing = []
for module in ("numpy", "safetensors", "pytest"):
    try:
        importlib.import_module(module)
    except ImportError:
        missing.append(module)
if missing:
    print(f"SKIP: python3 ({sys.executable}) cannot import {', '.join(missing)} "
          f"(pip install numpy safetensors pytest)")
    sys.exit(77)

import pytest  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
# No cache directory in the source tree.
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", os.path.join(here, "test_interop.py"),
                      os.path.join(here, "test_net_interop.py"), *sys.argv[1:]]))
