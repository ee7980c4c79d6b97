"""pytest-benchmark: a training step of each public-cell model before and after patch.

    pytest benchmarks/test_patch_speed.py --benchmark-group-by=param:family

The side-by-side ratios are printed by ``python benchmarks/patch_speed.py``.
"""
import copy

import pytest
import torch
from patch_speed import FAMILIES, HW, B, T, train_step

import fastcells


@pytest.mark.parametrize("variant", ["original", "patched"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_train_step(benchmark, family, variant):
    factory, forward, channels = FAMILIES[family]
    torch.manual_seed(0)
    model = factory()
    if variant == "patched":
        model = copy.deepcopy(model)
        fastcells.patch(model, backend="cpp")
    benchmark.group = family
    fn = train_step(model, forward, torch.rand(B, T, channels, HW, HW))
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)
