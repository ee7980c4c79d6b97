"""The model zoo: video prediction models assembled from the fastcells cells, so the
``backend=`` of a model reaches every cell and every backend speeds up every model.

``create(name, preset=None, **overrides)`` builds one; ``list_models()`` names them.
Frames are (B, T, C, H, W): ``model(frames, pred_len=N)`` predicts the next N frames,
``model.forward_train(frames, mask=None)`` runs teacher forcing or (reverse) scheduled
sampling (:mod:`.rollout`, :mod:`.sampling`), ``model.training_loss(frames, mask)`` is the
model's objective, and :func:`profile` reports parameters, FLOPs and peak CUDA memory.
"""
from . import diffusion, sampling
from .conv_tt import ConvTTNet
from .e_convlstm import EnhancedConvLSTM, temporal_consistency_loss
from .mim import MIM
from .predrnn import PredRNN, decoupling_term, reshape_patch, reshape_patch_back
from .predrnn_pp import PredRNNpp
from .profile import count_flops, count_params, profile
from .pyramid import PyramidForecaster
from .registry import (create, describe, list_models, list_presets, preset_config,
                       without_ignored_overrides)
from .rmt import RecurrentMemoryTransformer, RMTCell, RMTState
from .rollout import Forecaster, RecurrentForecaster, TrainOutput
from .stacked import StackedForecaster
from .stlight import STLight
from .vdt import VDT

__all__ = [
    "ConvTTNet",
    "EnhancedConvLSTM",
    "Forecaster",
    "MIM",
    "PredRNN",
    "PredRNNpp",
    "PyramidForecaster",
    "RMTCell",
    "RMTState",
    "RecurrentForecaster",
    "RecurrentMemoryTransformer",
    "STLight",
    "StackedForecaster",
    "TrainOutput",
    "VDT",
    "count_flops",
    "count_params",
    "create",
    "decoupling_term",
    "describe",
    "diffusion",
    "list_models",
    "list_presets",
    "preset_config", "without_ignored_overrides",
    "profile",
    "reshape_patch",
    "reshape_patch_back",
    "sampling",
    "temporal_consistency_loss",
]
