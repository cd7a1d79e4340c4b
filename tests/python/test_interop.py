"""Interop of dtn checkpoints with the reference `safetensors` package and numpy.

The C++ side is the helper program dtn_st_roundtrip (tests/python/st_roundtrip.cpp), found through
the environment variable DTN_ST_ROUNDTRIP (CTest sets it; see cmake/python_tests.cmake).
"""
import json
import os
import re
import struct
import subprocess

import numpy as np
import pytest
from conftest import helper_program  # noqa: E402  (tests/python/conftest.py)

safetensors_numpy = pytest.importorskip("safetensors.numpy")
from safetensors import safe_open  # noqa: E402


@pytest.fixture(scope="module")
def exe():
    return helper_program("DTN_ST_ROUNDTRIP", "dtn_st_roundtrip")


def run(exe, *args, check=True):
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{exe} {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def header_version():
    """The library's version as include/dtn/core/version.hpp writes it: "major.minor.patch"."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include", "dtn", "core", "version.hpp")
    with open(path) as fh:
        text = fh.read()
    parts = [re.search(rf"^#define DTN_VERSION_{p} (\d+)$", text, re.M) for p in ("MAJOR", "MINOR", "PATCH")]
    assert all(parts), "version.hpp has no DTN_VERSION_MAJOR/MINOR/PATCH"
    return ".".join(m.group(1) for m in parts)


def reference_tensors():
    """The tensors st_roundtrip.cpp writes, from the same formulas."""
    k = np.arange(24, dtype=np.float32)
    return {
        "opt.steps": np.array([-9007199254740993, 0, np.iinfo(np.int64).max], dtype=np.int64),
        "d.0.bias": np.arange(5, dtype=np.float64) / 3.0 - 1.0,
        "empty": np.zeros((0, 4), dtype=np.float32),
        # float32(37 k - 400) / 100: one single-precision division of exact operands, as in C++.
        "g.0.weight": ((k * np.float32(37) - np.float32(400)) / np.float32(100)).astype(np.float32).reshape(2, 3, 4),
        "scalar": np.array(-0.0, dtype=np.float32),
        "labels": np.array([[np.iinfo(np.int32).min, -1], [0, np.iinfo(np.int32).max]], dtype=np.int32),
        "image": ((np.arange(48) * 37) % 256).astype(np.uint8).reshape(3, 4, 4),
    }


def assert_bitwise_equal(got, want, name):
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    # Compare bytes: exact values, including -0.0 and NaN payloads.
    assert got.tobytes() == want.tobytes(), f"{name}: values differ\n{got}\n{want}"


def test_cpp_checkpoint_loads_in_python(exe, tmp_path):
    path = tmp_path / "cpp.safetensors"
    run(exe, "write", str(path))
    loaded = safetensors_numpy.load_file(str(path))
    want = reference_tensors()
    assert sorted(loaded) == sorted(want)
    for name, arr in want.items():
        assert_bitwise_equal(loaded[name], arr, name)
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    assert meta == {"format": "dtn", "format_version": "1", "dtn_version": header_version(), "signature": "interop-test",
                    "step": "42"}
    # The data section starts at an offset that is a multiple of 8, as the reference pads it.
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert n % 8 == 0


def test_cpp_file_is_byte_identical_to_the_reference_writer(exe, tmp_path):
    path = tmp_path / "cpp_min.safetensors"
    run(exe, "write-min", str(path))
    reference = safetensors_numpy.save(reference_tensors(), metadata={"format": "dtn"})
    assert path.read_bytes() == reference


def python_tensors():
    rng = np.random.default_rng(2017)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f32[0, :3] = [np.inf, -np.inf, -0.0]
    return {
        "g.3.weight": f32,
        "g.3.bias": rng.standard_normal(7),  # float64
        "d.steps": rng.integers(-(2**62), 2**62, size=(2, 2), dtype=np.int64),
        "labels": rng.integers(-(2**31), 2**31 - 1, size=(4,), dtype=np.int32),
        "pixels": rng.integers(0, 256, size=(2, 3, 2), dtype=np.uint8),
        "scalar": np.array(3.5, dtype=np.float64),
    }


def decode(t):
    dtype = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}[t["dtype"]]
    if t["dtype"] in ("F32", "F64"):
        values = [float.fromhex(v) for v in t["values"]]
    else:
        values = t["values"]
    return np.array(values, dtype=dtype).reshape(t["shape"])


def test_python_file_loads_in_cpp(exe, tmp_path):
    path = tmp_path / "py.safetensors"
    want = python_tensors()
    meta = {"format": "dtn", "note": "written by numpy ✓", "step": "7"}
    safetensors_numpy.save_file(want, str(path), metadata=meta)
    out = json.loads(run(exe, "read", str(path)).stdout)
    assert out["metadata"] == meta
    got = {t["name"]: decode(t) for t in out["tensors"]}
    assert sorted(got) == sorted(want)
    for name, arr in want.items():
        assert_bitwise_equal(got[name], arr, name)


def test_cpp_rejects_an_unsupported_dtype_with_a_clear_message(exe, tmp_path):
    path = tmp_path / "f16.safetensors"
    safetensors_numpy.save_file({"w": np.ones(4, dtype=np.float16)}, str(path))
    p = run(exe, "read", str(path), check=False)
    assert p.returncode == 1
    assert str(path) in p.stderr
    assert 'tensor w: dtype "F16" is not supported' in p.stderr


def test_cpp_rejects_a_tampered_python_file(exe, tmp_path):
    path = tmp_path / "tampered.safetensors"
    safetensors_numpy.save_file({"w": np.ones((2, 2), dtype=np.float32)}, str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[:-4])  # drop the last element
    p = run(exe, "read", str(path), check=False)
    assert p.returncode == 1
    assert str(path) in p.stderr
    assert "reach past the end" in p.stderr
    # The reference reader refuses it too.
    with pytest.raises(Exception):
        safetensors_numpy.load_file(str(path))
