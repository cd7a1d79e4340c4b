"""One DTN training step of dtn's trainer against the same step in PyTorch.

The C++ side (tests/python/step_interop.cpp, path in $DTN_STEP_INTEROP) runs one step of
dtn::DomainTransfer on the benchmark's networks and writes the checkpoints before and after it, the
inputs and every loss term. Here benchmarks/torch_dtn.py's Dtn, the PyTorch peer the benchmarks
time, is loaded with the same weights and runs the same step in float64. Compared:
  * the nine loss terms (L_D's three, L_GANG, L_CONST, L_TID, L_TV, L_D and L_G);
  * the gradients of every parameter of g and of D: after Adam's first step its first moment is
    m = (1 - beta1) * gradient, read from dtn's checkpoint and from torch.optim.Adam's state;
  * Adam's second moments, and the parameters after the update (dtn's update against PyTorch's
    update formula applied to dtn's own moments, so that the check is of the update, not of the
    sign of gradients that are zero up to rounding, where Adam's first step of +-lr is undecided);
  * batch norm's running statistics of g and D after the step (D runs five times in train mode).
This shows that the trainer computes the paper's losses and their gradients as PyTorch does, with
separate and with joint batches, with and without L_TV, on the benchmark's networks and on the
bundled example's (f with batch norm in evaluation mode, D with LeakyReLU), and that the
benchmark's peer does the work dtn does. A second test runs three steps (Adam's later steps).
Both run dtn in float32 on one input draw and again in double on several draws (dtn's trainer on
`double`), where the comparison holds for any draw and to 1e-11 (the tolerance notes below).
"""
import collections
import importlib.util
import json
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.numpy import load_file  # noqa: E402
from conftest import helper_program  # noqa: E402  (tests/python/conftest.py)

HERE = os.path.dirname(os.path.abspath(__file__))

# Tolerances, dtn in float32 against PyTorch in float64 (same weights and inputs; measured on
# 2026-12-06 with separate and joint batches, with and without L_TV):
#  - losses: float32 passes through f (3x3 convolutions of up to 2304 products, Winograd on the
#    CPU), g and D: measured <= 1e-6 relative; bound 1e-5, far below what a wrong term, weight or
#    batch gives (1e-2 and more).
#  - gradients, second moments and running statistics, per tensor as the relative L2 error
#    ||dtn - ref|| / ||ref||: float32 backward passes accumulating over up to B x 16 x 16
#    positions; measured <= 1.4e-6 after one step, <= 1.8e-6 after three (running statistics
#    <= 2e-7); bound 1e-5. PyTorch's own float32 step is ~1e-6 off its float64 step the same way
#    (and 3e-3 in D.0's weight gradient).
#  - a convolution's bias followed by batch norm has gradient 0 in exact arithmetic (batch norm
#    removes any constant per channel): the reference's is ~1e-15, dtn's float32 rounding, which
#    must stay below 1e-6 of the norm of its network's whole gradient (measured <= 3e-8).
#  - the update: one float32 rounding of the parameter (|p| < 1) and of the update, 1e-7.
#  - these bounds presume that no ReLU input lies within float32 rounding of 0, where float32 and
#    float64 take different sides: true of step_interop.cpp's inputs (the closest, 6.8e-7, in a
#    one-step run), not of every draw (`dtn_step_interop --seed 13`: 1.9e-8 in g.7's output, and
#    g.0's weight gradient 1.35e-3 off). A check of that condition before comparing was tried
#    (2026-12-06) and not kept: no simple measure tells the two draws apart. PyTorch's own
#    float32 step already takes the other side at some ReLU or max-pool input in every draw
#    tried, seed 11's included (D.8: 6.8e-7 from 0, its float32 error 8.1e-7), and the elements
#    within four times their tensor's RMS float32 error of a kink carry as large a share of the
#    upstream gradient in seed 11 (up to 5e-3) as in seed 13 (4e-3 at the g.8 element that moves
#    g's gradients): whether a flipped decision shows depends on where its effect goes downstream.
#    So the float32 tests run on seed 11's draw only, and the trainer's arithmetic is compared for
#    any draw in double (below).
#
# Tolerances, dtn in double (`dtn_step_interop --double`, DomainTransfer<..., Cpu, double>) against
# PyTorch in float64: the same computation in the same precision, so a ReLU or max-pool decision
# can differ only at an input within double rounding (1.1e-16 relative) of its kink, and the
# comparison holds for any draw (seeds 11-17 measured, seed 13 included, one step and three, with
# L_TV: 2026-12-06). Measured: losses <= 8.8e-15 relative, gradients, second moments and running
# statistics <= 4.3e-14 (three steps); bounds 1e-12 and 1e-11, 100-1000x over the rounding and
# six orders below the float32 bounds, so a difference in the arithmetic of the step that
# float32 cannot see fails here: batch norm's eps set to 1.00001e-5 instead of 1e-5 fails every
# double case and passes every float32 one (tried 2026-12-06). The zero biases' gradients
# <= 1.9e-16 of their network's (bound 1e-13), their movement over three steps <= 5.4e-17 (bound
# 1e-13); the update from dtn's own moments came out equal to numpy's formula in every case
# (bound 1e-15, a few roundings of |p| < 1).
# The three-step test runs with L_TV in double: its ill-conditioning (below) amplifies double's
# rounding to 4.3e-14 at most (measured), not float32's to 1e-3.
Bounds = collections.namedtuple("Bounds", "loss tensor zero_grad update ulp zero_move")
FLOAT32 = Bounds(loss=1e-5, tensor=1e-5, zero_grad=1e-6, update=1e-7, ulp=2.0 ** -24, zero_move=1e-6)
FLOAT64 = Bounds(loss=1e-12, tensor=1e-11, zero_grad=1e-13, update=1e-15, ulp=2.0 ** -53, zero_move=1e-13)


def torch_dtn():
    spec = importlib.util.spec_from_file_location("torch_dtn", os.path.join(HERE, "..", "..", "benchmarks", "torch_dtn.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def exe():
    return helper_program("DTN_STEP_INTEROP", "dtn_step_interop")


def rel_l2(a, ref):
    a, ref = np.asarray(a, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    n = np.linalg.norm(ref)
    assert n > 0, "a reference tensor of zeros compares nothing"
    return np.linalg.norm(a - ref) / n


def load_module(module, tensors, prefix):
    """Loads dtn's tensors "<prefix>.<i>.<name>" into an nn.Sequential (float64); every module
    tensor must be found (num_batches_tracked is PyTorch's own)."""
    state = module.state_dict()
    for k in state:
        if k.endswith("num_batches_tracked"):
            continue
        src = tensors[f"{prefix}.{k}"]
        assert tuple(src.shape) == tuple(state[k].shape), k
        state[k] = torch.from_numpy(src.astype(np.float64))
    module.load_state_dict(state)


def biases_before_batch_norm(module):
    """Names of the biases of the layers batch norm follows: gradient 0 in exact arithmetic."""
    names = {f"{i}.bias" for i in range(len(module) - 1) if isinstance(module[i + 1], torch.nn.BatchNorm2d)}
    assert len(names) == 3
    return names


def example_f():
    """examples/svhn_to_mnist/networks.hpp's f: batch norm between each pooling and ReLU."""
    nn = torch.nn
    layers = []
    for c_in, c_out, pool in ((3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 128, 4)):
        layers += [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.MaxPool2d(pool), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


def example_d():
    """examples/svhn_to_mnist/networks.hpp's D: LeakyReLU(0.2) after each batch norm."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 128, 3, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 256, 3, 2, 1), nn.BatchNorm2d(256), nn.LeakyReLU(0.2),
        nn.Conv2d(256, 512, 3, 2, 1), nn.BatchNorm2d(512), nn.LeakyReLU(0.2),
        nn.Conv2d(512, 3, 4, 1, 0),
    )


def run_dtn(exe, tmp_path, joint, gamma, steps=1, nets="bench", seed=None, double=False):
    """Runs dtn_step_interop; seed None: its default draw (11)."""
    args = [exe, str(tmp_path), "--gamma", str(gamma), "--steps", str(steps), "--nets", nets]
    args += (["--joint"] if joint else []) + (["--double"] if double else []) + ([] if seed is None else ["--seed", str(seed)])
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "step.json") as fh:
        out = json.load(fh)
    cfg = out["config"]
    assert cfg["joint_batches"] is joint and cfg["gamma"] == gamma
    assert cfg["g_optim"] == cfg["d_optim"]
    assert cfg["g_optim"]["weight_decay"] == 0
    assert len(out["losses"]) == steps
    files = {k: load_file(str(tmp_path / f"{k}.safetensors")) for k in ("before", "after", "inputs")}
    files["last"] = load_file(str(tmp_path / "last.safetensors")) if steps > 1 else files["after"]
    dtype = np.float64 if double else np.float32
    assert out["dtype"] == np.dtype(dtype).name
    assert all(v.dtype == dtype for k in ("before", "after") for v in files[k].values())  # the run's precision
    out["nets"] = nets
    return out, files


def torch_peer(out, before):
    """benchmarks/torch_dtn.py's Dtn in float64 with dtn's settings and initial weights; with the
    example's f and D (the same g) where dtn ran those."""
    cfg, opt = out["config"], out["config"]["g_optim"]
    td = torch_dtn()
    if out["nets"] == "example":
        td.make_f, td.make_d = example_f, example_d
    assert (td.ALPHA, td.BETA) == (cfg["alpha"], cfg["beta"])
    m = td.Dtn("cpu", lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"], gamma=cfg["gamma"],
               tv_eps=cfg["tv_eps"], dtype=torch.float64, keep_terms=True)
    for module, prefix in ((m.f, "f"), (m.g, "g"), (m.d, "d")):
        load_module(module, before, prefix)
    return m


def torch_step(m, inputs, k):
    """Step k on the inputs scaled as step_interop.cpp scales them (the product rounded in float)."""
    s = np.float32(1.0 - k / 8.0)
    xs = torch.from_numpy((s * inputs["xs"]).astype(np.float64))
    xt = torch.from_numpy((s * inputs["xt"]).astype(np.float64))
    assert xs.shape[0] != xt.shape[0]  # unequal batches: a mix-up of the two shows
    m.step(xs, xt)


def check_losses(dtn_losses, m, gamma, bounds):
    losses = {k: float.fromhex(v) for k, v in dtn_losses.items()}
    for name, ref in m.terms.items():
        ref = 0.0 if ref is None else ref.item()
        if gamma == 0 and name == "tv":
            assert losses[name] == 0
            continue
        assert losses[name] == pytest.approx(ref, rel=bounds.loss), name
    assert losses["constancy"] > 1e-5 and losses["gang"] > 0.1 and losses["tid"] > 0.1  # terms that weigh


def check_running_statistics(net, module, dtn_state, before, bounds):
    for k, buf in module.named_buffers():
        if k.endswith("num_batches_tracked"):
            continue
        err = rel_l2(dtn_state[f"{net}.{k}"], buf.numpy())
        assert err < bounds.tensor, f"{net}.{k}: running statistic relative error {err:.2e}"
        assert rel_l2(before[f"{net}.{k}"], buf.numpy()) > 1e-3  # they moved


def check_one_step(out, files, gamma, bounds):
    """One step (Adam's first) of dtn against the PyTorch peer's."""
    before, after, inputs = files["before"], files["after"], files["inputs"]
    assert not np.any(before["opt.g.m"]) and not np.any(before["opt.d.v"])  # a first step
    m = torch_peer(out, before)
    torch_step(m, inputs, 0)
    opt = out["config"]["g_optim"]

    # The loss terms.
    check_losses(out["losses"][0], m, gamma, bounds)

    # Gradients (Adam's first moments), second moments, updates, running statistics.
    b1, b2, lr, eps = opt["beta1"], opt["beta2"], opt["lr"], opt["eps"]
    worst, worst_zero = {}, 0.0
    for net, module, optimizer in (("g", m.g, m.opt_g), ("d", m.d, m.opt_d)):
        names = dict(module.named_parameters())
        arena = out["arena"][net]
        assert sorted(arena) == sorted(f"{net}.{k}" for k in names)
        net_norm = np.sqrt(sum(float((optimizer.state[p]["exp_avg"] ** 2).sum()) for p in names.values())) / (1 - b1)
        zero_grad = biases_before_batch_norm(module)
        for k, p in names.items():
            off = arena[f"{net}.{k}"]
            n = p.numel()
            st = optimizer.state[p]
            m_dtn = after[f"opt.{net}.m"][off:off + n]
            v_dtn = after[f"opt.{net}.v"][off:off + n]
            grad_ref = st["exp_avg"].numpy().ravel() / (1 - b1)
            if k in zero_grad:
                assert np.linalg.norm(grad_ref) < 1e-12 * net_norm, k
                small = np.linalg.norm(m_dtn / (1 - b1)) / net_norm
                worst_zero = max(worst_zero, small)
                assert small < bounds.zero_grad, f"{net}.{k}: gradient {small:.2e} of the network's, not 0"
                continue
            grad_err = rel_l2(m_dtn / (1 - b1), grad_ref)
            v_err = rel_l2(v_dtn, st["exp_avg_sq"].numpy().ravel())
            # The update from dtn's own moments (bias-corrected, step 1), in float64.
            m_hat = m_dtn.astype(np.float64) / (1 - b1)
            v_hat = v_dtn.astype(np.float64) / (1 - b2)
            expected = before[f"{net}.{k}"].ravel().astype(np.float64) - lr * m_hat / (np.sqrt(v_hat) + eps)
            upd_err = np.max(np.abs(after[f"{net}.{k}"].ravel() - expected))
            worst[f"{net}.{k}"] = (grad_err, v_err, upd_err)
            assert grad_err < bounds.tensor, f"{net}.{k}: gradient relative error {grad_err:.2e}"
            assert v_err < bounds.tensor, f"{net}.{k}: second moment relative error {v_err:.2e}"
            assert upd_err < bounds.update, f"{net}.{k}: Adam update off by {upd_err:.2e}"
        check_running_statistics(net, module, after, before, bounds)
    # f is frozen: nothing of it changed.
    for k in before:
        if k.startswith("f."):
            assert np.array_equal(before[k], after[k]), k
    print("worst gradient / second-moment relative errors, update error:",
          {k: f"{g:.1e}/{v:.1e}/{u:.1e}" for k, (g, v, u) in sorted(worst.items(), key=lambda kv: -kv[1][0])[:4]},
          "largest update error:", f"{max(u for _, _, u in worst.values()):.1e}",
          "largest zero gradient (of the network's):", f"{worst_zero:.1e}")


def check_steps(out, files, gamma, steps, bounds):
    """Several steps: each step's losses, then the parameters, Adam's moments and the running
    statistics after the last."""
    before, last, inputs = files["before"], files["last"], files["inputs"]
    m = torch_peer(out, before)
    for k in range(steps):
        torch_step(m, inputs, k)
        check_losses(out["losses"][k], m, gamma, bounds)
    worst, worst_zero = {}, 0.0
    for net, module, optimizer in (("g", m.g, m.opt_g), ("d", m.d, m.opt_d)):
        arena = out["arena"][net]
        moved = 0
        zero_grad = biases_before_batch_norm(module)
        for k, p in module.named_parameters():
            off = arena[f"{net}.{k}"]
            n = p.numel()
            st = optimizer.state[p]
            assert int(st["step"]) == steps
            delta_dtn = last[f"{net}.{k}"].astype(np.float64) - before[f"{net}.{k}"]
            delta_ref = p.detach().numpy() - before[f"{net}.{k}"]
            if k in zero_grad:
                zero_move = np.max(np.abs(delta_dtn))
                worst_zero = max(worst_zero, zero_move)
                assert zero_move < bounds.zero_move, k
                continue
            # The parameters: dtn rounds p at each step (half an ulp, <= 2^-24 |p| in float32),
            # which against a movement of ~lr per step is not small (2.8e-4 of the movement of
            # g.1's weights, |p| ~ 1, in float32); beyond those roundings, within bounds.tensor of
            # the movement.
            bound = 2 * steps * bounds.ulp * np.linalg.norm(p.detach().numpy()) + bounds.tensor * np.linalg.norm(delta_ref)
            off_by = np.linalg.norm(delta_dtn - delta_ref)
            worst[f"{net}.{k}"] = off_by / bound
            assert off_by < bound, f"{net}.{k}: parameters off by {off_by:.2e}, bound {bound:.2e}"
            for name, key in (("m", "exp_avg"), ("v", "exp_avg_sq")):
                err = rel_l2(last[f"opt.{net}.{name}"][off:off + n], st[key].numpy())
                assert err < bounds.tensor, f"{net}.{k}: Adam's {name} relative error {err:.2e}"
            moved += 1
        assert moved == len(list(module.parameters())) - len(zero_grad)
        check_running_statistics(net, module, last, before, bounds)
    print("largest parameter errors (of their bounds):",
          {k: f"{v:.1e}" for k, v in sorted(worst.items(), key=lambda kv: -kv[1])[:4]},
          "largest movement of a zero-gradient bias:", f"{worst_zero:.1e}")


@pytest.mark.parametrize("nets,joint,gamma", [("bench", False, 0.0), ("bench", True, 0.0), ("bench", False, 0.5),
                                              ("bench", True, 0.5), ("example", False, 0.0), ("example", True, 0.5)],
                         ids=["separate", "joint", "separate-tv", "joint-tv", "example-nets", "example-nets-joint-tv"])
def test_dtn_step_matches_pytorch(exe, tmp_path, nets, joint, gamma):
    out, files = run_dtn(exe, tmp_path, joint, gamma, nets=nets)
    check_one_step(out, files, gamma, FLOAT32)


@pytest.mark.parametrize("nets,joint,gamma", [("bench", False, 0.0), ("bench", True, 0.5), ("example", False, 0.5),
                                              ("example", True, 0.0)],
                         ids=["separate", "joint-tv", "example-nets-tv", "example-nets-joint"])
@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_dtn_step_in_double_matches_pytorch_for_any_draw(exe, tmp_path, nets, joint, gamma, seed):
    """The same step with dtn in double: to 1e-11 on every draw, seed 13's (where float32 and
    float64 take different sides of a ReLU, see above) included."""
    out, files = run_dtn(exe, tmp_path, joint, gamma, nets=nets, seed=seed, double=True)
    check_one_step(out, files, gamma, FLOAT64)


# The example's networks (f with max pools after each convolution and batch norm) are compared over
# three steps in double only (test_three_dtn_steps_in_double_match_pytorch, seeds 11 and 13, with
# L_TV): in float32 their three-step comparison depends on the draw as the one-step one does
# (above), only more often. Measured on 2026-12-06 with the float64 peer: every draw of seeds 11-20
# has, within three steps, a ReLU input or a max-pool window's two largest values within 2e-7 of
# each other (3.8e-9 to 1.4e-7), and at commit 0bda146, before g's 4x4 stride-2 convolutions ran
# through Winograd F(2x2, 2x2) on the CPU, 15 of the 20 draws of seeds 21-40 and 3 of seeds 12, 14
# and 20 already failed this test with --joint, by a loss or by g's or D's gradients ~1e-3 off
# (while the same draws agree to 1e-11 in double). With that path (float32 errors ~7e-7 relative
# RMS at g.3's and g.6's shapes, 2.2x im2col + GEMM's) seed 11's draw, which had passed, takes
# the other element of a max-pool pair 2.6e-8 apart (f.5 in step 2): all of g's gradients 3e-4
# off, D's within 1.2e-6. The benchmark's networks pass on seed 11 with either path.
@pytest.mark.parametrize("nets,joint", [("bench", False), ("bench", True)], ids=["separate", "joint"])
def test_three_dtn_steps_match_pytorch(exe, tmp_path, nets, joint):
    """Three steps on different batches: each step's losses, then the parameters, Adam's moments
    and the running statistics after the last (Adam's state and bias corrections of steps 2 and 3,
    the trainer's state carried between steps).
    Without L_TV (gamma 0, the digits setting): once g's tanh saturates (a fifth of the pixels at
    |G(x)| > 0.999 by step 3 here), the TV term's gradient dh / sqrt(dh^2 + dv^2 + 1e-8) has slope
    1e4 where the differences vanish, and float32's rounding of G(x) moves the gradients by up to
    1e-3 from step 2 on (PyTorch's own float32 steps too: 6e-4 in g.0's weights); the one-step
    test covers L_TV in float32, the double test below over three steps."""
    steps, gamma = 3, 0.0
    out, files = run_dtn(exe, tmp_path, joint, gamma, steps, nets)
    check_steps(out, files, gamma, steps, FLOAT32)


@pytest.mark.parametrize("nets,joint", [("bench", False), ("example", True)], ids=["separate", "example-nets-joint"])
@pytest.mark.parametrize("seed", [11, 13])
def test_three_dtn_steps_in_double_match_pytorch(exe, tmp_path, nets, joint, seed):
    """Three steps with L_TV, dtn in double."""
    steps, gamma = 3, 0.5
    out, files = run_dtn(exe, tmp_path, joint, gamma, steps, nets, seed=seed, double=True)
    check_steps(out, files, gamma, steps, FLOAT64)
