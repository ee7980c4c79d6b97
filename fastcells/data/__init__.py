"""Datasets for training and evaluation: each item is one sequence, a float32 tensor
(T, C, H, W), values in [0, 1] (TaxiBJ: min-max scaled flows, see :mod:`.taxibj`).

* :class:`MovingMNIST`: the synthetic default, generated on the fly (no download), from
  procedural glyphs or real MNIST digits (:func:`load_mnist_idx`).
* :class:`NpySequences`: ``mnist_test_seq.npy`` and generic ``.npy`` arrays.
* :class:`PredRNNClips`: predrnn-pytorch ``.npz`` clip archives.
* :class:`SequenceFolder`: folders of frame images or ``.npy`` sequences.
* :class:`TaxiBJ`: TaxiBJ ``.h5`` (h5py) / ``.npz`` flows.
* :class:`Cityscapes`: the ``leftImg8bit_sequence`` 30-frame snippets, RGB, resized.
* :func:`build_dataset` (spec strings, see ``SPECS``) and :func:`split`;
  :func:`check_values`: every sequence finite and in [0, 1] (run before training).
"""
from .arrays import NpySequences, PredRNNClips
from .checks import check_values
from .cityscapes import Cityscapes
from .factory import SPECS, build_dataset, split
from .folder import SequenceFolder
from .glyphs import render_digit, render_digits
from .moving_mnist import MovingMNIST, load_mnist_idx
from .taxibj import TaxiBJ

__all__ = [
    "SPECS",
    "Cityscapes",
    "MovingMNIST",
    "NpySequences",
    "PredRNNClips",
    "SequenceFolder",
    "TaxiBJ",
    "build_dataset",
    "check_values",
    "load_mnist_idx",
    "render_digit",
    "render_digits",
    "split",
]
