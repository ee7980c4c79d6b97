"""The model zoo: video prediction models assembled from the fastcells cells, so the
``backend=`` of a model reaches every cell and every backend speeds up every model.

``create(name, preset=None, **overrides)`` builds one; ``list_models()`` names them.
Frames are (B, T, C, H, W): ``model(frames, pred_len=N)`` predicts the next N frames,
``model.forward_train(frames, mask=None)`` runs teacher forcing or (reverse) scheduled
sampling (:mod:`.rollout`, :mod:`.sampling`), ``model.training_loss(frames, mask)`` is the
model's objective, and :func:`profile` reports parameters, FLOPs and peak CUDA memory.
"""
from . import sampling
from .conv_tt import ConvTTNet
from .e_convlstm import EnhancedConvLSTM, temporal_consistency_loss
from .predrnn import PredRNN, decoupling_term, reshape_patch, reshape_patch_back
from .predrnn_pp import PredRNNpp
from .profile import count_flops, count_params, profile
from .pyramid import PyramidForecaster
from .registry import (create, describe, list_models, list_presets, preset_config,
                       without_ignored_overrides)
from .rollout import Forecaster, RecurrentForecaster, TrainOutput
from .stacked import StackedForecaster
from .stlight import STLight

__all__ = [
    "ConvTTNet",
    "EnhancedConvLSTM",
    "Forecaster",
    "PredRNN",
    "PredRNNpp",
    "PyramidForecaster",
    "RecurrentForecaster",
    "STLight",
    "StackedForecaster",
    "TrainOutput",
    "count_flops",
    "count_params",
    "create",
    "decoupling_term",
    "describe",
    "list_models",
    "list_presets",
    "preset_config", "without_ignored_overrides",
    "profile",
    "reshape_patch",
    "reshape_patch_back",
    "sampling",
    "temporal_consistency_loss",
]
