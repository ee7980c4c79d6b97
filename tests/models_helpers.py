"""Tiny configurations of every zoo model, shared by the tests/test_models_*.py files."""
from __future__ import annotations

import pytest
import torch

import fastcells.models as M

from .helpers import randomize

# name -> (registry name, constructor overrides, (H, W)); odd sizes where the model allows
TINY = {
    "convlstm": ("convlstm", {"hidden_size": 4, "num_layers": 2}, (13, 11)),
    "predrnn": ("predrnn", {"hidden_size": 4, "num_layers": 2, "kernel_size": 3}, (13, 11)),
    "predrnn_patch": ("predrnn", {"hidden_size": 4, "num_layers": 2, "kernel_size": 3,
                                      "patch_size": 2}, (10, 8)),
    "predrnn_v2": ("predrnn_v2", {"hidden_size": 4, "num_layers": 3, "kernel_size": 3}, (13, 11)),
    "predrnn_pp": ("predrnn_pp", {"hidden_size": 4, "num_layers": 3, "kernel_size": 3,
                                  "patch_size": 2}, (10, 8)),
    "sms_lstm": ("sms_lstm", {"hidden_size": 4, "num_layers": 4}, (13, 11)),
    "tms_lstm": ("tms_lstm", {"hidden_size": 4, "num_layers": 2}, (13, 11)),
    "ms_lstm": ("ms_lstm", {"hidden_size": 4, "num_layers": 4}, (13, 11)),
    "conv_tt_lstm": ("conv_tt_lstm", {"layers_per_block": (1, 2, 1), "hidden_channels": (4, 5, 3),
                                          "skip_stride": 1, "kernel_size": 3, "order": 2, "steps": 3,
                                          "rank": 3}, (13, 11)),
    "conv_tt_lstm_baseline": ("conv_tt_lstm_baseline",
                              {"layers_per_block": (1, 1, 1), "hidden_channels": (4, 5, 3),
                                   "skip_stride": 2, "kernel_size": 3, "output_sigmoid": True},
                              (13, 11)),
    "e_convlstm": ("e_convlstm", {"hidden_size": 4, "num_layers": 2, "attention_window": 3,
                                      "attention_size": 3}, (13, 11)),
    "mim": ("mim", {"hidden_size": 4, "num_layers": 3, "kernel_size": 3, "frame_size": (13, 11)},
            (13, 11)),
    "mim_patch": ("mim", {"hidden_size": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2,
                          "layer_norm": True, "frame_size": (10, 8)}, (10, 8)),
    "stlight": ("stlight", {"dim": 8, "depth": 3, "patch_size": 2, "input_len": 3, "pred_len": 2},
                (10, 8)),
}
CHANNELS = 2


def tiny(key: str, backend: str = "reference", randomized: bool = True, **extra):
    """(model, (H, W)) for TINY[key]."""
    name, kwargs, size = TINY[key]
    model = M.create(name, frame_channels=CHANNELS, backend=backend, **kwargs, **extra)
    if randomized:
        randomize(model)
    return model, size


@pytest.fixture
def one_thread():
    """One intra-op thread. The zoo tests run tiny tensors (threading only adds overhead) or
    count FLOPs (thread-independent); on a machine whose cores are shared, a second OpenMP
    thread that must wait for its core slows every op many times over."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
