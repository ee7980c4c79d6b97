"""CUDA-graph capture of whole sequences: argument checks here; the capture itself needs a
GPU (tests/test_gpu.py runs it there)."""
import pytest
import torch

import fastcells as fc
from fastcells.cuda_graphs import graph_sequence


def test_cpu_sample_is_refused():
    layer = fc.ConvLSTM(1, 4, backend="reference")
    with pytest.raises(ValueError, match="sample: CUDA graphs need a CUDA tensor"):
        graph_sequence(layer, torch.randn(1, 2, 1, 5, 5))
