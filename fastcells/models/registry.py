"""Model names, the papers' presets, and ``create``.

Presets (each fixes the frame shape, T_in and the default pred_len, plus the architecture):

- ``"mmnist"`` (1x64x64, 10 -> 10) and ``"taxibj"`` (2x32x32, 4 -> 4) for the MS-LSTM
  family and its baselines: 6 layers of 32 channels, kernel 3 (MK-LSTM: 3 and 5), 1x1
  embedding and head (seed 001, Section 5.1; mazhf/MS-RNN). MS-LSTM's TaxiBJ experiment
  uses the inflow channel only; the preset keeps TaxiBJ's two channels (in/out flow),
  which changes the 1x1 embedding and head by 65 parameters and ~0.1 MFLOPs per step.
- ``conv_tt_lstm`` / ``conv_tt_lstm_baseline``: ``"mmnist"`` (1x64x64, 10 -> 10) and
  ``"kth"`` (1x120x120, 10 -> 20, output sigmoid) as in seed 004: 4 blocks of 3 layers with
  32, 48, 48, 32 channels, skip stride 2, kernel 5, order 3, steps 3, rank 8. (Appendix
  B.3 says it settled on M = 5 steps; with 5 steps the net has 3.26M parameters, with 3 it
  has the 2.69M that Table 4 prints, so the preset uses 3.)
- ``stlight``: ``"mmnist"``, STLight-L of seed 003 (dim 1400, depth 16, kernels 3 and 7,
  patch 2, no overlap).
- ``mim``: ``"mmnist"``/``"taxibj"`` as PredRNN's MS-LSTM-paper presets; ``"openstl_mmnist"``
  is OpenSTL's Moving MNIST setting (4 layers of 128, kernel 5, patch 4, 10 -> 10, with the
  diff modules' unused ``conv_last``): 38.0M parameters and 179.2 GFLOPs, as its table.
- ``predrnn_pp``: ``"mmnist"``/``"taxibj"`` in the MS-LSTM paper's setting (as ``predrnn``);
  ``"openstl_mmnist"`` is OpenSTL's Moving MNIST configuration (configs/mmnist/PredRNNpp.py:
  4 layers of 128, kernel 5, patch 4, no embedding, 10 -> 10, with the causal cells'
  never-called ``conv_o`` that OpenSTL builds): 38.6M parameters and 171.7 GFLOPs, as
  OpenSTL's benchmark table prints.
- ``e_convlstm``: seed 000 gives no sizes; its ``"mmnist"``/``"taxibj"`` presets use the
  MS-LSTM paper's ConvLSTM configuration plus attention and dropout 0.3.
- ``rmt``: seed 000 gives no sizes either; its presets are small enough to learn on a CPU
  in minutes: ``"mmnist"`` (1x64x64, 10 -> 10) patch 8 (64 tokens a frame), D 64, 4 blocks
  of 4 heads, MLP ratio 4, 8 memory tokens, segments of 5 frames, full BPTT;
  ``"taxibj"`` (2x32x32, 4 -> 4) the same with patch 4 and segments of 2 frames.
- ``vdt``: ``"mmnist"`` is ours, small enough to train on a CPU (1x64x64, 10 -> 10 in one
  20-frame clip, patch 8, width 96, depth 4, 4 heads, fixed variance, DDIM 50 steps);
  ``"vdt_s2"``/``"vdt_l2"`` are the published VDT-S/2 (depth 12, width 384, 6 heads) and
  VDT-L/2 (depth 28, width 1152, 16 heads) with patch 2 and learned variance, on seed 002's
  Cityscapes setting (3x128x128, 8 given + 8 predicted frames): as published, pass
  ``autoencoder=`` (an f8 VAE with 4 latent channels, as an object or the path of a
  TorchScript file: the network then reads 4x16x16 latents); without one they run in pixel
  space.
- ``"openstl_mmnist"`` (1x64x64, 10 -> 10) for ``convlstm``, ``predrnn``, ``predrnn_v2``:
  OpenSTL's Moving MNIST configuration and model structure (``openstl/models/*_model.py``,
  ``configs/mmnist/*.py``): 4 layers of 128 channels, kernel 5, patch 4, no embedding (the
  first cell reads the 16-channel patched frame, a bias-free 1x1 ``conv_last`` maps back);
  ConvLSTM in OpenSTL's cell layout, unused ``conv_o``/``conv_last`` included. Their counts
  are OpenSTL's published Moving MNIST table's (15.0M / 56.8G, 23.8M / 116.0G,
  23.9M / 116.6G).
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

from torch import nn

from .._checks import check_int

from .conv_tt import ConvTTNet
from .e_convlstm import EnhancedConvLSTM
from .mim import MIM
from .predrnn import PredRNN
from .predrnn_pp import PredRNNpp
from .pyramid import PyramidForecaster
from .rmt import RecurrentMemoryTransformer
from .stacked import StackedForecaster
from .stlight import STLight
from .vdt import VDT

_MMNIST = {"frame_channels": 1, "frame_size": (64, 64), "input_len": 10, "pred_len": 10}
_TAXIBJ = {"frame_channels": 2, "frame_size": (32, 32), "input_len": 4, "pred_len": 4}
_MS_DATA = {"mmnist": _MMNIST, "taxibj": _TAXIBJ}


_RMT = {"dim": 64, "depth": 4, "heads": 4, "mlp_ratio": 4.0, "memory_size": 8}


def _ms_presets(**arch) -> dict:
    """The MS-LSTM paper's setting (Section 5.1) for both of its datasets."""
    base = dict(hidden_size=32, num_layers=6, **arch)
    return {name: {**data, **base} for name, data in _MS_DATA.items()}


_CTT = {"layers_per_block": (3, 3, 3, 3), "hidden_channels": (32, 48, 48, 32), "skip_stride": 2,
            "kernel_size": 5, "order": 3, "steps": 3, "rank": 8}


# OpenSTL's Moving MNIST setting, shared by its recurrent models
_OPENSTL_MMNIST = dict(_MMNIST, hidden_size=128, num_layers=4, kernel_size=5, patch_size=4,
                       embed=False)


def _ctt_presets() -> dict:
    return {
        "mmnist": dict(_MMNIST, **_CTT),
        "kth": dict(frame_channels=1, frame_size=(120, 120), input_len=10, pred_len=20,
                    output_sigmoid=True, **_CTT),
    }


# VDT's published sizes on seed 002's Cityscapes setting (16-frame clips of 128x128 frames)
_VDT_CITYSCAPES = {"frame_channels": 3, "frame_size": (128, 128), "input_len": 8,
                   "pred_len": 8, "patch_size": 2, "learn_sigma": True}

# Constructor arguments that the model's fixed cell never reads (the constructors are shared
# between cell types): overriding them would change nothing, so ``create`` refuses them.
_UNUSED_BY_CELL = {"convlstm": ("kernel_sizes", "order", "steps", "rank"),
                   "mklstm": ("kernel_size",), "convttlstm": ("kernel_sizes",)}


class _Entry:
    def __init__(self, build: Callable[..., nn.Module], fixed: dict, presets: dict, what: str):
        self.build, self.fixed, self.presets, self.what = build, fixed, presets, what

    def accepted(self) -> list[str]:
        """The constructor arguments an override may set for this model."""
        unused = set(self.fixed) | set(_UNUSED_BY_CELL.get(self.fixed.get("cell"), ()))
        params = inspect.signature(self.build).parameters
        return [p for p in params if p not in unused]


_MODELS: dict[str, _Entry] = {
    "convlstm": _Entry(StackedForecaster, {"cell": "convlstm"},
                       {**_ms_presets(kernel_size=3),
                        "openstl_mmnist": dict(_OPENSTL_MMNIST, cell_layout="openstl")},
                       "stacked ConvLSTM with 1x1 embed/head (MS-LSTM paper baseline)"),
    "predrnn": _Entry(PredRNN, {"decouple": False},
                      {**_ms_presets(kernel_size=3, embed=True),
                       "openstl_mmnist": _OPENSTL_MMNIST},
                      "PredRNN: ST-LSTM stack with zigzag memory, optional patches"),
    "predrnn_v2": _Entry(PredRNN, {"decouple": True},
                         {**_ms_presets(kernel_size=3, embed=True),
                          "openstl_mmnist": _OPENSTL_MMNIST},
                         "PredRNN-v2: PredRNN + memory decoupling loss (+ reverse scheduled "
                         "sampling in training)"),
    "predrnn_pp": _Entry(PredRNNpp, {},
                         {**_ms_presets(kernel_size=3, embed=True),
                          "openstl_mmnist": dict(_MMNIST, hidden_size=128, num_layers=4,
                                                 kernel_size=5, patch_size=4,
                                                 unused_conv_o=True)},
                         "PredRNN++: causal LSTM stack, gradient highway unit, zigzag memory"),
    "sms_lstm": _Entry(PyramidForecaster, {"cell": "convlstm"},
                       _ms_presets(kernel_size=3),
                       "ConvLSTM cells in MS-LSTM's mirrored pyramid"),
    "tms_lstm": _Entry(StackedForecaster, {"cell": "mklstm"},
                       _ms_presets(kernel_sizes=(3, 5)), "stacked MK-LSTM"),
    "ms_lstm": _Entry(PyramidForecaster, {"cell": "mklstm"},
                      _ms_presets(kernel_sizes=(3, 5)),
                      "MS-LSTM: MK-LSTM cells in the mirrored pyramid"),
    "conv_tt_lstm": _Entry(ConvTTNet, {"cell": "convttlstm"}, _ctt_presets(),
                           "Conv-TT-LSTM network: 4 blocks with skip concatenation"),
    "conv_tt_lstm_baseline": _Entry(ConvTTNet, {"cell": "convlstm"}, _ctt_presets(),
                                    "the Conv-TT-LSTM network with ConvLSTM cells"),
    "e_convlstm": _Entry(EnhancedConvLSTM, {}, _ms_presets(kernel_size=3),
                         "Enhanced ConvLSTM: temporal attention + dropout (seed 000)"),
    "mim": _Entry(MIM, {},
                  {**_ms_presets(kernel_size=3, embed=True),
                   # OpenSTL's Moving MNIST configuration (its configs/mmnist/MIM.py and
                   # benchmark table: 38.0M parameters, 179.2 GFLOPs)
                   "openstl_mmnist": dict(_MMNIST, hidden_size=128, num_layers=4,
                                          kernel_size=5, patch_size=4, unused_convs=True)},
                  "MIM: ST-LSTM then MIM blocks with MIMN diff modules (OpenSTL structure)"),
    "stlight": _Entry(STLight, {},
                      {"mmnist": dict(_MMNIST, dim=1400, depth=16, kernel_sizes=(3, 7),
                                      patch_size=2, overlapping=1)},
                      "STLight: patch encoder, STLMixer blocks, pixel-shuffle decoder"),
    "rmt": _Entry(RecurrentMemoryTransformer, {},
                  {"mmnist": dict(_MMNIST, patch_size=8, segment_len=5, **_RMT),
                   "taxibj": dict(_TAXIBJ, patch_size=4, segment_len=2, **_RMT)},
                  "Recurrent Memory Transformer: patch tokens, memory tokens carried across "
                  "segments of frames, truncated BPTT (seed 000)"),
    "vdt": _Entry(VDT, {}, {
        "mmnist": dict(_MMNIST, patch_size=8, hidden_size=96, depth=4, num_heads=4),
        "vdt_s2": dict(_VDT_CITYSCAPES, hidden_size=384, depth=12, num_heads=6),
        "vdt_l2": dict(_VDT_CITYSCAPES, hidden_size=1152, depth=28, num_heads=16)},
        "VDT: video diffusion transformer, mask modelling, DDPM/DDIM sampling (seed 002)"),
}


def list_models() -> list[str]:
    """The names ``create`` accepts."""
    return list(_MODELS)


def list_presets(name: str) -> list[str]:
    """The presets of model ``name``."""
    return list(_entry(name).presets)


def describe(name: str) -> str:
    """One line on what model ``name`` is."""
    return _entry(name).what


def preset_config(name: str, preset: str) -> dict:
    """The constructor arguments preset ``preset`` of model ``name`` sets."""
    entry = _entry(name)
    if preset not in entry.presets:
        raise ValueError(f"preset: model {name!r} has presets {list(entry.presets)}, got "
                         f"{preset!r}")
    return dict(entry.presets[preset])


def without_ignored_overrides(name: str, overrides: dict) -> dict:
    """``overrides`` less those model ``name`` never reads (which :func:`create` refuses),
    with a warning naming them: for configs saved before create() refused them, whose runs
    ran without them (loading such a checkpoint, resuming it)."""
    entry = _entry(name)
    unused = set(_UNUSED_BY_CELL.get(entry.fixed.get("cell"), ()))
    dropped = sorted(k for k in overrides if k in unused)
    if dropped:
        warnings.warn(f"{', '.join(dropped)}: model {name!r} does not read "
                      f"{'this argument' if len(dropped) == 1 else 'these arguments'}; the "
                      f"saved run ran without {'it' if len(dropped) == 1 else 'them'}, so "
                      f"{'it is' if len(dropped) == 1 else 'they are'} dropped", stacklevel=2)
    return {k: v for k, v in overrides.items() if k not in dropped}


def create(name: str, preset: str | None = None, **overrides) -> nn.Module:
    """Builds model ``name``, from ``preset`` when given, with ``overrides`` on top.

    Every model needs ``frame_channels`` (a preset sets it). Overrides are constructor
    arguments, e.g. ``backend="reference"``, ``hidden_size=8`` or ``frame_size=None``
    (any frame size). Returns an ``nn.Module`` taking (B, T, C, H, W) frames.
    """
    entry = _entry(name)
    config = {} if preset is None else preset_config(name, preset)
    clash = set(overrides) & set(entry.fixed)
    if clash:
        raise TypeError(f"{sorted(clash)}: fixed by model {name!r} ({entry.fixed}); pick "
                        f"another model name instead")
    accepted = entry.accepted()
    unknown = [k for k in overrides if k not in accepted]
    if unknown:
        # an override the model does not read would be recorded as applied and change nothing
        raise TypeError(f"{', '.join(unknown)}: model {name!r} does not take "
                        f"{'this argument' if len(unknown) == 1 else 'these arguments'}; it "
                        f"takes {', '.join(accepted)}")
    config.update(overrides)
    _check_sizes(config)
    if "frame_channels" not in config:
        raise TypeError(f"frame_channels: model {name!r} needs frame_channels=C (or a preset: "
                        f"{list(entry.presets)})")
    return entry.build(**entry.fixed, **config)


# Constructor arguments that are sizes (ints >= 1), and tuples of sizes; checked here so
# that a string or a zero from a config file or --model-arg is named, not met deep inside
# a constructor as torch's own error.
_SIZES = ("frame_channels", "hidden_size", "num_layers", "kernel_size", "input_len",
          "pred_len", "patch_size", "dim", "depth", "order", "steps", "rank", "skip_stride",
          "attention_window", "attention_size", "heads", "memory_size", "segment_len",
          "num_frames", "num_heads", "diffusion_steps", "sample_steps")
_SIZE_TUPLES = ("kernel_sizes", "hidden_channels", "layers_per_block", "frame_size")


def _check_sizes(config: dict) -> None:
    for key in _SIZES:
        if config.get(key) is not None:
            check_int(key, config[key])
    for key in _SIZE_TUPLES:
        value = config.get(key)
        if value is None:
            continue
        if key == "frame_size" and isinstance(value, int) and not isinstance(value, bool):
            check_int(key, value)  # a square frame
            continue
        if not isinstance(value, (tuple, list)) or not value:
            raise TypeError(f"{key}: expected a tuple of ints >= 1 like (32, 32), got "
                            f"{value!r}")
        for i, v in enumerate(value):
            check_int(f"{key}[{i}]", v)


def _entry(name: str) -> _Entry:
    if name not in _MODELS:
        raise ValueError(f"name: unknown model {name!r}; available: {list(_MODELS)}")
    return _MODELS[name]
