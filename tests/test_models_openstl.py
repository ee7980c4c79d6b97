"""The ``openstl_mmnist`` presets against OpenSTL's published Moving MNIST table (params and
FLOPs as fastcells.models.profile counts them, fvcore) and OpenSTL's model structure."""
from collections import Counter

import pytest
import torch

import fastcells.models as M

from .models_helpers import one_thread  # noqa: F401 (fixture)
from .public import openstl_convlstm as openstl

pytestmark = pytest.mark.usefixtures("one_thread")

# (model, params in M, GFLOPs) as OpenSTL's Moving MNIST benchmark table prints them
TABLE = [("convlstm", 15.0, 56.8), ("predrnn", 23.8, 116.0), ("predrnn_v2", 23.9, 116.6)]


@pytest.mark.parametrize("name,params,gflops", TABLE)
def test_openstl_mmnist_preset_matches_the_table(name, params, gflops):
    model = M.create(name, preset="openstl_mmnist", backend="reference")
    assert abs(M.count_params(model) / 1e6 - params) / params < 0.01
    # Every step of the rollout costs the same, so one step is counted (fvcore on the full
    # 19-step rollout takes ~30 s a model here) and scaled to T_in + T_out - 1 = 19 steps.
    # PredRNN-v2's table value also counts the adapter on delta_c, delta_m that OpenSTL's
    # forward runs at inference (0.6G); fastcells runs it only for the training loss.
    with torch.no_grad():
        step = M.count_flops(model, (1, 1, 1, 64, 64), pred_len=1)
    total = step * (model.input_len + model.pred_len - 1)
    assert abs(total / 1e9 - gflops) / gflops < 0.01, total / 1e9


def test_openstl_mmnist_parameters_are_openstls():
    """Parameter for parameter the shapes of OpenSTL's models (its ConvLSTM's unused
    conv_o/conv_last included), and the exact counts."""
    exact = {"convlstm": 4 * (8 * 128 * 128 * 25 + 128 * 256 * 25 + 128 * 256)
             - 4 * 128 * 112 * 25 + 128 * 16,
             "predrnn": 4 * (14 * 128 * 128 * 25 + 128 * 256 * 25 + 128 * 256)
             - 7 * 128 * 112 * 25 + 128 * 16}
    for name, cell in (("convlstm", openstl.ConvLSTMCell), ("predrnn", None)):
        ours = M.create(name, preset="openstl_mmnist", backend="reference")
        assert M.count_params(ours) == exact[name]
        if cell is None:
            continue
        theirs = openstl.RecurrentModel(cell, 4, [128] * 4, 16, 16, 16, filter_size=5)
        shapes = [Counter(tuple(p.shape) for p in m.parameters()) for m in (ours, theirs)]
        assert shapes[0] == shapes[1]
    v2 = M.create("predrnn_v2", preset="openstl_mmnist", backend="reference")
    assert M.count_params(v2) == exact["predrnn"] + 128 * 128  # the shared adapter


def test_openstl_mmnist_models_run():
    for name in ("convlstm", "predrnn_v2"):
        model = M.create(name, preset="openstl_mmnist", hidden_size=4, backend="reference")
        out = model(torch.rand(1, 3, 1, 64, 64), pred_len=2)
        assert out.shape == (1, 2, 1, 64, 64) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="divisible by patch_size=4"):
        M.create("convlstm", preset="openstl_mmnist", frame_size=(30, 32))
    with pytest.raises(ValueError, match="cell_layout='openstl' is a ConvLSTM layout"):
        M.create("tms_lstm", preset="mmnist", cell_layout="openstl")
