"""A dtn network in Python: its checkpoint opens with safetensors + numpy under the names and shapes
torch.nn.Sequential gives the same modules, and weights written by numpy drive dtn's forward pass
to the value a numpy implementation of the same network computes (and PyTorch's, where installed).

The C++ side is tests/python/net_interop.cpp (path in $DTN_NET_INTEROP)."""
import json
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from conftest import helper_program  # noqa: E402  (tests/python/conftest.py)

# The names and shapes nn.Sequential(Conv2d(3, 4, 3, padding=1), BatchNorm2d(4), ReLU(), MaxPool2d(2),
# ConvTranspose2d(4, 2, 4, stride=2, padding=1), Tanh(), Flatten(), Linear(72, 5)).state_dict()
# has (without BatchNorm's num_batches_tracked), prefixed with the network's name.
TORCH_STATE = {
    "0.weight": (4, 3, 3, 3), "0.bias": (4,),
    "1.weight": (4,), "1.bias": (4,), "1.running_mean": (4,), "1.running_var": (4,),
    "4.weight": (4, 2, 4, 4), "4.bias": (2,),
    "7.weight": (5, 72), "7.bias": (5,),
}


@pytest.fixture
def exe():
    return helper_program("DTN_NET_INTEROP", "dtn_net_interop")


def run(exe, *args):
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def conv2d(x, w, b, stride=1, pad=0):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            y[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return y + b[None, :, None, None]


def conv_transpose2d(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    _, o, k, _ = w.shape
    full = np.zeros((n, o, (h - 1) * stride + k, (wd - 1) * stride + k))
    for i in range(h):
        for j in range(wd):
            full[:, :, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum("nc,cokl->nokl", x[:, :, i, j], w)
    y = full[:, :, pad:full.shape[2] - pad, pad:full.shape[3] - pad]
    return y + b[None, :, None, None]


def reference_forward(t, x):
    """The network in float64 numpy (batch norm in evaluation mode, eps 1e-5)."""
    x = x.astype(np.float64)
    g = {k: v.astype(np.float64) for k, v in t.items()}
    y = conv2d(x, g["0.weight"], g["0.bias"], 1, 1)
    y = (y - g["1.running_mean"][None, :, None, None]) / np.sqrt(g["1.running_var"][None, :, None, None] + 1e-5)
    y = y * g["1.weight"][None, :, None, None] + g["1.bias"][None, :, None, None]
    y = np.maximum(y, 0)
    n, c, h, w = y.shape
    y = y.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    y = np.tanh(conv_transpose2d(y, g["4.weight"], g["4.bias"], 2, 1))
    y = y.reshape(n, -1)
    return y @ g["7.weight"].T + g["7.bias"]


def read_y(path):
    with open(path) as f:
        return np.array([float.fromhex(v) for v in json.load(f)["y"]]).reshape(2, 5)


def make_x(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(2, 3, 6, 6)).astype(np.float32)
    path = str(tmp_path / "x.safetensors")
    save_file({"x": x}, path)
    return x, path


# float32 forward (dtn) against float64 (numpy): a few hundred float32 multiply-adds per output,
# relative error ~1e-6; 1e-5 of the output scale leaves room and still catches any wrong layout.
TOL = 1e-5


def test_dtn_checkpoint_has_pytorch_names_shapes_and_gives_the_same_forward(exe, tmp_path):
    x, xpath = make_x(tmp_path)
    ckpt, out = str(tmp_path / "net.safetensors"), str(tmp_path / "y.json")
    run(exe, "save", ckpt, xpath, out)
    t = load_file(ckpt)
    stripped = {k[len("net."):]: v for k, v in t.items()}
    assert all(k.startswith("net.") for k in t)
    assert {k: v.shape for k, v in stripped.items()} == TORCH_STATE
    assert all(v.dtype == np.float32 for v in t.values())
    y = read_y(out)
    ref = reference_forward(stripped, x)
    assert np.max(np.abs(y - ref)) <= TOL * max(1.0, np.max(np.abs(ref)))


def test_numpy_weights_drive_dtn_forward(exe, tmp_path):
    x, xpath = make_x(tmp_path)
    rng = np.random.default_rng(11)
    weights = {}
    for name, shape in TORCH_STATE.items():
        v = rng.uniform(-0.5, 0.5, size=shape)
        if name == "1.running_var":
            v = rng.uniform(0.5, 2.0, size=shape)
        weights["net." + name] = v.astype(np.float32)
    wpath, out = str(tmp_path / "w.safetensors"), str(tmp_path / "y.json")
    save_file(weights, wpath)
    run(exe, "forward", wpath, xpath, out)
    y = read_y(out)
    ref = reference_forward({k[len("net."):]: v for k, v in weights.items()}, x)
    assert np.max(np.abs(y - ref)) <= TOL * max(1.0, np.max(np.abs(ref)))
    # A wrong shape is refused with a message naming the tensor.
    bad = dict(weights)
    bad["net.7.weight"] = np.zeros((5, 71), dtype=np.float32)
    save_file(bad, wpath)
    r = subprocess.run([exe, "forward", wpath, xpath, out], capture_output=True, text=True)
    assert r.returncode == 1 and "net.7.weight" in r.stderr and "[5, 72]" in r.stderr


def test_same_forward_as_pytorch_where_installed(exe, tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    x, xpath = make_x(tmp_path)
    ckpt, out = str(tmp_path / "net.safetensors"), str(tmp_path / "y.json")
    run(exe, "save", ckpt, xpath, out)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                      nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(72, 5))
    state = {k[len("net."):]: torch.from_numpy(v) for k, v in load_file(ckpt).items()}
    missing, unexpected = m.load_state_dict(state, strict=False)
    assert unexpected == [] and set(missing) <= {"1.num_batches_tracked"}
    m.eval()
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(read_y(out) - ref)) <= TOL * max(1.0, np.max(np.abs(ref)))
