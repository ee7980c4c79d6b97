"""The zoo's MIM (fastcells.models.mim) against a re-creation of OpenSTL's MIM_Model, and its
OpenSTL preset's parameters and FLOPs against OpenSTL's Moving MNIST table (38.0M, 179.2G;
fvcore, batch 1, the 19-step rollout), in tests/test_models_costs.py's style."""
import contextlib

import pytest
import torch

import fastcells.models as M
from fastcells.models import sampling

from .conftest import requires_cpp
from .helpers import RTOL, assert_close, randomize
from .models_helpers import one_thread  # noqa: F401 (fixture)
from .public import openstl_mim as openstl


@pytest.mark.usefixtures("one_thread")
def test_openstl_preset_params_and_flops_match_openstl_table():
    model = M.create("mim", preset="openstl_mmnist")
    # by hand: ST-LSTM 4,077,568 + 3 MIM blocks of 7,913,472 + 3 MIMN of 3,407,872 (their
    # unused conv_last included) + the 1x1 head 2,048
    assert M.count_params(model) == 38_043_648
    assert round(M.count_params(model) / 1e6, 1) == 38.0
    # The 19-step rollout (10 -> 10) from the first two steps: step 0 (no diff modules
    # yet: OpenSTL's t = 0 call is discarded, and fvcore's traced graph drops it) and step
    # 1, which every later step repeats; counting all 19 takes a minute on CI's CPU.
    with torch.no_grad():
        one = M.count_flops(model, (1, 1, 1, 64, 64), pred_len=1)
        two = M.count_flops(model, (1, 2, 1, 64, 64), pred_len=1)
    flops = one + 18 * (two - one)
    assert abs(flops / 1e9 - 179.2) / 179.2 < 0.01, flops / 1e9


def _pair(layer_norm, backend, dtype=torch.float64):
    """OpenSTL's model and the zoo's, same weights (3 layers of 4, kernel 3, patch 2)."""
    cfg = openstl.configs(in_shape=(4, 1, 8, 12), patch_size=2, filter_size=3,
                          pre_seq_length=4, aft_seq_length=3, layer_norm=layer_norm)
    with default_dtype(dtype):
        public = openstl.MIM_Model(3, [4, 4, 4], cfg)
    randomize(public)
    with torch.no_grad():
        for name, p in public.named_parameters():
            if name.endswith(("ct_weight", "oc_weight")):
                p.normal_(0, 0.5)
    model = M.create("mim", frame_channels=1, frame_size=(8, 12), hidden_size=4, num_layers=3,
                     kernel_size=3, patch_size=2, layer_norm=layer_norm, unused_convs=True,
                     input_len=4, pred_len=3, backend=backend).to(dtype)
    model.load_state_dict({ours(k): v for k, v in public.state_dict().items()})
    return public, model, cfg


def ours(key):
    """The zoo's name of an OpenSTL MIM_Model parameter."""
    for a, b in {"stlstm_layer.": "cells.", "stlstm_layer_diff.": "diffs.",
                 "conv_last.": "head."}.items():
        if key.startswith(a):
            return b + key[len(a):]
    return key


@contextlib.contextmanager
def default_dtype(dtype):
    """OpenSTL's model makes its zero states in the default dtype."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _patched(frames, p):
    b, t = frames.shape[:2]
    return M.reshape_patch(frames.flatten(0, 1), p).unflatten(0, (b, t)).permute(0, 1, 3, 4, 2)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=requires_cpp)])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_mim_equals_openstl_model(layer_norm, backend):
    """Scheduled sampling, the t = 0 diff step, the detached stationarity state, zigzag
    memory and patches: the same predictions and parameter gradients as OpenSTL's model."""
    torch.manual_seed(0)
    public, model, cfg = _pair(layer_norm, backend)
    frames = torch.randn(2, 7, 1, 8, 12, dtype=torch.float64)
    mask = (torch.rand(2, 2) > 0.5).double()  # OpenSTL's mask covers the output steps
    with default_dtype(torch.float64):
        out_p = public(_patched(frames, 2), mask[:, :, None, None, None].expand(2, 2, 4, 6, 4))
    out_m = _patched(model.forward_train(frames, sampling.full_mask(mask, 4)).predictions, 2)
    assert_close(out_m, out_p, RTOL[torch.float64])
    weights = torch.randn_like(out_p)
    names = [n for n, _ in public.named_parameters()]
    mine = dict(model.named_parameters())
    assert sorted(map(ours, names)) == sorted(mine)
    g_p = torch.autograd.grad((out_p * weights).sum(), list(public.parameters()),
                              allow_unused=True)
    g_m = torch.autograd.grad((out_m * weights).sum(), [mine[ours(n)] for n in names],
                              allow_unused=True)
    for a, e in zip(g_m, g_p):
        assert (a is None) == (e is None)  # the diff modules' unused conv_last
        if e is not None:
            assert_close(a, e, RTOL[torch.float64])


def test_mim_inference_shapes_and_errors():
    model = M.create("mim", preset="mmnist", hidden_size=4, num_layers=2, backend="reference")
    out = model(torch.randn(1, 3, 1, 64, 64), pred_len=2)
    assert out.shape == (1, 2, 1, 64, 64)
    with pytest.raises(ValueError, match="frame_size"):
        M.create("mim", frame_channels=1, frame_size=None)
    with pytest.raises(ValueError, match="num_layers"):
        M.create("mim", frame_channels=1, frame_size=8, num_layers=1)
    with pytest.raises(ValueError, match="patch_size"):
        M.create("mim", frame_channels=1, frame_size=(6, 8), patch_size=4)
    assert "openstl_mmnist" in M.list_presets("mim") and "mim" in M.list_models()
